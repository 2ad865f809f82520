"""onnxruntime's com.microsoft QuantizeLinear/DequantizeLinear read as the ai.onnx ones they equal.

onnxruntime's `quantize_static(..., extra_options={"UseQDQContribOps": True})` writes every Q/DQ pair in its own
domain (it needs them for 16-bit and 4-bit types below opset 21):

    W_q[int8] ─ com.microsoft.DequantizeLinear(scale, zero_point, axis) ─ MatMul
    after:      W_q[int8] ─ DequantizeLinear(scale, zero_point, axis) ─ MatMul         (ai.onnx, same inputs)

Both compute (x - zero_point) · scale (and saturate(round(x / scale) + zero_point)); onnxruntime runs them with the
same kernels. Every pass that reads quantized weights and every channel rule knows the standard op only, so such a
model's weights were all "behind a DequantizeLinear (quantized weight)" and the run refused it (sweep 32: an MLP
quantized by onnxruntime 1.32 with the option, "no prunable weights"; the same model without it: 4.79x).

Rules: a com.microsoft QuantizeLinear/DequantizeLinear (main graph and bodies) becomes the ai.onnx op when the
model's ai.onnx opset has that op for its integer type and layout: the type read from its zero point, or from the
dequantized initializer, which must be initializers (int8/uint8 and a bias's int32 from opset 10, a per-axis scale
from 13, int16, uint16, int4 and uint4 from 21) and its scale float32 (float16 from opset 19). The `axis` attribute
is dropped below opset 13, where the op has none (one scale: it reads nothing). Anything else stays as it was. The
written model holds the ai.onnx nodes.
"""

from __future__ import annotations

import logging

import onnx
from onnx import TensorProto, helper

from onnxprune.passes.base import Pass, PassResult, PruneState, register_pass
from onnxprune.passes.scopes import scopes
from onnxprune.passes.storage.graphs import default_opset

log = logging.getLogger(__name__)

OPS = ("QuantizeLinear", "DequantizeLinear")
# the integer type's first ai.onnx opset of QuantizeLinear/DequantizeLinear (int32: DequantizeLinear's, biases)
SINCE = {TensorProto.INT8: 10, TensorProto.UINT8: 10, TensorProto.INT32: 10, TensorProto.INT16: 21,
         TensorProto.UINT16: 21, TensorProto.INT4: 21, TensorProto.UINT4: 21}
PER_AXIS = 13  # the opset from which the ops take a per-axis scale and an `axis` attribute
SCALE_SINCE = {TensorProto.FLOAT: 10, TensorProto.FLOAT16: 19, TensorProto.BFLOAT16: 19}


def _integer_type(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> int | None:
    """The integer type a Q/DQ node works in: its zero point's, else (DequantizeLinear) its input initializer's;
    None when neither is an initializer."""
    zero = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zero is not None:
        return inits[zero].data_type if zero in inits else None
    if node.op_type == "DequantizeLinear" and node.input and node.input[0] in inits:
        return inits[node.input[0]].data_type
    return TensorProto.UINT8 if node.op_type == "QuantizeLinear" else None  # no zero point: uint8 output


def standard(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], opset: int) -> onnx.NodeProto | None:
    """The ai.onnx node a com.microsoft Q/DQ `node` equals at `opset`, or None (module docstring)."""
    if node.domain != "com.microsoft" or node.op_type not in OPS or len(node.input) < 2 or len(node.output) != 1:
        return None
    scale = inits.get(node.input[1])
    kind = _integer_type(node, inits)
    if scale is None or kind is None or opset < SINCE.get(kind, 10 ** 6) \
            or opset < SCALE_SINCE.get(scale.data_type, 10 ** 6):
        return None
    per_axis = len(scale.dims) > 0 and any(d != 1 for d in scale.dims)
    if per_axis and opset < PER_AXIS:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if set(attrs) - {"axis"}:
        return None
    if opset < PER_AXIS:
        attrs = {}
    return helper.make_node(node.op_type, list(node.input), list(node.output), name=node.name, **attrs)


@register_pass("contrib-qdq")
class ContribQDQ(Pass):
    """com.microsoft QuantizeLinear/DequantizeLinear nodes as the ai.onnx ops they equal, where the opset has them."""

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        opset = default_opset(model)
        inits = {t.name: t for sc in scopes(model.graph) for t in sc.graph.initializer}
        changed = 0
        for sc in scopes(model.graph):
            for k, node in enumerate(sc.graph.node):
                new = standard(node, inits, opset)
                if new is not None:
                    sc.graph.node[k].CopyFrom(new)
                    changed += 1
        if changed:
            log.debug("contrib-qdq: %d com.microsoft QuantizeLinear/DequantizeLinear node(s) read as ai.onnx's",
                      changed)
        return PassResult(model, changed > 0)
