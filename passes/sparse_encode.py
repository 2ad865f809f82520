"""Sparse encoding: store pruned weights in the chosen storage format, where that makes the file smaller.

The formats (encoder and decoder side by side) live in passes/storage/: `constant` and `initializer` (COO
SparseTensorProto), `dense`, `compact` (smallest of relative indices / bitmask / dense, fp16 or codebook values when
exact, decoded by standard ops that onnxruntime folds at load). This is the very last step: onnx-graphsurgeon would
silently turn sparse tensors into zero-filled dense ones.
"""

from __future__ import annotations

import onnx

from onnxprune.passes.base import Pass, PassResult, PruneState, register_pass
from onnxprune.passes.storage import FORMATS
from onnxprune.passes.storage.coo import dense_to_sparse, pays_off, sparse_bytes  # noqa: F401  (public names)


@register_pass("sparse-encode")
class SparseEncode(Pass):
    """Re-home the given weights in a storage format.

    Rules:
      1. Only weights that get smaller; the rest stay dense.
      2. A format the model's opset/IR cannot hold keeps the weights dense, and a note says why.
      3. Weights that are also graph inputs (old IR) stay dense: a sparse tensor cannot be a graph input.
    """

    def __init__(self, names: list[str], fmt: str = "constant"):
        if fmt not in FORMATS:
            raise ValueError(f"sparse format '{fmt}' is not one of {tuple(FORMATS)}")
        self.names = names
        self.fmt = fmt

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        encoded = FORMATS[self.fmt].encode(model, self.names, state)
        return PassResult(model=model, modified=bool(encoded))
