"""Apply masks: zero the masked weights in the graph, in their own dtype (the late squash step).

    W (dense, trained)  x  mask (PruneState)  ->  W * mask, same name, dtype, shape and storage
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.passes.base import Pass, PassError, PassResult, PruneState, register_pass
from onnxprune.passes.weights import constant_tensors


@register_pass("apply-masks")
class ApplyMasks(Pass):
    """Zero every weight whose mask says drop.

    Rules:
      1. Works on initializers and on Constant nodes alike; the tensor keeps its name and dtype.
      2. A mask whose shape differs from its weight is an error, never a broadcast.
    """

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        tensors = constant_tensors(model)
        modified = False
        for name, mask in state.masks.items():
            if name not in tensors:
                raise PassError(f"apply-masks: weight '{name}' is not in the graph any more.")
            tensor = tensors[name]
            values = numpy_helper.to_array(tensor)
            if values.shape != mask.shape:
                raise PassError(f"apply-masks: mask of '{name}' has shape {mask.shape}, weight has {values.shape}.")
            if mask.all():
                continue
            zeroed = np.where(mask, values, np.zeros((), dtype=values.dtype)).astype(values.dtype)
            if not np.array_equal(zeroed, values):
                tensor.CopyFrom(numpy_helper.from_array(zeroed, tensor.name))
                modified = True
        return PassResult(model=model, modified=modified)
