"""QOperator layers become the QDQ form of the same computation (before anything is measured).

onnxruntime's `quantize_static` with QuantFormat.QOperator (and the int8 models of the ONNX model zoo) writes each
quantized layer as one integer op whose weight is an int8/uint8 initializer:

    QLinearConv(x_q, x_s, x_zp, W_q, w_s, w_zp, y_s, y_zp, B_int32)                       ai.onnx
    QLinearMatMul(a_q, a_s, a_zp, B_q, b_s, b_zp, y_s, y_zp)                               ai.onnx
    QGemm(a_q, a_s, a_zp, B_q, b_s, b_zp, C_int32, y_s, y_zp; alpha, transA, transB)       com.microsoft

No pass could read those weights ("dequantize to float, prune, requantize: not supported", sweep 18 and 29). Each
becomes the QDQ layer it equals, which passes/quantized_weights.py already folds to float, prunes and writes back on
the weight's own grid:

    x_q ─ DequantizeLinear(x_s, x_zp) ─┐
    W_q ─ DequantizeLinear(w_s, w_zp, axis) ─ Conv / MatMul / Gemm ─ QuantizeLinear(y_s, y_zp) ─ y_q
    B_int32 ─ DequantizeLinear(x_s · w_s, 0, axis) ─┘

ONNX defines the integer ops as exactly this (products accumulated exactly, one requantization at the end), and
onnxruntime fuses a DequantizeLinear -> Conv/MatMul/Gemm -> QuantizeLinear group of this shape back into its integer
kernel when it builds a session, so the written model runs as the input did. A QGemm without y_s has a float output
(no QuantizeLinear). Its bias C is quantized at a_s · b_s (onnxruntime's quantizer writes it so, with alpha 1).

onnxruntime's QOperator activations (com.microsoft QLinearAdd, QLinearMul, QLinearConcat, QLinearLeakyRelu,
QLinearSigmoid, QLinearAveragePool, QLinearGlobalAveragePool; ACTIVATIONS) become DequantizeLinear of each operand ->
the float op -> QuantizeLinear the same way, so the model is standard ops and Q/DQ pairs: the channel analysis, the
torch bridge and dead-neuron removal pass through them. onnxruntime fuses these groups back into the same integer
kernels (0 difference); run op by op without its optimizer they can differ by one step of the output's grid (their
integer kernels round through lookup tables), which the run's reference, the input model as given, counts.

Rules: a main-graph node whose weight, its scale and zero point, the input's scale and any bias are initializers
(the bias scale x_s · w_s is computed here, one float per channel); transA, a QGemm with alpha other than 1 and a
bias, and a weight read by other nodes too are left as they are (the inventory then names them as before).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.passes.base import Pass, PassResult, PruneState, register_pass

log = logging.getLogger(__name__)

# op -> (weight input, bias input or None, output scale input); the weight's scale and zero point follow the weight
LAYERS = {("", "QLinearConv"): (3, 8, 6), ("", "QLinearMatMul"): (3, None, 6), ("com.microsoft", "QGemm"): (3, 6, 7)}


def _domain(node: onnx.NodeProto) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _input(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _weight_axis(node: onnx.NodeProto, scale: np.ndarray) -> int | None:
    """The weight's axis a per-channel scale runs along (its output channels), None for one scale."""
    if scale.size <= 1:
        return None
    if node.op_type == "QLinearConv":
        return 0
    if node.op_type == "QGemm":
        return 0 if _attrs(node).get("transB", 0) else 1
    return 1  # QLinearMatMul: B [K, N], one scale a column


def convertible(node: onnx.NodeProto, inits: dict, readers: dict, opset: int = 13) -> bool:
    spec = LAYERS.get((_domain(node), node.op_type))
    if spec is None:
        return False
    w, bias, _ = spec
    needed = [_input(node, w), _input(node, w + 1), _input(node, 1)]
    needed += [_input(node, w + 2)] if _input(node, w + 2) else []
    if bias is not None and _input(node, bias):
        needed.append(_input(node, bias))
    if not all(n in inits for n in needed) or readers.get(_input(node, w), 0) != 1:
        return False
    if node.op_type == "QGemm":
        a = _attrs(node)
        if a.get("transA", 0) or (a.get("alpha", 1.0) != 1.0 and _input(node, 6)):
            return False
    if inits[_input(node, w)].data_type not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
        return False
    # a per-channel scale needs DequantizeLinear's axis (opset 13); the model's opset is not raised for it (other
    # ops' meaning changes at 13: Softmax's axis, Squeeze's axes)
    return opset >= 13 or int(np.prod(inits[_input(node, w + 1)].dims)) <= 1


def _given(names: list[str]) -> list[str]:
    """Inputs without the absent ones at the end (an absent zero point: the op's default, 0)."""
    while names and not names[-1]:
        names = names[:-1]
    return names


def _dq(name: str, inputs: list[str], output: str, axis: int | None) -> onnx.NodeProto:
    return helper.make_node("DequantizeLinear", _given(inputs), [output], name=name,
                            **({"axis": axis} if axis is not None else {}))


def to_qdq(node: onnx.NodeProto, inits: dict, added: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    """The QDQ nodes that compute what `node` computes (module docstring); new initializers go to `added`."""
    w, bias, y_scale = LAYERS[(_domain(node), node.op_type)]
    base = node.name or node.output[0]
    x_f, w_f, y_f = f"{base}/x_dq", f"{base}/w_dq", f"{base}/y_float"
    w_scale = numpy_helper.to_array(inits[_input(node, w + 1)])
    axis = _weight_axis(node, w_scale)
    nodes = [_dq(f"{base}/DequantizeLinear_x", [_input(node, 0), _input(node, 1), _input(node, 2)], x_f, None),
             _dq(f"{base}/DequantizeLinear_w", [_input(node, w), _input(node, w + 1), _input(node, w + 2)], w_f,
                 axis)]
    operands = [x_f, w_f]
    if bias is not None and _input(node, bias):
        x_scale = numpy_helper.to_array(inits[_input(node, 1)]).astype(np.float32)
        b_scale = numpy_helper.from_array((x_scale * w_scale).astype(np.float32).reshape(w_scale.shape),
                                          f"{base}/bias_scale")
        added.append(b_scale)
        b_f = f"{base}/b_dq"
        nodes.append(_dq(f"{base}/DequantizeLinear_b", [_input(node, bias), b_scale.name], b_f,
                         0 if axis is not None else None))
        operands.append(b_f)
    attrs = _attrs(node)
    has_y = bool(_input(node, y_scale))
    out = y_f if has_y else node.output[0]
    if node.op_type == "QLinearConv":
        nodes.append(helper.make_node("Conv", operands, [out], name=f"{base}/Conv", **attrs))
    elif node.op_type == "QLinearMatMul":
        nodes.append(helper.make_node("MatMul", operands, [out], name=f"{base}/MatMul"))
    else:
        nodes.append(helper.make_node("Gemm", operands, [out], name=f"{base}/Gemm",
                                      **{k: v for k, v in attrs.items() if k in ("alpha", "transB")}))
    if has_y:
        q = _given([y_f, _input(node, y_scale), _input(node, y_scale + 1)])
        nodes.append(helper.make_node("QuantizeLinear", q, [node.output[0]], name=f"{base}/QuantizeLinear_y"))
    return nodes


# onnxruntime's QOperator activations (com.microsoft): op -> (the float op, how its quantized operands are laid out).
# "unary": X, x_s, x_zp, y_s, y_zp; "binary": A, a_s, a_zp, B, b_s, b_zp, c_s, c_zp; "concat": y_s, y_zp, then
# (X, x_s, x_zp) per operand. Read as DequantizeLinear of each operand -> the float op -> QuantizeLinear, they leave a
# model of standard ops that the channel analysis, the torch bridge and dead-neuron removal pass through.
ACTIVATIONS = {"QLinearAdd": ("Add", "binary"), "QLinearMul": ("Mul", "binary"),
               "QLinearLeakyRelu": ("LeakyRelu", "unary"), "QLinearSigmoid": ("Sigmoid", "unary"),
               "QLinearAveragePool": ("AveragePool", "unary"), "QLinearGlobalAveragePool": ("GlobalAveragePool", "unary"),
               "QLinearConcat": ("Concat", "concat")}


def _activation_operands(node: onnx.NodeProto) -> tuple[list[tuple[str, str, str]], tuple[str, str]] | None:
    """((X, scale, zero point) per operand, (y scale, y zero point)) of a QOperator activation, or None."""
    op, layout = ACTIVATIONS[node.op_type]
    ins = list(node.input)
    if layout == "unary" and len(ins) >= 4:
        return [(ins[0], ins[1], _input(node, 2))], (ins[3], _input(node, 4))
    if layout == "binary" and len(ins) >= 7:
        return [(ins[0], ins[1], ins[2]), (ins[3], ins[4], ins[5])], (ins[6], _input(node, 7))
    if layout == "concat" and len(ins) >= 5 and (len(ins) - 2) % 3 == 0:
        return [tuple(ins[k:k + 3]) for k in range(2, len(ins), 3)], (ins[0], ins[1])
    return None


def activation_convertible(node: onnx.NodeProto) -> bool:
    if node.domain != "com.microsoft" or node.op_type not in ACTIVATIONS or _activation_operands(node) is None:
        return False
    attrs = _attrs(node)
    return not attrs.get("channels_last", 0)  # NHWC pools: no standard op reads that layout


def activation_to_qdq(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    op, _ = ACTIVATIONS[node.op_type]
    operands, (y_s, y_zp) = _activation_operands(node)
    base = node.name or node.output[0]
    nodes, floats = [], []
    for k, (x, x_s, x_zp) in enumerate(operands):
        floats.append(f"{base}/in{k}_dq")
        nodes.append(_dq(f"{base}/DequantizeLinear_{k}", [x, x_s, x_zp], floats[-1], None))
    attrs = {k: v for k, v in _attrs(node).items() if k != "channels_last"}
    nodes.append(helper.make_node(op, floats, [f"{base}/y_float"], name=f"{base}/{op}", **attrs))
    nodes.append(helper.make_node("QuantizeLinear", _given([f"{base}/y_float", y_s, y_zp]), [node.output[0]],
                                  name=f"{base}/QuantizeLinear_y"))
    return nodes


@register_pass("qoperator-to-qdq")
class QOperatorToQDQ(Pass):
    """Rewrite each convertible QLinearConv/QLinearMatMul/QGemm as its QDQ form (module docstring)."""

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        graph = model.graph
        inits = {t.name: t for t in graph.initializer}
        readers: dict[str, int] = {}
        for n in graph.node:
            for name in n.input:
                readers[name] = readers.get(name, 0) + 1
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        layers = [opset >= 10 and convertible(n, inits, readers, opset) for n in graph.node]
        if not any(layers):
            return PassResult(model, False)
        nodes, added, converted = [], [], []
        for n, layer in zip(graph.node, layers):
            if layer:
                nodes.extend(to_qdq(n, inits, added))
                converted.append(n.op_type)
            elif activation_convertible(n):  # once a layer is, its activations' QOperator ops too
                nodes.extend(activation_to_qdq(n))
                converted.append(n.op_type)
            else:
                nodes.append(n)
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(added)
        if not any(n.domain == "com.microsoft" for n in graph.node):  # the last com.microsoft node went
            keep = [o for o in model.opset_import if o.domain != "com.microsoft"]
            del model.opset_import[:]
            model.opset_import.extend(keep)
        state.notes.append(f"{len(converted)} QOperator node(s) ({', '.join(sorted(set(converted)))}) are read as "
                           "their QDQ form (DequantizeLinear -> layer -> QuantizeLinear, which onnxruntime fuses back "
                           "into the same integer kernel), so their weights are pruned on their own grid")
        log.debug("qoperator-to-qdq: %d layer(s)", len(converted))
        return PassResult(model, True)
