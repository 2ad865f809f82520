"""First-order Taylor (Molchanov, Tyree, Karras, Aila, Kautz 2017): the loss change of zeroing w, to first order,

    s = mean over calibration batches b of |w · ∂L_b/∂w|

the absolute value taken per batch (as in the paper), so opposite signs in different batches do not cancel. With
labels L is cross-entropy. Label-free, the distillation loss against the dense model has zero gradient at the
dense model, so L_b uses targets sampled from the dense model's softmax (Rademacher-signed outputs for
non-classifier outputs): each batch's gradient is then nonzero, and its size says how much the weight moves the
outputs (see `calibration.statistics`).
"""

from __future__ import annotations

import numpy as np

from onnxprune.passes.criteria.base import ScoreContext, register_criterion


@register_criterion("taylor", needs_data=True)
def taylor(ctx: ScoreContext) -> np.ndarray:
    """mean_b |w·∂L_b/∂w| over calibration batches (torch bridge)."""
    return np.asarray(ctx.stats.taylor(ctx.weight), dtype=np.float64)
