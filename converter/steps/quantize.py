"""Fewer bits per surviving weight (Deep Compression's second stage): fp16, or an n-bit k-means codebook per layer
(passes.quantize), with the shared values fine-tuned when the plan retrains (converter.trained_quant).

  --weight-bits 16     every nonzero rounded to fp16
  --weight-bits n      an n-bit codebook per layer (n <= 8)
  --weight-bits auto   the smallest codebook width within the budget, by the rule below; when no width fits, fp16;
                       when fp16 does not fit either, the values as trained (said in the notes)

Trained quantization: when the plan retrains (--iterations, or the automatic search) the codebooks are fine-tuned
after the last prune round for --quant-epochs passes over the training part of --data (SGD, momentum 0.9, cosine
from --quant-lr, default the final round's learning rate); masks and codes never change.

The rule (auto), on the decision set: the validation part of --data (held out from all training) or --val-data,
never --eval-data. Each candidate is measured as it would be written: shrunk and encoded by the plan's own shrink and
encode steps, run in onnxruntime. Paired per sample against a reference,

    d_i = score_i(reference) - score_i(candidate),  L = 100·mean(d),  SE = 100·std(d)/sqrt(n)
    accepted when L <= Z·SE (B = 0), L + Z·SE <= B (B > 0)    (Z = 1: converter.auto.decide.BudgetRule)

where the reference and B are the model as trained (before quantization) and 0, or, with --max-loss, the dense input
model and the budget (then Z is the run's final check's: 1 after the automatic search, 0 after --iterations' budget
search, so a kept width is never refused at the end). With Z = 1 it tolerates a net loss of one standard error of
the paired difference: with accuracy, about sqrt(D)/n of the set for D samples on which the two models disagree
about correctness (D = 20 of 10,000: 4.5 images, 0.045 pp), the size of a re-run's noise; a strict "not worse by any
image" rule rejects a width for a difference of that size. Widths are tried by bisection over 1..8 (a wider
codebook is assumed never worse: at most 4 candidates instead of 8), each from the same trained model and seed.

The oracle itself takes the chosen values, so verification, the metrics and the budget check all see the final file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from onnxprune.converter.steps.base import RunState, Step, StepConfig, register_step
from onnxprune.converter.steps.encode import EncodeConfig
from onnxprune.converter.steps.prune import copy_model
from onnxprune.converter.steps.retrain import RetrainConfig
from onnxprune.converter.steps.shrink import ShrinkConfig
from onnxprune.errors import ConfigError
from onnxprune.passes.base import PruneState, run_passes
from onnxprune.passes.weights import constant_tensors
from onnxprune.plain import listed

log = logging.getLogger(__name__)
AUTO = "auto"
CODEBOOK_WIDTHS = (1, 2, 3, 4, 5, 6, 7, 8)
MAX_TRIES = (len(CODEBOOK_WIDTHS)).bit_length() + 1  # bisection's candidates, then fp16


@dataclass
class QuantizeConfig(StepConfig):
    weight_bits: int | str | None = None  # 16: fp16; 1..8: an n-bit codebook per layer; "auto"; None: as trained
    quant_epochs: float = 1.0  # passes over the training data fine-tuning the codebooks (when the plan retrains)
    quant_lr: float | None = None  # default: the last retraining round's learning rate

    def validate(self) -> None:
        from onnxprune.passes.quantize import BITS

        if isinstance(self.weight_bits, str) and self.weight_bits != AUTO:  # weight_bits="8" from the API was
            # "--weight-bits 8 is not one of 16, 8, 7, ..." (audit 40)
            raise ConfigError(f"--weight-bits {self.weight_bits!r} is text; a width is a number "
                              f"({', '.join(map(str, BITS))}), or '{AUTO}'.")
        if self.weight_bits is not None and self.weight_bits != AUTO and self.weight_bits not in BITS:
            raise ConfigError(f"--weight-bits {self.weight_bits} is not one of {', '.join(map(str, BITS))}, {AUTO}.")
        if self.quant_epochs < 0:
            raise ConfigError(f"--quant-epochs {self.quant_epochs} must be >= 0 (0: k-means codebooks, untrained).")
        if self.quant_lr is not None and self.quant_lr <= 0:
            raise ConfigError(f"--quant-lr {self.quant_lr} must be > 0.")


@register_step("quantize")
class QuantizeStep(Step):
    """Store the surviving weights in fewer bits (codebooks fine-tuned when retraining); the oracle takes them."""

    main_only = True
    needs = ("pruned", "inventory")
    gives = ("pruned",)

    def __init__(self, config: QuantizeConfig, retrain=None, budget=None, shrink=None, encode=None, *,
                 trained: bool = False):
        super().__init__(config)
        self.config, self.retrain, self.budget = config, retrain or RetrainConfig(), budget
        self.shrink, self.encode = shrink or ShrinkConfig(), encode or EncodeConfig()  # how the run writes its file
        self.trained = trained and config.quant_epochs > 0 and config.weight_bits not in (16, None)
        if self.trained or config.weight_bits == AUTO:
            self.needs = ("pruned", "inventory", "data", "original")

    def settings(self) -> dict:
        return {**self.config.as_dict(), "trained": self.trained}

    def check(self, state: RunState) -> None:
        integer = [w for w in state.quantized if not w.lowp]
        if integer:  # QDQ weights keep their own integer grid (passes/quantized_weights.py)
            raise ConfigError(f"--weight-bits {self.config.weight_bits}: this model's weights are already "
                              f"integer-quantized ({len(integer)} of them) and keep "
                              "their own grid when pruned; drop --weight-bits.")

    def run(self, state: RunState) -> None:
        from onnxprune.converter import distributed

        if self.trained and distributed.current().world_size > 1:  # this step runs on rank 0 alone
            self.trained = False
            state.notes.append("--weight-bits: codebooks not fine-tuned under torchrun (k-means only); run the "
                               "quantization in one process to train them.")
        if self.trained:
            self._untrained_where_the_bridge_cannot_run(state)
        present = set(constant_tensors(state.pruned))
        names = [w.name for w in state.inventory.prunable if w.name in present and w.name not in state.unread_rows]
        if state.unread_rows:  # a codebook would move the rows no sample reads, where nothing measures it
            state.notes.append(f"--weight-bits: {listed(repr(n) for n in state.unread_rows)} keep their float "
                               "values: rows of them no sample of --data reads would move on a codebook, unmeasured")
        widths = self.config.weight_bits
        if widths != AUTO:
            state.pruned = self._candidate(state, names, widths)
            if self.trained:
                state.notes.append(f"--weight-bits {widths}: codebooks fine-tuned for {self._train_note(state)}.")
            _record(state, widths, None, [])
            self._recheck_search(state)
            return
        rule = self._rule(state)
        why = rule.uncertifiable()
        if why:  # no width could be certified on this set: the values as trained (BudgetRule.uncertifiable)
            state.notes.append(f"--weight-bits auto kept the values as trained: {why}")
            _record(state, None, rule.statement(), [])
            self._recheck_search(state)
            return
        self._best, self._attempts, self._said = None, 0, {}
        chosen, tried = bisect(lambda b: self._judge(state, names, b, rule), CODEBOOK_WIDTHS)
        if chosen is None:
            fits, info = self._judge(state, names, 16, rule)
            tried.append(info)
            chosen = 16 if fits else None
        if chosen is not None:
            state.pruned = self._best
            state.notes.extend(self._said.get(chosen, []))  # the kept width's own lines, not every try's
        self._best, self._said = None, {}
        state.notes.append(_auto_note(chosen, tried, rule, self.trained and self._train_note(state)))
        _record(state, chosen, rule.statement(), tried)
        self._recheck_search(state)

    def _untrained_where_the_bridge_cannot_run(self, state: RunState) -> None:
        """Audit 39: `--max-loss 1 --weight-bits 4` on a scikit-learn pipeline, which the automatic search had refit
        layer by layer because the torch bridge lacks ArrayFeatureExtractor, ended in the bridge's multi-line refusal
        ("Skip fine-tuning for this model ..."), though nothing the user asked for needs torch: k-means codebooks
        alone, said."""
        from onnxprune.converter.auto.recovery import bridge_refusal

        try:
            import torch  # noqa: F401
        except ImportError:
            why = "torch is not installed"
        else:
            refused = bridge_refusal(state.original if state.original is not None else state.pruned)
            why = refused and f"the torch bridge cannot run this graph: {refused}"
        if why:
            self.trained = False
            state.notes.append(f"--weight-bits {self.config.weight_bits}: codebooks by k-means only, not fine-tuned "
                               f"({why})")

    # ---- one candidate
    def _candidate(self, state: RunState, names: list[str], bits: int):
        """The trained model with the named weights at `bits` (codebooks fine-tuned when the plan retrains)."""
        from onnxprune.passes.quantize import QuantizeWeights

        if not self.trained or bits == 16:
            model = copy_model(state.pruned)
            run_passes([QuantizeWeights(names, bits)], model, state.prune)
            return model
        from onnxprune.converter.trained_quant import trained_codebooks

        model, self._train_stats = trained_codebooks(state.pruned, names, bits, self._reader(state),
                                                     self._settings(state), teacher=state.original)
        return model

    def _judge(self, state: RunState, names: list[str], bits: int, rule) -> tuple[bool, dict]:
        """Is `bits` within the rule, measured on the file it would write? Keeps the model when it is (bisection
        tries narrower widths after a success, so the last one kept is the narrowest)."""
        before = len(state.notes)
        model = self._candidate(state, names, bits)
        self._said[bits] = state.notes[before:]  # "--weight-bits 4: 3 weight(s) quantized ...": said for the kept one
        del state.notes[before:]
        decision = rule.judge_outputs(list(rule.evaluator.run_all(self._as_written(state, model))))
        self._attempts += 1
        state.progress("quantize", self._attempts, MAX_TRIES, f"{bits} bits: loss {decision.loss_pp:.3f} pp")
        if decision.within:
            self._best = model
        return decision.within, {"bits": bits, **decision.as_dict(), "metric": rule.metric_of(decision)}

    def _as_written(self, state: RunState, model):
        """`model` through the plan's own shrink and encode steps: the file the run would write."""
        from onnxprune.converter.steps.encode import EncodeStep
        from onnxprune.converter.steps.shrink import ShrinkStep

        scratch = RunState(source=None, pruned=model, inventory=state.inventory, loaded=state.loaded,
                           config=state.config, prune=PruneState(masks=dict(state.prune.masks)))  # the run's format
        ShrinkStep(self.shrink).run(scratch)
        EncodeStep(self.encode).run(scratch)
        return scratch.final

    # ---- settings
    def _rule(self, state: RunState):
        """No budget: paired against the model as trained, 1 SE. A budget: against the dense model, with the margin
        the run's own final check uses (1 SE after the automatic search and after the one-shot fit, which both
        decide by the rule; none after --iterations' budget search, whose budget-check compares the plain loss), so
        a width kept here is never refused at the end."""
        from onnxprune.converter.auto.decide import current_z

        budget = self.budget.max_loss if self.budget is not None else None
        if budget is None:
            return PairedRule(state.data.calibration, 0.0, state.pruned, z=current_z())
        ruled = (state.auto or {}).get("decision") is not None or "rule" in (state.allocation or {})
        return PairedRule(state.data.calibration, budget, None, z=current_z() if ruled else 0.0)

    def _reader(self, state: RunState):
        return state.data.train_reader(batch_size=self._settings(state).batch_size)

    def _settings(self, state: RunState):
        from onnxprune.converter.trained_quant import TrainSettings

        r = self.retrain
        chosen = (state.auto or {}).get("choices", {})  # the automatic search's learned lr and batch size
        lr = (self.config.quant_lr or _value(chosen.get("lr")) or r.final_lr or r.lr)
        batch = int(_value(chosen.get("batch_size")) or r.train_batch_size)
        return TrainSettings(epochs=self.config.quant_epochs, lr=float(lr), batch_size=batch,
                             reg_strength=r.reg_strength if r.reg == "l2" else 0.0,
                             trainer_options=r.trainer_options(state.data.config.seed))

    def _train_note(self, state: RunState) -> str:
        s, stats = self._settings(state), getattr(self, "_train_stats", {})
        return (f"{s.epochs:g} epoch(s) ({stats.get('steps', 0)} steps of {s.batch_size}) at lr {s.lr:g}, "
                "cosine, gradients shared per centroid")

    def _recheck_search(self, state: RunState) -> None:
        """The automatic search decided on the model before quantization: decide again on the quantized one."""
        decision = (state.auto or {}).get("decision")
        if decision is None or self.budget is None or self.budget.max_loss is None:
            return
        from onnxprune.converter.auto.decide import BudgetRule

        rule = BudgetRule(state.data.calibration, self.budget.max_loss)
        state.auto["decision"] = rule.judge(self._as_written(state, state.pruned)).as_dict()
        state.auto["decision_before_quantization"] = decision


class PairedRule:
    """converter.auto.decide's rule over every scored output, against `reference` when given (the model before
    quantization) instead of the dense input model: a label metric is paired against the reference's per-sample
    scores (L <= Z·SE at B = 0, else L + Z·SE <= B); a fidelity metric (agreement, rel_l2, ... against the dense
    model) may lose no more than the reference itself loses (its own loss + the rule's margin for it, so the
    reference exactly passes)."""

    def __init__(self, evaluator, budget_pp: float, reference=None, *, z: float | None = None):
        from onnxprune.converter.auto.decide import BudgetRule

        self.evaluator, self.budget_pp = evaluator, budget_pp
        self._rule = BudgetRule(evaluator, budget_pp, z=z)
        self.against = "the dense input model" if reference is None else "the model before quantization"
        if reference is not None:
            values = self._rule.values(list(evaluator.run_all(reference)))
            for rule, v in zip(self._rule.outputs, values):
                if rule.form.paired:  # paired against the trained model's per-sample scores
                    rule.dense = v
                else:  # no more loss than the trained model has against the dense one (its loss + its margin)
                    rule.budget = 100.0  # a budget any set resolves: the margin the bound takes for this loss
                    own = rule.judge(v)
                    rule.budget = max(0.0, own["loss_pp"] + (100.0 - own["limit_pp"]))
        head = self._rule.outputs[0]
        self.reference_score = float(head.dense[:, 0].mean()) if head.form.paired else 1.0

    def judge_outputs(self, outputs):
        return self._rule.judge_outputs(outputs)

    def uncertifiable(self) -> str | None:
        """Why no width can be certified against the budget on this set (decide.BudgetRule.uncertifiable)."""
        return self._rule.uncertifiable()

    def metric_of(self, decision) -> float:
        """The candidate's mean score on the decision set."""
        return round(self.reference_score - decision.loss_pp / 100.0, 6)

    def statement(self) -> str:
        return (f"against {self.against}: " + self._rule.statement())


def bisect(fits, widths) -> tuple[int | None, list]:
    """The smallest width for which `fits(width)` holds, assuming that a wider one then fits too."""
    lo, hi, best, tried = 0, len(widths) - 1, None, []
    while lo <= hi:
        mid = (lo + hi) // 2
        ok, info = fits(widths[mid])
        tried.append(info)
        if ok:
            best, hi = widths[mid], mid - 1
        else:
            lo = mid + 1
    return best, tried


def _value(choice):
    return choice.get("value") if isinstance(choice, dict) else choice


def _record(state: RunState, chosen, rule: str | None, tried: list) -> None:
    state.quantize = {"weight_bits": chosen, "rule": rule, "tried": tried}


def _auto_note(chosen, tried: list, rule: "PairedRule", trained) -> str:
    steps = "; ".join(f"{t['bits']} bits {t['loss_pp']:+.3f} pp (limit {t['limit_pp']:.3f}) "
                      f"{'kept' if t['within'] else 'rejected'}" for t in tried)
    what = ("no width within the budget: values kept as trained" if chosen is None else
            "fp16 (no codebook width within the budget)" if chosen == 16 else f"{chosen}-bit codebooks")
    how = f", codebooks fine-tuned for {trained}" if trained else ""
    return f"--weight-bits auto chose {what}{how}; on the decision set against {rule.against}: {steps}."
