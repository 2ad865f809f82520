"""Magnitude (Han et al. 2015, the default): score = |w|. A small weight contributes little to any output."""

from __future__ import annotations

import numpy as np

from onnxprune.passes.criteria.base import ScoreContext, register_criterion


@register_criterion("magnitude")
def magnitude(ctx: ScoreContext) -> np.ndarray:
    """|w|: the paper's rule (no data)."""
    return np.abs(ctx.values.astype(np.float32, copy=False))
