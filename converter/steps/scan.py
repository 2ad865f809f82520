"""The per-layer sensitivity scan (paper Figure 6): prune one layer at a time, measure the metric.

Explicit `--levels` are each measured on every sample. Without them, a one-shot budgeted run (`--max-loss`, no
retraining) searches the default levels of each layer for its largest one within the budget (bisection,
measurements stopped once clear: calibration/sensitivity.py `_LevelSearch`); the `sensitivity` command and the
retraining search, which need whole curves, measure every default level.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxprune.converter.steps.base import RunState, Step, StepConfig, register_step
from onnxprune.errors import ConfigError


@dataclass
class ScanConfig(StepConfig):
    levels: tuple[float, ...] | None = None  # sparsities to scan (default: calibration.sensitivity.DEFAULT_LEVELS)

    def validate(self) -> None:
        if self.levels is not None and (not self.levels or any(not 0 < x < 1 for x in self.levels)):
            raise ConfigError(f"--levels {','.join(map(str, self.levels))}: every level must be a fraction in "
                              "(0, 1), e.g. 0.5,0.9,0.99.")


def scan(model, inventory, evaluator, config: ScanConfig, progress, *, neurons: bool = False, scoring=None,
         budget_pp: float | None = None, deadline: float | None = None):
    """Single weights ranked by the run's criterion (`scoring`; magnitude when None), or (`neurons`) whole neurons
    per channel group. With `budget_pp` and no explicit levels, each layer's default levels are searched for its
    largest one within what the run's decision rule can accept on this evaluator (converter.auto.decide `rule_ceilings`)."""
    from onnxprune.calibration.neuron_sensitivity import DEFAULT_NEURON_LEVELS, neuron_scan
    from onnxprune.calibration.sensitivity import DEFAULT_LEVELS
    from onnxprune.calibration.sensitivity import scan as sensitivity_scan

    run_scan, default = (neuron_scan, DEFAULT_NEURON_LEVELS) if neurons else (sensitivity_scan, DEFAULT_LEVELS)
    levels = tuple(config.levels) if config.levels else default
    extra = {} if neurons or scoring is None else {"scoring": scoring}
    if budget_pp is not None and not config.levels and not neurons:
        extra["budget_pp"] = budget_pp
        from onnxprune.converter.auto.decide import rule_ceilings

        extra["ceilings"] = rule_ceilings(evaluator, budget_pp)
    if deadline is not None and not neurons:  # layers whose turn comes after it stay dense (unscanned)
        extra["deadline"] = deadline
    return run_scan(model, inventory, evaluator, levels,
                    progress=lambda done, total, what="": progress("sensitivity scan", done, total, what), **extra)


FALLBACK_SCAN_SHARE = 0.8  # of the time before the reserve: the one-shot fallback's scan (only the fit follows it)


@register_step("scan")
class ScanStep(Step):
    """Scan each layer the budget allocates over, on the decision data."""

    main_only = True
    needs = ("original", "scannable", "data", "scoring")
    gives = ("sensitivity",)

    def __init__(self, config: ScanConfig, *, budget_pp: float | None = None, timed: bool = False):
        super().__init__(config)
        self.config = config
        self.budget_pp = budget_pp  # one-shot --max-loss: search each layer's levels up to the budget
        # --time-budget (the run's clock, state.clock: ClockStep, or the automatic plan's one-shot fallback): the
        # scan takes at most FALLBACK_SCAN_SHARE of the time before the reserve for the steps after it
        self.timed = timed

    def run(self, state: RunState) -> None:
        deadline = None
        if self.timed and state.clock is not None:
            start, end = state.clock.clock(), state.clock.search_deadline()
            deadline = start + FALLBACK_SCAN_SHARE * max(0.0, end - start)
        # the samples that choose: the deciding ones, unless the run chooses apart (steps/budget.ChooseApartStep)
        state.sensitivity = scan(state.original, state.scannable, state.data.chooser, self.config,
                                 state.progress, scoring=state.scoring, budget_pp=self.budget_pp,
                                 deadline=deadline)
        if self.timed:
            from onnxprune.converter.auto.search import unscanned_note

            note = unscanned_note(state.sensitivity, f"{FALLBACK_SCAN_SHARE:.0%} of --time-budget", "stay")
            if note:
                state.notes.append(note)


@register_step("clock")
class ClockStep(Step):
    """--one-shot with --time-budget: start the run's clock, so the scan takes at most its share of the budget (the
    layers whose turn comes after stay dense, said) and the fit starts no try past the time kept for verification
    and the steps after it, as in the automatic plan's one-shot fallback."""

    needs = ("data",)
    gives = ()

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = float(seconds)

    def settings(self) -> dict:
        return {"time_budget_s": self.seconds}

    def run(self, state: RunState) -> None:
        from onnxprune.converter.auto.timing import run_clock

        state.clock = run_clock(state, self.seconds)
        state.deadline = state.clock.deadline
