"""The accuracy budget (--max-loss): allocate per-layer sparsities from the scan, fit them by measuring
(one-shot), and check the final model against the budget."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from onnxprune.calibration.decide import within_budget
from onnxprune.converter.steps.base import RunState, Step, StepConfig, register_step
from onnxprune.errors import BudgetError, ConfigError
from onnxprune.passes.magnitude import Target

log = logging.getLogger(__name__)


@dataclass
class BudgetConfig(StepConfig):
    max_loss: float | None = None  # percentage points of the metric
    confidence: float | None = None  # one-sided confidence of the decision rule's bound; None: 1 SE (about 84%)
    # --max-loss OUTPUT=L: an output's own budget (pp of its own metric); the others keep max_loss. Each output's
    # loss then counts as a share of its own budget (calibration.metrics Evaluator.loss_factor)
    output_budgets: dict[str, float] | None = None

    def validate(self) -> None:
        if self.max_loss is not None and not 0 <= self.max_loss <= 100:
            raise ConfigError(f"--max-loss {self.max_loss:g} must be in percentage points, between 0 and 100.")
        for name, own in (self.output_budgets or {}).items():
            if not isinstance(own, (int, float)) or not 0 < own <= 100:
                shown = f"{own:g}" if isinstance(own, (int, float)) else repr(own)  # as typed: 0, not 0.0
                raise ConfigError(f"--max-loss {name}={shown} must be a number of percentage points in (0, 100].")
        if self.confidence is not None:
            from onnxprune.converter.auto.decide import confidence_z

            confidence_z(self.confidence)  # its one-line error when outside (0.5, 1)


class _Choose(Step):
    """Targets chosen from the scan on rank 0 (which alone scanned) and given to every process."""

    gives = ("targets", "allocation")

    def __init__(self, config: BudgetConfig):
        super().__init__(config)
        self.config = config

    def run(self, state: RunState) -> None:
        state.targets = on_main(self._choose, state)

    def _choose(self, state: RunState) -> dict:
        raise NotImplementedError


@register_step("allocate")
class AllocateStep(_Choose):
    """Per-layer sparsities from the scan within the budget: the starting point of the retraining search."""

    needs = ("sensitivity", "scannable", "targets")

    def _choose(self, state: RunState) -> dict:
        from onnxprune.calibration.allocate import allocate
        from onnxprune.converter.auto.decide import BudgetRule

        rule = BudgetRule(state.data.calibration, self.config.max_loss)  # the level search's judge (steps/retrain)
        why = rule.uncertifiable()
        if why:  # no round could be certified: the input model, said once, as the other budgeted plans keep it
            log.warning(why)
            state.notes.append(why)
            state.allocation = {"sparsities": {}, "rule": rule.statement(), "kept_input": True}
            return {n: Target(sparsity=0.0) for n in state.targets}
        allocation = allocate(state.sensitivity, state.scannable, self.config.max_loss)
        state.allocation = {"predicted_loss_pp": allocation.predicted_loss_pp, "sparsities": dict(allocation)}
        return _with_fixed({n: Target(sparsity=float(s)) for n, s in allocation.items()}, state.targets)


SPENT = "the time budget was spent backing off"  # a fit chosen apart: why its looks stopped short


@register_step("choose-apart")
class ChooseApartStep(Step):
    """--one-shot --max-loss with real --data: the scan and the fit choose on samples that do not decide. Beside
    --val-data they choose on --data and --val-data decides; else every k-th sample of --data chooses and the
    others decide (steps/data.choose_apart); too few to split: one set chooses and decides, as said."""

    needs = ("original", "data", "targets", "scoring")
    gives = ("data", "scoring")

    def __init__(self, config: BudgetConfig, criterion: str):
        super().__init__(config)
        self.config, self.criterion = config, criterion

    def run(self, state: RunState) -> None:
        from onnxprune.converter.steps.data import choose_apart

        data = state.data
        if data.config.val_data is None:
            apart = choose_apart(state.original, data, self.config.max_loss)
            if apart is None:
                return  # the fit's decision-rule note says that one set chose and decided
            data, (chose, decides) = apart
            note = (f"--one-shot: the scan and the fit chose on one sample in {data.every} of --data ({chose}) and "
                    f"the {decides} others decide, so that the samples that judge the result did not choose it")
        else:
            chose, decides = data.reader().num_samples, data.reader(data.config.val_data).num_samples
            note = (f"--one-shot: the scan and the fit chose on --data ({chose} samples) and --val-data ({decides}) "
                    "decides")
        data.chooses_apart = True
        from onnxprune.converter.criteria import calibration_scoring

        # a data-driven criterion's statistics from the samples that choose too (steps/targets.py read --data)
        if data is not state.data:
            state.scoring = calibration_scoring(self.criterion, data.train_reader(), seed=data.config.seed,
                                                last=state.unread_rows)
        state.data = data
        log.info(note)
        state.notes.append(note)


@register_step("fit-budget")
class FitBudgetStep(_Choose):
    """One-shot: measure the allocation with all layers pruned at once; back off (or grow) until it fits. "Fits" is
    the automatic search's decision rule (converter.auto.decide) on the calibration set: every scored output, the
    loss plus its standard error within the budget (Wilson's bound for changed samples), not the mean alone; and
    the mean itself within the budget (`_fits`)."""

    needs = ("original", "inventory", "sensitivity", "scannable", "targets", "data", "scoring")

    def __init__(self, config: BudgetConfig, *, timed: bool = False):
        super().__init__(config)
        self.timed = timed  # --time-budget (the run's clock, state.clock): no try starts past the reserve after it

    def _deadline(self, state: RunState) -> float | None:
        return state.clock.search_deadline() if self.timed and state.clock is not None else None

    def _choose(self, state: RunState) -> dict:
        from onnxprune.calibration.allocate import allocate, fit_to_budget
        from onnxprune.converter.auto.decide import BudgetRule

        rule = BudgetRule(state.data.calibration, self.config.max_loss)
        for warning in rule.warnings():
            log.warning(warning)
            state.notes.append(warning)
        why = rule.uncertifiable()
        if why:  # no candidate could be certified: the input model, said once
            log.warning(why)
            state.notes.append(why)
            zero = {w.name: 0.0 for w in state.scannable.prunable}
            targets = _with_fixed({n: Target(sparsity=0.0) for n in zero}, state.targets)
            state.allocation = {"sparsities": zero, "tries": 0, "history": [], "notes": [why],
                                "rule": rule.statement(),
                                # nothing pruned (no --layer of the user's prunes): the input model, the reference
                                "kept_input": all(not t.sparsity and t.quality is None for t in targets.values())}
            return targets

        if state.data.chooses_apart:
            return self._choose_apart(state, rule)
        allocation = allocate(state.sensitivity, state.scannable, self.config.max_loss)
        outcome = fit_to_budget(state.original, state.scannable, state.data.calibration, allocation,
                                self.config.max_loss, result=state.sensitivity, scoring=state.scoring,
                                deadline=self._deadline(state), judge=rule.fit_judge(),
                                ceilings=rule.point_ceilings())
        state.allocation = {"sparsities": outcome.sparsities, "qualities": outcome.qualities,
                            "measured_loss_pp": outcome.measured_loss_pp,
                            "predicted_loss_pp": outcome.predicted_loss_pp, "tries": outcome.tries,
                            "history": outcome.history, "notes": outcome.notes, "rule": rule.statement()}
        # feeds used as is are split a feed at a time and counted by their samples (steps/data.choose_apart)
        unit = ("samples in 2 feeds" if getattr(state.data.calibration.reader, "per_feed", False) else "samples")
        held = held_weights(state)
        state.allocation["chosen_by_judges"] = outcome.ratio_of(outcome.sparsities, held) > 1.0
        state.notes.append(f"decision rule: {rule.statement()}; the scan and the fit chose on these same samples, "
                           "so new data will likely show more (LeNet-300-100, 500 images: 0-2 of 500 changed claimed, "
                           f"0.54-1.22% of other images changed); given 64 {unit} or more, or --val-data, the run "
                           "decides on samples that did not choose")
        stop = _stop_note(outcome, rule, held)
        if stop:
            state.notes.append(stop)
        return _with_fixed({n: Target(sparsity=float(s)) for n, s in outcome.sparsities.items()}, state.targets)

    def _choose_apart(self, state: RunState, rule) -> dict:
        """The fit chosen on the choosing samples (`Data.chooser`: the scan's, by the rule at the budget there where
        that part can certify it, else by the mean) and decided on the others (`rule`): a fit they reject is judged
        again at BACK_OFF of its sparsities, the first within the rule kept; none: the input model. Chosen and
        judged on one set, --one-shot on an MNIST MLP's 500 images claimed 0-2 of 500 changed and changed 0.54-1.22%
        of other images at 1 pp (tests/corpus/RESULTS.md, "Session 29")."""
        from onnxprune.calibration.allocate import allocate, fit_to_budget
        from onnxprune.converter.auto.decide import BudgetRule
        from onnxprune.converter.auto.search import BACK_OFF

        budget, chooser = self.config.max_loss, state.data.chooser
        fit_rule = BudgetRule(chooser, budget, certifies=False)  # it chooses; the deciding part certifies
        fit_rule = None if fit_rule.uncertifiable() else fit_rule  # too few to: the mean chooses
        allocation = allocate(state.sensitivity, state.scannable, budget)
        deadline = self._deadline(state)
        outcome = fit_to_budget(state.original, state.scannable, chooser, allocation, budget,
                                result=state.sensitivity, scoring=state.scoring, deadline=deadline,
                                judge=fit_rule and fit_rule.fit_judge(), ceilings=fit_rule and fit_rule.point_ceilings())
        held = held_weights(state)
        chosen = outcome.ratio_of(outcome.sparsities, held)
        sparsities = {n: 0.0 for n in outcome.sparsities}  # none kept: the input model
        looks: list[dict] = []  # the deciding samples' verdicts, in turn
        spent = False  # the time budget ended the looks before one was within
        for share in ((1.0,) + tuple(BACK_OFF)) if any(outcome.sparsities.values()) else ():
            if share < 1.0 and deadline is not None and time.perf_counter() >= deadline:
                spent = True
                break
            tried = {n: share * float(v) for n, v in outcome.sparsities.items()}
            decision = rule.judge(_candidate(state, tried)).as_dict()
            looks.append({"share": share, "ratio": outcome.ratio_of(tried, held),
                          "within": _fits(decision, budget), "decision": decision})
            if looks[-1]["within"]:
                sparsities = tried
                break
        state.allocation = {"sparsities": sparsities, "qualities": outcome.qualities,
                            "measured_loss_pp": outcome.measured_loss_pp,
                            "predicted_loss_pp": outcome.predicted_loss_pp, "tries": outcome.tries,
                            "history": outcome.history, "notes": outcome.notes, "rule": rule.statement(),
                            "chosen_apart": {"every": state.data.every, "chosen_on": chooser.rows,
                                             "decided_on": rule.n,
                                             "fit_ratio": round(chosen, 4),
                                             "looks": [{k: x[k] for k in ("share", "ratio", "within")}
                                                       for x in looks] + ([SPENT] if spent else [])}}
        if not any(sparsities.values()) and not any(t.sparsity or t.quality is not None
                                                    for t in (state.targets or {}).values()):
            state.allocation["kept_input"] = True
        state.notes.append(f"decision rule: {rule.statement()}")  # choose-apart said on what the fit chose
        state.notes.append(_apart_note(chosen, looks, spent, rule, chooser.rows))
        if looks and looks[0]["within"]:  # kept as chosen: what held the fit back is on the samples that chose
            stop = _stop_note(outcome, fit_rule, held, f"the one-shot fit on the {chooser.rows} choosing "
                              "samples") if fit_rule is not None else None
            stop = stop and stop.replace("decision samples", "choosing samples")
        else:  # rejected: what the deciding samples rejected
            stop = _looks_stop_note(looks, rule)
        if stop:
            state.notes.append(stop)
        return _with_fixed({n: Target(sparsity=float(v)) for n, v in sparsities.items()}, state.targets)


def _candidate(state: RunState, sparsities: dict):
    """The model the prune step would write for these sparsities, with the user's --layer targets."""
    from onnxprune.converter.steps.prune import pruned_copy

    targets = _with_fixed({n: Target(sparsity=float(v)) for n, v in sparsities.items()}, state.targets)
    return pruned_copy(state.original, state.inventory, targets, state.scoring)


def _apart_note(chosen: float, looks: list[dict], spent: bool, rule, n_chose: int) -> str:
    """What the deciding samples made of the fit chosen apart: kept, backed off, or the input model kept."""
    if not looks:
        return f"the one-shot fit on the {n_chose} choosing samples pruned nothing"
    if looks[0]["within"]:
        return (f"the one-shot fit chose {chosen:.2f}x on the {n_chose} choosing samples and the {rule.n} deciding "
                "samples kept it")
    said = (f"the one-shot fit chose {chosen:.2f}x on the {n_chose} choosing samples, and the {rule.n} deciding "
            "samples rejected it")
    if looks[-1]["within"]:
        kept = looks[-1]
        return said + f"; backed off to {kept['share']:g} of its sparsities ({kept['ratio']:.2f}x), which they kept"
    tail = f"; {SPENT}" if spent else ""
    shares = ", ".join(f"{x['share']:g}" for x in looks[1:]) or "nothing"
    return (said + f"; backed off to {shares} of its sparsities, rejected too{tail}: the input model is kept (more "
            "--data chooses and decides better)")


def _looks_stop_note(looks: list, rule) -> str | None:
    """What stopped a fit chosen apart that the deciding samples rejected: the nearest rejected look past the one
    kept (auto.search.stop_note on their figures)."""
    from onnxprune.converter.auto.decide import worst_figures
    from onnxprune.converter.auto.search import stop_note

    tries = [{"ratio": x["ratio"], "kept": x["within"], "within": x["within"],
              "phase": "one-shot fit" if x["share"] == 1.0 else f"backed off to {x['share']:g}",
              "output": x["decision"].get("output"), "part": worst_figures(x["decision"]).get("part"),
              "loss_pp": x["decision"]["loss_pp"], "limit_pp": x["decision"]["limit_pp"]}
             for x in looks]
    return stop_note(tries, rule, "the one-shot fit")


def _fits(decision: dict, max_loss: float) -> bool:
    """The one-shot plan's verdict: the rule and the mean within the budget. For a positive budget the rule's upper
    bound implies the mean; with --max-loss 0 a label rule accepts a loss within one standard error of the paired
    difference ("no loss beyond the noise"), where this path always held the mean to the budget, and still does."""
    return bool(decision["within"]) and within_budget(decision["loss_pp"], max_loss)


def held_weights(state: RunState) -> int:
    """The prunable weights outside the budget's reach (read only by an If branch no sample took, a table whose
    rows the data does not all read, --exclude), kept as they are: the summary counts them, so a ratio said about a
    candidate does too (sweep 20: "the result's 1.51x" beside a summary's 1.00x)."""
    searched = {w.name for w in state.scannable.prunable}
    return sum(w.size for w in state.inventory.prunable if w.name not in searched)


def _stop_note(outcome, rule, held: int = 0, what: str = "the one-shot fit") -> str | None:
    """What held the one-shot fit back (auto.search.stop_note over its tries: the chosen one kept, the rest not).
    `held`: the prunable weights the fit was not given (`held_weights`), in every ratio as the summary counts."""
    from onnxprune.converter.auto.decide import worst_figures
    from onnxprune.converter.auto.search import stop_note

    past = [t for t in outcome.history if not t["fits"] and t["removed"] > outcome.removed]
    if past and not min(past, key=lambda t: t["removed"]).get("decision"):
        return None  # the nearest rejection stopped early and had no time left to be measured in full: no figures
    tries = [{"ratio": outcome.ratio_of(t["sparsities"], held), "kept": t["removed"] == outcome.removed and t["fits"],
              "within": t["fits"], "phase": "one-shot fit", "output": t["decision"].get("output"),
              "part": worst_figures(t["decision"]).get("part"),
              "loss_pp": t["decision"]["loss_pp"], "limit_pp": t["decision"]["limit_pp"]}
             for t in outcome.history if t.get("decision")]
    return stop_note(tries, rule, what)


def on_main(choose, state: RunState) -> dict:
    """Targets chosen on rank 0 (which alone scanned) and given to every torchrun process with the allocation the
    choice recorded (rank 1 had none: `--max-loss --iterations` under torchrun failed with "step 'allocate' did not
    give allocation"); alone: just chosen."""
    from onnxprune.converter import distributed

    def chosen():
        return choose(state), state.allocation

    targets, state.allocation = distributed.current().on_main(chosen, encode=distributed.encode_targets,
                                                              decode=distributed.decode_targets)
    return targets


def _with_fixed(allocated: dict, fixed: dict | None) -> dict:
    """The user's --layer choices win over the allocation."""
    allocated.update(fixed or {})
    return allocated


@register_step("budget-check")
class BudgetCheckStep(Step):
    """Is the final model's measured loss within --max-loss? (Recorded in the report; the writer refuses if not.)"""

    main_only = True
    needs = ("report",)
    gives = ("report",)

    def __init__(self, config: BudgetConfig):
        super().__init__(config)
        self.config = config

    def run(self, state: RunState) -> None:
        report = state.report
        if "metrics" not in report:
            return
        measured = report["metrics"]["sets"]["calibration"]["loss_pp"]
        report["budget"] = {"max_loss_pp": self.config.max_loss, "measured_loss_pp": measured,
                            "met": within_budget(measured, self.config.max_loss)}
        own = getattr(state.data, "output_budgets", None) or self.config.output_budgets  # and a decoder's, derived
        if own:  # the loss above is each output's as a share of its own budget
            report["budget"]["by_output"] = dict(own)
        from onnxprune.converter.auto.decide import BudgetRule, tightest_output, worst_figures

        decision, rule = (state.auto or {}).get("decision"), (state.auto or {}).get("rule")
        kept_input = input_kept(state)  # the reference itself, within any budget (nothing to certify)
        if decision is None and (not kept_input or "rule" in (state.allocation or {})):
            # the one-shot fit and the level search chose by the rule, a recipe's choices are judged by it: the
            # model written (with any --layer the user fixed) is judged by the rule (a newcomer audit read "met" at
            # 0.33 pp by the mean on 300 samples, where --eval-data lost 1.40 pp)
            budget_rule = BudgetRule(state.data.calibration, self.config.max_loss)
            decision = (budget_rule.judge(state.final) if state.final_outputs is None  # else the measure pass
                        else budget_rule.judge_outputs(state.final_outputs)).as_dict()
            decision["within"] = kept_input or _fits(decision, self.config.max_loss)
            rule = (state.allocation or {}).get("rule") or budget_rule.statement()
            report["budget"]["decision"] = decision
        if decision is not None:  # decided by the stated rule on this set (converter.auto.decide)
            report["budget"].update(met=bool(decision["within"]), decision_loss_pp=decision["loss_pp"],
                                    limit_pp=decision["limit_pp"], rule=rule)
            if kept_input:
                report["budget"]["kept_input"] = True
            elif (state.auto or state.allocation or {}).get("chosen_by_judges"):
                report["budget"]["chosen_by_judges"] = True  # the budget line says so (inspect.print_prune_summary)
            name = tightest_output(decision, self.config.max_loss)  # not the largest loss: the nearest limit
            worst = (decision.get("outputs") or {}).get(name) or worst_figures(decision)
            if worst:  # the part of the rule closest to (or over) its limit, for the budget line
                report["budget"]["tightest"] = {"output": name or decision["output"], "n": decision.get("n"),
                                                **{k: worst.get(k) for k in ("metric", "part", "loss_pp", "limit_pp",
                                                                             "changed", "budget_pp")
                                                   if k in worst}}
        note = _eval_over_budget(report, self.config.max_loss, state)
        if note:
            report["notes"].append(note)


def input_kept(state) -> bool:
    """The search or the fit kept the input model (no candidate could be certified, or none was within the budget)
    and --weight-bits did not quantize it: its weights are the input's, its outputs the reference's."""
    return bool((state.auto or state.allocation or {}).get("kept_input")) and not state.quantize


def _eval_over_budget(report: dict, budget: float, state) -> str | None:
    """A note when --eval-data lost more than the budget the decision set met (newcomer audit: "87.40% -> 86.20%
    (loss +1.20 pp)" on the eval set beside "budget: ... met"): which figure is which, and what to do."""
    ev = report["metrics"]["sets"].get("evaluation")
    b = report.get("budget") or {}
    if ev is None or not b.get("met") or not ev["loss_pp"] > budget + 1e-9:
        return None
    n = getattr(getattr(state.data, "evaluation", None), "num_samples", None)
    size = f" ({n:,} samples: one sample = {100.0 / n:.2g} pp)" if n else ""
    decided = b.get("decision_loss_pp", b.get("measured_loss_pp"))
    return (f"on --eval-data{size} the {ev['metric']} loss is {ev['loss_pp']:.2f} pp, over --max-loss {budget:g}; "
            f"the budget was decided on the calibration data ({decided:.2f} pp there): the two sets disagree, "
            "by their noise or because they differ; to hold the budget on the data that matters, pass it as "
            "--val-data (decisions are made on it)")


def budget_error(report: dict) -> BudgetError | None:
    """The missed budget's error, or None; once the model was written (--force: `report["output"]`) it says so
    (a CI user read "nothing written" beside "wrote X")."""
    budget = report.get("budget")
    if budget and not budget["met"]:
        missed = f"measured loss {budget['measured_loss_pp']:.3f} pp exceeds --max-loss {budget['max_loss_pp']:g}"
        t = budget.get("tightest") or {}
        if budget["measured_loss_pp"] <= budget["max_loss_pp"] and t.get("loss_pp") is not None \
                and t.get("limit_pp") is not None:  # the mean is within; the rule's margin is not (a helper read
            # "measured loss 0.850 pp exceeds --max-loss 1" after --weight-bits 4)
            from onnxprune.converter.auto.report import part_figure

            own = t.get("budget_pp", budget["max_loss_pp"])
            missed = (f"the decision rule's bound is over --max-loss {budget['max_loss_pp']:g} on output "
                      f"'{t['output']}' ({t['metric']}: {part_figure(t, t['metric'], t.get('n'), own)}; the "
                      f"measured loss {budget['measured_loss_pp']:.3f} pp plus the margin the rule adds on "
                      f"{t.get('n')} decision samples)")
        written = report.get("output")
        said = (f"written anyway to '{written}' (--force); the exit code says the budget was missed." if written
                else "nothing written (pass --force to write it anyway, or raise --max-loss).")
        return BudgetError(f"{missed}; {said}", loss_pp=budget["measured_loss_pp"], max_loss_pp=budget["max_loss_pp"],
                           outputs=missed_outputs(report), written=written, report=report)
    return None


def missed_outputs(report: dict) -> tuple[str, ...]:
    """The scored outputs that missed their budget: by the decision rule's verdict where the report holds it, else
    by each one's measured loss against its own budget (--max-loss OUTPUT=L) or the run's; else (the rule's margin
    missed, every mean within) the tightest output."""
    budget, measured = report["budget"], report.get("metrics", {}).get("sets", {}).get("calibration", {})
    verdicts = (budget.get("decision") or {}).get("outputs") or {}
    missed = [name for name, f in verdicts.items() if not f.get("within", True)]
    own = budget.get("by_output") or {}
    missed = missed or [name for name, f in (measured.get("outputs") or {}).items() if f.get("loss_pp") is not None
                        and not within_budget(f["loss_pp"], own.get(name, budget["max_loss_pp"]))]
    worst = (budget.get("tightest") or {}).get("output") or measured.get("headline")
    return tuple(missed or ([worst] if worst else []))
