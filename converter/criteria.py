"""The run's saliency criterion (--criterion), wired to its calibration statistics: one Scoring every path reads.

    scoring = calibration_scoring("wanda", reader)     # magnitude | wanda | obd | taylor (passes.criteria)
    MagnitudePrune(inventory, targets, scoring)         # one-shot;  also: schedule.iterative_prune(scoring=…),
                                                        # budget.BudgetSearch(scoring=…), sensitivity.scan(scoring=…),
                                                        # allocate.fit_to_budget(scoring=…)

Torch is imported only when a criterion asks for gradients (obd, taylor): magnitude and wanda runs need none.
"""

from __future__ import annotations

from onnxprune.calibration.statistics import STATS_SAMPLES, CalibrationStats
from onnxprune.passes.criteria import Scoring, get_criterion


def gradient_statistics(*args, **kwargs):
    """converter.gradients.gradient_statistics, imported on first use (it needs torch)."""
    from onnxprune.converter.gradients import gradient_statistics as compute

    return compute(*args, **kwargs)


def calibration_scoring(criterion: str, reader=None, *, max_samples: int = STATS_SAMPLES, seed: int = 0,
                        last: dict | None = None) -> Scoring:
    """`criterion` with its statistics taken on `reader` (a DataReader; None or magnitude: no statistics); `last`:
    the run's `RunState.unread_rows` (`Scoring.last`)."""
    if not get_criterion(criterion).needs_data or reader is None:
        return Scoring(criterion, last=last or {})
    return Scoring(criterion, stats_for=lambda model: CalibrationStats(
        model, reader, gradients=gradient_statistics, max_samples=max_samples, seed=seed), last=last or {})
