"""Optimal Brain Damage (LeCun, Denker, Solla 1989): the loss increase of deleting w_k, to second order at a minimum,

    s_k = ½ · h_kk · w_k²

with the Hessian diagonal h_kk taken as the empirical Fisher: the mean of squared per-sample gradients of the loss
on calibration data (`calibration.statistics`, gradients through the torch bridge). With labels the loss is
cross-entropy; without, the Fisher of the dense model's own predictive distribution (targets sampled from its
softmax; Rademacher-signed outputs for non-classifier outputs), which is the exact Hessian of the distillation loss
at the dense model (the plain distillation gradient is zero there).
"""

from __future__ import annotations

import numpy as np

from onnxprune.passes.criteria.base import ScoreContext, register_criterion


@register_criterion("obd", needs_data=True)
def obd(ctx: ScoreContext) -> np.ndarray:
    """½·h_kk·w_k², h_kk from the empirical Fisher on calibration data (torch bridge)."""
    h = np.asarray(ctx.stats.fisher(ctx.weight), dtype=np.float64)
    return 0.5 * h * np.square(ctx.values.astype(np.float64))
