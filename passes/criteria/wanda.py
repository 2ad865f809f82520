"""Wanda (Sun, Liu, Bair, Kolter 2024, "A Simple and Effective Pruning Approach for LLMs"):

    S_ij = |W_ij| · ‖X_j‖₂

X_j is the op's input feature j over all calibration samples (for a Conv: input channel c over samples and
spatial positions, the same norm for every kernel tap of that channel). Ranked within each output row (the paper's
comparison group), so every output keeps the same share of its inputs. The norms come from onnxruntime
(`calibration.statistics`), no gradient:

    x [N, 784] --Gemm W[300, 784]-->        ‖X_j‖ over N, broadcast along W's input axis
"""

from __future__ import annotations

import numpy as np

from onnxprune.passes.criteria.base import MissingStatistics, ScoreContext, register_criterion


@register_criterion("wanda", needs_data=True, group="row")
def wanda(ctx: ScoreContext) -> np.ndarray:
    """|W_ij|·‖X_j‖₂, per output row (calibration data, onnxruntime only)."""
    w = ctx.weight
    if w.in_axis is None:
        raise MissingStatistics(f"--criterion wanda: the input axis of weight '{w.name}' ({w.op_type} '{w.node}') is "
                                "not known (reached through a Reshape)", f"{w.op_type} '{w.node}'")
    norms = np.asarray(ctx.stats.input_norms(w), dtype=np.float64)
    if norms.ndim != ctx.values.ndim:  # one norm per input feature: laid along the weight's input axis
        shape = [1] * ctx.values.ndim
        shape[w.in_axis] = -1
        norms = norms.reshape(shape)
    return np.abs(ctx.values.astype(np.float64)) * norms  # (a grouped Conv's norms come per output already)
