"""The one budget decision: is a measured loss within the budget?

The point estimate: the budgeted retraining of a hand recipe (converter.budget), the sensitivity scan's per-layer
bisection (a prediction, measured again later) and, without a judge, the one-shot fit (calibration.allocate). The
automatic search and the one-shot budget plan decide by the statistical rule built on it (converter.auto.decide:
the loss plus its sampling margin). Losses are in percentage points of the run's metric, positive = worse than the
dense model.
"""

from __future__ import annotations

TOLERANCE_PP = 1e-9  # floating point: 99.9 - 99.4 is 0.50000000000001


def within_budget(loss_pp: float, max_loss_pp: float) -> bool:
    return loss_pp <= max_loss_pp + TOLERANCE_PP
