"""The one budget decision: is a measured loss within the budget?

Every path that keeps or rejects a candidate asks this function: the one-shot fit (calibration.allocate), the
retraining search (converter.budget) and the final check of a run (converter.steps.budget). Losses are in
percentage points of the run's metric, positive = worse than the dense model.
"""

from __future__ import annotations

TOLERANCE_PP = 1e-9  # floating point: 99.9 - 99.4 is 0.50000000000001


def within_budget(loss_pp: float, max_loss_pp: float) -> bool:
    return loss_pp <= max_loss_pp + TOLERANCE_PP
