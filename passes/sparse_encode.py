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
from onnxprune.passes.scopes import constant_homes
from onnxprune.passes.storage.coo import dense_to_sparse, encode_in_bodies, pays_off, sparse_bytes  # noqa: F401


@register_pass("sparse-encode")
class SparseEncode(Pass):
    """Re-home the given weights in a storage format.

    Rules:
      1. Only weights that get smaller; the rest stay dense.
      2. A format the model's opset/IR cannot hold keeps the weights dense, and a note says why.
      3. Weights that are also graph inputs (old IR) stay dense: a sparse tensor cannot be a graph input.
      4. A weight that lives in an If/Loop/Scan body (its Constant node or a body initializer) is re-homed in
         that body, always as a COO Constant node there (any format but dense); an outer-scope weight the bodies
         read is encoded in the main graph like any other.
    """

    def __init__(self, names: list[str], fmt: str = "constant"):
        if fmt not in FORMATS:
            raise ValueError(f"sparse format '{fmt}' is not one of {tuple(FORMATS)}")
        self.names = names
        self.fmt = fmt

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        homes = constant_homes(model)
        in_bodies = [n for n in self.names if homes[n][0] is not model.graph]
        main = [n for n in self.names if homes[n][0] is model.graph]
        encoded = FORMATS[self.fmt].encode(model, main, state) if main else []
        if in_bodies and self.fmt != "dense":
            encoded += encode_in_bodies(model, in_bodies, state)
        return PassResult(model=model, modified=bool(encoded))
