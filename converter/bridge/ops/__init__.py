"""ONNX ops as tiny torch functions, looked up by (domain, op_type, opset).

One module per op family: ``core`` (registry, node context, shared helpers), ``elementwise``, ``nn``, ``shape``,
``resize``, ``reduce``, ``recurrent``, ``control_flow``, ``sequence``. Importing this package registers them all.

Each op is ``fn(inputs, attrs, ctx) -> Tensor | list[Tensor]``:
  * ``inputs``: the node's inputs in ONNX order, ``None`` for an omitted optional input ("" name);
    trailing omitted inputs may be missing from the list, so read them with ``_opt``;
  * ``attrs``: the node's attributes, parsed once at build time into ints, floats, str, lists and numpy
    arrays; parameter names and defaults are the ONNX spec's, written where they are read;
  * ``ctx``: a ``NodeContext`` (node name, opset, number of outputs, build-time constant inputs, run state).

An op that needs an input as plain numbers (Reshape's shape, Slice's starts, a Clip bound, ...) declares it
with ``static_inputs``. When that input is a constant, the module reads it once at build time into
``ctx.static``; otherwise the op takes it from the run-time tensor with ``.tolist()``, so int tensors computed
by Shape/Gather/Concat chains work. Shape arithmetic itself stays in int64 tensors.

Registering an op type again with a higher ``since_opset`` overrides it from that opset on: the lookup takes
the highest ``since_opset <= model opset``, as the ONNX spec does when semantics change (Softmax axis at 13,
Squeeze/Unsqueeze/ReduceSum axes as inputs at 13, the other reductions at 18, Split at 13, Clip bounds as
inputs at 11, Pad at 11, Resize at 11, Dropout ratio as input at 12, ...).

``check(attrs, ctx) -> str | None`` may reject attribute values we do not implement; the module reports those
nodes together with the unknown ops. ``fold=True`` lets the module evaluate a node once at build time when
all its inputs are constants (Constant).

Where the spec leaves room, the reference is onnxruntime (what the pruned model is deployed on): Slice's
INT64_MAX end with a negative step runs to the start, ConvTranspose auto_pad/output_shape pads follow its split,
Resize copies the input when no axis changes size and computes coordinates in its float32/float64 mix.
Known gaps: opset 8's Scan, a Loop with neither a trip count nor a condition, strings, quantized ops,
AveragePool dilations, RNN activations with alpha/beta, ScatterND reductions other than add, Attention's sliding window
(opset 25's left/right_window_size, refused by name; onnxruntime 1.31 does not know them); TopK ``sorted=0`` still
sorts; Resize nearest can pick the other pixel when the source coordinate lies within ~1e-6 of a rounding tie.
"""

from __future__ import annotations

from . import control_flow, elementwise, nn, recurrent, reduce, resize, sequence, shape  # noqa: F401  (registers the ops)
from .core import (CONTROL_FLOW_OPS, DEFAULT_DOMAIN, ONNX_TO_TORCH, TORCH_TO_ONNX, NodeContext, OpDef, OpFn,
                   OpResult, RunState, Tensor, lookup, normalize_domain, numpy_to_torch, parse_attributes, register,
                   sparse_to_dense, supported_ops, tensor_raw_bytes)
from .nn import default_dropout_ratio
from .resize import _source_coords  # noqa: F401  (tests check ONNX coordinates directly)

__all__ = ["CONTROL_FLOW_OPS", "DEFAULT_DOMAIN", "ONNX_TO_TORCH", "TORCH_TO_ONNX", "NodeContext", "OpDef", "OpFn",
           "OpResult", "RunState", "Tensor", "default_dropout_ratio", "lookup", "normalize_domain", "numpy_to_torch",
           "parse_attributes", "register", "sparse_to_dense", "supported_ops", "tensor_raw_bytes"]
