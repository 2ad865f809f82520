"""Integer-quantized weights read through a DequantizeLinear (QDQ, onnxruntime's `quantize_static`) pruned as floats.

    W_q[int8] ─ DequantizeLinear(scale, zero_point, axis) ─ Conv / Gemm / MatMul
    load (`fold`):      W = (W_q - zero_point) · scale, a float initializer under the DequantizeLinear's output name
    write (`restore`):  W_q = clip(round(W / scale) + zero_point), the DequantizeLinear back in front of its readers,
                        its per-axis scale and zero point sliced with the channels dead-neuron removal took away

    W[float] ─ QuantizeLinear ─ DequantizeLinear ─ Conv            (fake quantization, TensorRT-style Q/DQ exports)
    folds the same way (W = DequantizeLinear(QuantizeLinear(W))), and comes back as a float W on its grid (as stored
    where its integers did not change) with both nodes in front of its reader.

    W_q[int8] ─ Cast ─ Mul(scale) ─ MatMul / Gather            (weight-only quantization, as torch exports it)
    folds to W = float(W_q) · scale and comes back with both nodes; the scale may be per row or per column.

    W[float16/bfloat16] ─ Cast(to=FLOAT/DOUBLE) ─ Conv / Gemm / MatMul / ...   (weights stored in a lower precision:
    onnxruntime.transformers.float16 with force_fp16_initializers and an op_block_list, bfloat16 weights by hand)
    folds to W = Cast(W), a float initializer under W's own name (so tables, reports and --layer name the tensor the
    file holds) that the Cast's readers read, and comes back in its stored type with the Cast in front of its
    readers (`lowp`): every value the stored type holds is exact in float32, so the fold is exact, a pruned weight
    is 0 in both, and a weight a refit moved is rounded to the stored type (`snap`) before the budget check judges
    the model as written. Without the fold the refit, the channel analysis and the bridge saw a
    Cast between the weight and its layer and left the layer as pruned (sweep 23's bfloat16 ConvNeXt).

`fold` is exact in ONNX's semantics (DequantizeLinear computes (W_q - zero_point) · scale in the scale's type, as
here), so every step between load and write sees float weights: the inventory, criteria, masks, refits,
dead-neuron removal. A pruned weight is 0, which the grid holds exactly (the zero point); a weight nothing changed
comes back as the same integer; one a refit moved is rounded to its grid, and the budget check judges the model as
written. Biases (int32 through a DequantizeLinear) fold and come back the same way, so dead-neuron removal can
slice and fold into them.

Activations keep their QuantizeLinear/DequantizeLinear pairs. onnxruntime fuses a pair around a weight op into an
integer kernel (QLinearConv); the folded model runs that layer in float between the same pairs, which can round an
activation one step differently: the run's reference is the input model as given (`RunState.reference`), so that
difference counts against the budget, never in its favour.

    X ─ DynamicQuantizeLinear ─ X_q, x_scale ─┐
    W_q[int8/uint8] ──────────────────── ConvInteger / MatMulInteger ─ (Add) ─ Cast ─ Mul(Mul(x_scale, w_scale))
                                                                    (dynamic quantization: onnxruntime's quantize_dynamic)
    X ─ Mul(a) ─ Round ─ Min/Max ─ Cast(int8) ─┐    (Keras 3's quantize("int8"): W = W_q / kernel_scale)
    W_q[int8] ───────────────────────── MatMulInteger ─ Cast ─ Div(Mul(a, kernel_scale))
    load (`fold`):      W_q becomes a float initializer of the same name, W = (W_q - zero_point) · w_scale, read by
                        the integer op through a QuantizeLinear(w_scale, zero_point) that gives back W_q exactly;
                        the inventory follows the QuantizeLinear (passes/weights.py) to an op of opfacts.WEIGHT_OPS
    write (`restore`):  the QuantizeLinear goes, W_q (pruned weights at the zero point) is the initializer again

    The weight's scale is an input of onnxruntime's com.microsoft kernels (DynamicQuantizeLSTM's W and R,
    DynamicQuantizeMatMul, MatMulIntegerToFloat: opfacts.DYNAMIC_QUANT_WEIGHTS); for ConvInteger and MatMulInteger
    it is the initializer the graph multiplies the input's dynamic scale by, in the Mul after the op's Cast, or
    the reciprocal of the one it divides by with the input's scale (Keras, `_input_scales`). A
    per-channel scale no QuantizeLinear can take (below opset 13, or DynamicQuantizeLSTM's [dirs, 4H] scales)
    folds in units of the integer grid, W = W_q - zero_point, when the zero point is one value: the same weights,
    masks and file; only magnitudes across channels of other scales compare on that grid.

Left alone (the DequantizeLinear stays, and the weight is not prunable, said by the inventory): block-quantized
weights (opset 21 `block_size`), scales or zero points that are not initializers, DequantizeLinear nodes inside
If/Loop/Scan bodies, an integer op whose weight scale the graph does not show (see opfacts.QUANTIZED_HOW).
Dynamically quantized layers are not shrunk (their output scales sit in other nodes); the torch bridge runs
DynamicQuantizeLinear, ConvInteger, MatMulInteger, DynamicQuantizeMatMul and MatMulIntegerToFloat on the grid in
float and DynamicQuantizeLSTM as a float LSTM (close to onnxruntime's, not equal), so sgd retrains the float
stand-ins (the layer-wise refit does not take a weight behind the QuantizeLinear).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.errors import PassError
from onnxprune.passes.scopes import FLOAT_TYPES, readers_of, rename_reads
from onnxprune.passes.storage.graphs import default_opset

__all__ = ["QuantizedWeight", "as_written", "fold", "foldable", "kinds", "lowp_kinds", "restore", "snap"]


@dataclass(frozen=True)
class QuantizedWeight:
    name: str  # the DequantizeLinear's output: the float initializer between fold and restore
    node: onnx.NodeProto  # the DequantizeLinear as the input held it
    integer: onnx.TensorProto  # W_q as the input held it (dtype, name)
    scale: onnx.TensorProto | None  # None for a weight stored in a lower float precision (`lowp`)
    zero_point: onnx.TensorProto | None
    axis: int | None  # the scale's axis of W (normalized), None: one scale for the tensor
    quantize: onnx.NodeProto | None = None  # fake quantization: the QuantizeLinear between a float W and the node
    source: onnx.TensorProto | None = None  # ... and that float W as the input held it (`integer`: its Q(W))
    cast: onnx.NodeProto | None = None  # weight-only quantization: W_q -> Cast -> Mul(scale) (`node` is the Mul)
    dynamic: onnx.NodeProto | None = None  # dynamic quantization: the QuantizeLinear the fold put in front of the
    # integer op (`node`), whose scale and zero point are `scale` and `zero_point`; `name` is W_q's own name
    lowp: bool = False  # a float16/bfloat16 W read through Cast(to=float) (`node`); `integer` is W as stored and
    # `name` its own name, which the Cast's readers read between fold and restore


def kinds(folded: list[QuantizedWeight]) -> str:
    """How the folded weights are quantized, in words and counts: "21 ConvInteger, 1 MatMulInteger (dynamic)"."""
    counts: dict[str, int] = {}
    for w in folded:
        if w.lowp:
            continue
        how = (f"{w.node.op_type} (dynamic)" if w.dynamic is not None else "Cast -> Mul" if w.cast is not None
               else "QuantizeLinear -> DequantizeLinear" if w.quantize is not None else "DequantizeLinear")
        counts[how] = counts.get(how, 0) + 1
    return ", ".join(f"{k} through {how}" if not how.endswith("(dynamic)") else f"{k} of {how}"
                     for how, k in counts.items())


def lowp_kinds(folded: list[QuantizedWeight]) -> str:
    """The stored types of the weights folded from a lower float precision: "bfloat16", "float16 (3), bfloat16 (2)"."""
    counts: dict[str, int] = {}
    for w in folded:
        if w.lowp:
            name = _dtype_name(w.integer.data_type)
            counts[name] = counts.get(name, 0) + 1
    return next(iter(counts)) if len(counts) == 1 else ", ".join(f"{name} ({k})" for name, k in counts.items())


def _dtype_name(data_type: int) -> str:
    return {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16"}.get(
        data_type, onnx.TensorProto.DataType.Name(data_type).lower())


LOWP_TYPES = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)  # stored types the fold widens
WIDER = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)  # ... to the Cast's own type


def _lowp_cast(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], outputs: set[str],
               shared: set[str] = frozenset()) -> bool:
    """`node` is Cast(to=float/double) of a float16/bfloat16 initializer of at least one dim that nothing else reads
    (main graph), and its output no graph output."""
    if node.op_type != "Cast" or node.domain not in ("", "ai.onnx") or len(node.output) != 1 or not node.input:
        return False
    to = next((a.i for a in node.attribute if a.name == "to"), None)
    w = inits.get(node.input[0])
    return (to in WIDER and w is not None and w.data_type in LOWP_TYPES and len(w.dims) > 0
            and node.input[0] not in shared and node.output[0] not in outputs and node.input[0] not in outputs)


def _folded_in(model: onnx.ModelProto, w: QuantizedWeight) -> bool:
    """Whether `model` holds `w` as its float stand-in (not yet written back)."""
    if w.lowp:
        return any(t.name == w.name and t.data_type != w.integer.data_type for t in model.graph.initializer)
    if w.dynamic is not None:
        return any(n.output and n.output[0] == w.dynamic.output[0] for n in model.graph.node)
    return any(t.name == w.name for t in model.graph.initializer)


def _plain(node: onnx.NodeProto, op: str) -> bool:
    return (node.op_type == op and node.domain in ("", "ai.onnx") and len(node.output) == 1
            and not any(a.name == "block_size" and a.i for a in node.attribute))


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _foldable(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], outputs: set[str],
              fake: dict[str, onnx.NodeProto] | None = None, shared: set[str] = frozenset()) -> bool:
    """An integer initializer's DequantizeLinear, or (`fake`: QuantizeLinear nodes by output, each read once) the
    DequantizeLinear of a QuantizeLinear of a float initializer with the same scale and zero point (fake
    quantization, as TensorRT-style Q/DQ exports write weights)."""
    if not _plain(node, "DequantizeLinear") or node.output[0] in outputs:
        return False
    names = [n for n in node.input if n]
    if len(names) < 2 or not all(n in inits for n in names[1:]):
        return False
    if names[0] in shared:
        return False
    if names[0] in inits:
        dtype = helper.tensor_dtype_to_np_dtype(inits[names[0]].data_type)
        return np.issubdtype(dtype, np.integer) and len(inits[names[0]].dims) > 0
    q = (fake or {}).get(names[0])
    if q is None or list(q.input[1:]) != list(node.input[1:]) or _attrs(q).get("axis", 1) != _attrs(node).get(
            "axis", 1) or q.input[0] not in inits or q.output[0] in outputs or q.input[0] in shared:
        return False
    dtype = helper.tensor_dtype_to_np_dtype(inits[q.input[0]].data_type)
    return np.issubdtype(dtype, np.floating) and len(inits[q.input[0]].dims) > 0


def _axis(node: onnx.NodeProto, ndim: int, scale: np.ndarray) -> int | None:
    if scale.size == 1 and scale.ndim <= 1:
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    return axis % ndim


def _along(values: np.ndarray, axis: int | None, ndim: int) -> np.ndarray:
    """A per-axis parameter shaped to broadcast against a tensor of `ndim` dims."""
    if axis is None:
        return values.reshape(())
    return values.reshape([-1 if k == axis else 1 for k in range(ndim)])


def _cast_mul(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], outputs: set[str],
              casts: dict[str, onnx.NodeProto], shared: set[str] = frozenset()
              ) -> tuple[onnx.NodeProto, int, int | None] | None:
    """(the Cast, the scale's input index, its axis of W) when `node` is Mul(Cast(W_q int initializer), scale) with a
    float scale initializer that has at most one axis longer than 1 (weight-only quantization, as torch exports
    it); else None."""
    if node.op_type != "Mul" or node.domain not in ("", "ai.onnx") or node.output[0] in outputs or len(node.input) != 2:
        return None
    for k in (0, 1):
        cast, scale = casts.get(node.input[k]), inits.get(node.input[1 - k])
        if cast is None or scale is None or cast.input[0] not in inits or cast.input[0] in shared:
            continue
        q = inits[cast.input[0]]
        if not np.issubdtype(helper.tensor_dtype_to_np_dtype(q.data_type), np.integer) or not q.dims:
            return None
        if not np.issubdtype(helper.tensor_dtype_to_np_dtype(scale.data_type), np.floating):
            return None
        qd, sd = list(q.dims), list(scale.dims)
        if len(sd) > len(qd):
            return None
        sd = [1] * (len(qd) - len(sd)) + sd
        long = [a for a, (x, y) in enumerate(zip(qd, sd)) if y != 1]
        if len(long) > 1 or any(sd[a] != qd[a] for a in long):
            return None
        return cast, 1 - k, (long[0] if long else None)
    return None


def _shared(graph: onnx.GraphProto) -> set[str]:
    """Initializers more than one node reads (in any scope): a weight two DequantizeLinear (or Cast) nodes read is
    left as it is; folded per reader it would come back as two tensors with two masks (sweep 14: the file grew)."""
    from onnxprune.passes.scopes import scopes

    reads: dict[str, int] = {}
    for sc in scopes(graph):
        for n in sc.graph.node:
            for i in set(n.input):
                reads[i] = reads.get(i, 0) + 1
    return {name for name, k in reads.items() if k > 1}


def _read_once(graph: onnx.GraphProto, keep) -> dict[str, onnx.NodeProto]:
    """The nodes `keep` accepts whose output exactly one node of the main graph reads, by output name."""
    reads: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            reads[i] = reads.get(i, 0) + 1
    return {n.output[0]: n for n in graph.node if n.output and keep(n) and reads.get(n.output[0]) == 1}


def _float_casts(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Cast nodes to a float type (a weight-only quantized weight's dequantization starts so)."""
    def to_float(n: onnx.NodeProto) -> bool:
        to = next((a.i for a in n.attribute if a.name == "to"), None)
        return n.op_type == "Cast" and to is not None and np.issubdtype(helper.tensor_dtype_to_np_dtype(to), np.floating)

    return _read_once(graph, to_float)


def _fake_quantizers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """QuantizeLinear nodes (fake quantization of a float weight)."""
    return _read_once(graph, lambda n: _plain(n, "QuantizeLinear"))


def _dq_constants(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """The values of main-graph Constant nodes a DequantizeLinear of a Constant reads (its x, scale and zero point),
    as tensors named by their outputs: torch legacy writes a torch.ao FX int8 model's weights so (sweep 44). None
    below IR 4, where an initializer must also be a graph input."""
    graph = model.graph
    if model.ir_version < 4:
        return {}
    outputs = {o.name for o in graph.output}
    made = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and len(n.output) == 1
            and len(n.attribute) == 1 and n.attribute[0].name == "value" and n.output[0] not in outputs}
    found: dict[str, onnx.TensorProto] = {}
    for n in graph.node:
        if n.op_type == "DequantizeLinear" and n.input and n.input[0] in made:
            for name in n.input[:3]:
                if name in made:
                    t = onnx.TensorProto()
                    t.CopyFrom(made[name].attribute[0].t)
                    t.name = name
                    found[name] = t
    return found


def _lift_dq_constants(model: onnx.ModelProto) -> None:
    """`_dq_constants` become initializers (their Constant nodes go), in place, so the fold takes those weights."""
    lifted = _dq_constants(model)
    if not lifted:
        return
    kept = [n for n in model.graph.node if not (n.op_type == "Constant" and n.output[0] in lifted)]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    model.graph.initializer.extend(lifted.values())


def foldable(model: onnx.ModelProto) -> bool:
    inits = {t.name: t for t in model.graph.initializer} | _dq_constants(model)
    outputs = {o.name for o in model.graph.output}
    fake, casts, shared = _fake_quantizers(model.graph), _float_casts(model.graph), _shared(model.graph)
    return (any(_foldable(n, inits, outputs, fake, shared) or _cast_mul(n, inits, outputs, casts, shared)
                or _lowp_cast(n, inits, outputs, shared) for n in model.graph.node)
            or bool(_dynamic_weights(model, shared)))


def _scale_after(node: onnx.NodeProto, producers, consumers, inits) -> tuple[str, bool] | None:
    """The weight scale of a ConvInteger/MatMulInteger whose input is quantized in the graph, and whether the graph
    divides by it: the initializer the graph multiplies that input's scale by, in the Mul after the op (through an
    integer bias Add and the Cast to float), as quantize_dynamic and older tools write it (input from a
    DynamicQuantizeLinear); or, as Keras 3's `quantize("int8")` writes a Dense (sweep 44), the initializer it
    divides by, Div(Cast(op), Mul(a, kernel_scale)), its input Cast(Round(x * a)) clipped to the integer range
    (W = W_q / kernel_scale). None when the graph does not show it."""
    d = producers.get(node.input[0])
    if d is None:
        return None
    if d.op_type == "DynamicQuantizeLinear" and len(d.output) >= 2:
        x_scales, divided = {d.output[1]}, False
    else:
        x_scales, divided = _input_scales(d, producers, inits), True
    out = node.output[0]
    for _ in range(4):
        users = consumers.get(out, [])
        if len(users) != 1:
            return None
        u = users[0]
        if u.op_type in ("Add", "Cast") and not (divided and u.op_type == "Add"):
            out = u.output[0]
            continue
        if u.op_type != ("Div" if divided else "Mul") or len(u.input) != 2 or (divided and u.input[0] != out):
            return None
        p = producers.get(u.input[1] if u.input[0] == out else u.input[0])
        if p is None or p.op_type != "Mul" or len(p.input) != 2 or not x_scales & set(p.input):
            return None
        s = p.input[1] if p.input[0] in x_scales else p.input[0]
        return (s, divided) if s in inits else None
    return None


def _input_scales(cast: onnx.NodeProto, producers, inits) -> set[str]:
    """x and its scale `a`, both computed, of an input quantized as Cast(Clip(Round(x * a))) to 8 bits (Keras 3's
    int8 Dense: Min and Max of constants for the clip); the Mul after the op names which is the scale. Empty for any
    other producer."""
    if cast.op_type != "Cast" or _attrs(cast).get("to") not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
        return set()
    n = producers.get(cast.input[0])
    while n is not None and (n.op_type in ("Min", "Max", "Clip") and all(i in inits for i in n.input[1:])):
        n = producers.get(n.input[0])
    if n is None or n.op_type != "Round":
        return set()
    m = producers.get(n.input[0])
    if m is None or m.op_type != "Mul" or len(m.input) != 2 or any(i in inits for i in m.input):
        return set()
    return set(m.input)


def _dynamic_weights(model: onnx.ModelProto, shared: set[str]) -> list[tuple]:
    """Dynamically quantized integer weights the fold can take: (node, W_q, scale, zero point, axis of W or None)
    per weight, main graph. The scale and zero point are arrays shaped for a QuantizeLinear (a scalar, or one value
    per channel on `axis`); a scale of 1: a per-channel scale no QuantizeLinear takes, folded as W_q - zp."""
    from onnxprune.passes.opfacts import DYNAMIC_QUANT_WEIGHTS

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output} | {i.name for i in graph.input}
    producers = {o: n for n in graph.node for o in n.output}
    consumers = readers_of(graph)
    found = []
    for node in graph.node:
        for index, si, zi, axis in DYNAMIC_QUANT_WEIGHTS.get((node.domain or "", node.op_type), ()):
            if index >= len(node.input):
                continue
            w_t = inits.get(node.input[index])
            if w_t is None or w_t.name in shared or w_t.name in outputs or not w_t.dims:
                continue
            dtype = helper.tensor_dtype_to_np_dtype(w_t.data_type)
            if dtype not in (np.int8, np.uint8):
                continue
            divided = False
            if si is None:
                s_name, divided = _scale_after(node, producers, consumers, inits) or ("", False)
            else:
                s_name = node.input[si] if si < len(node.input) else ""
            z_name = node.input[zi] if zi < len(node.input) else ""
            if not s_name or s_name not in inits or (z_name and z_name not in inits):
                continue
            scale = numpy_helper.to_array(inits[s_name]).reshape(-1)
            zp = numpy_helper.to_array(inits[z_name]).reshape(-1) if z_name else np.zeros(1, dtype)
            axis = axis % len(w_t.dims)
            channels = w_t.dims[axis]
            if not np.issubdtype(scale.dtype, np.floating) or zp.dtype != dtype or not zp.size or not scale.size \
                    or not np.all(scale > 0):
                continue
            if divided:  # W = W_q / kernel_scale
                scale = (1 / scale).astype(scale.dtype)
            if np.all(scale == scale[0]) and np.all(zp == zp[0]):  # one scale, one zero point
                scale, zp, axis = scale[:1].reshape(()), zp[:1].reshape(()), None
            elif default_opset(model) >= 13 and scale.size in (1, channels) and zp.size in (1, channels):  # a scale
                # per channel: a per-axis QuantizeLinear
                scale, zp = np.broadcast_to(scale, (channels,)).copy(), np.broadcast_to(zp, (channels,)).copy()
            elif np.all(zp == zp[0]):  # a per-channel scale no QuantizeLinear here takes: in units of the grid
                scale, zp, axis = np.ones((), scale.dtype), zp[:1].reshape(()), None
            else:
                continue
            found.append((node, w_t, scale.astype(np.float32), zp, axis))
    return found


def _fold_dynamic(model: onnx.ModelProto, shared: set[str]) -> list[QuantizedWeight]:
    """Each dynamically quantized weight W_q becomes a float initializer of its name, read through a
    QuantizeLinear that gives W_q back (its output a fresh name the integer op reads); in place."""
    graph = model.graph
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    taken |= {i.name for i in graph.input}
    folded, nodes, new, names = [], [], [], set()
    for node, w_t, scale, zp, axis in _dynamic_weights(model, shared):
        q = numpy_helper.to_array(w_t)
        centred = q.astype(np.int64) - _along(zp.astype(np.int64), axis, q.ndim)
        values = (centred.astype(np.float32) * _along(scale, axis, q.ndim)).astype(np.float32)
        s_t = numpy_helper.from_array(scale, _fresh(f"{w_t.name}_scale", taken))
        z_t = numpy_helper.from_array(zp, _fresh(f"{w_t.name}_zero_point", taken))
        ql = helper.make_node("QuantizeLinear", [w_t.name, s_t.name, z_t.name], [_fresh(f"{w_t.name}_q", taken)],
                              name=_fresh(f"{w_t.name}_QuantizeLinear", taken),
                              **({"axis": axis} if axis is not None else {}))
        for k, i in enumerate(node.input):
            if i == w_t.name:
                node.input[k] = ql.output[0]
        new += [numpy_helper.from_array(values, w_t.name), s_t, z_t]
        nodes.append(ql)
        names.add(w_t.name)
        folded.append(QuantizedWeight(w_t.name, _copy(node), _copy(w_t), _copy(s_t), _copy(z_t), axis,
                                      dynamic=_copy(ql)))
    if folded:
        floats = {t.name: t for t in new}
        for t in graph.initializer:  # in W_q's place: written back there, the file keeps its order
            if t.name in names:
                t.CopyFrom(floats.pop(t.name))
        graph.initializer.extend(floats.values())
        rest = list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes + rest)  # their inputs are all initializers: first is topological
    return folded


def as_written(model: onnx.ModelProto, folded: list[QuantizedWeight],
               slices: list[tuple[str, int, np.ndarray]] = ()) -> onnx.ModelProto:
    """`model` as it would be written: a copy with its folded weights quantized back, or `model` itself when it
    holds none of them (a model already written, a capture that reads none)."""
    if not any(_folded_in(model, w) for w in folded):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    restore(out, folded, slices)
    return out


def fold(model: onnx.ModelProto) -> list[QuantizedWeight]:
    """Replace each foldable DequantizeLinear of an integer initializer (main graph; a Constant node's value is
    made one first, `_lift_dq_constants`) by its float values, in place; the integer, scale and zero-point
    initializers nothing else reads go. Returns what `restore` needs."""
    graph = model.graph
    _lift_dq_constants(model)
    folded: list[QuantizedWeight] = _fold_dynamic(model, _shared(graph))
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    kept_nodes: list[onnx.NodeProto] = []
    new: list[onnx.TensorProto] = []
    fake, casts, shared = _fake_quantizers(graph), _float_casts(graph), _shared(graph)
    quantizers: set[str] = set()  # fake quantization's QuantizeLinear / weight-only Cast nodes folded with their node
    widened: dict[str, onnx.TensorProto] = {}  # a lowp Cast's output -> its weight widened, under the weight's name
    for node in graph.node:
        if _lowp_cast(node, inits, outputs, shared):  # W[float16/bfloat16] -> Cast: W widened, exactly, in its place
            w_t = inits[node.input[0]]
            to = helper.tensor_dtype_to_np_dtype(next(a.i for a in node.attribute if a.name == "to"))
            widened[node.output[0]] = numpy_helper.from_array(numpy_helper.to_array(w_t).astype(to), w_t.name)
            folded.append(QuantizedWeight(w_t.name, _copy(node), _copy(w_t), None, None, None, lowp=True))
            continue
        weight_only = _cast_mul(node, inits, outputs, casts, shared)
        if weight_only is not None:  # W_q -> Cast -> Mul(scale): W = float(W_q) * scale, in the scale's type
            cast, k, axis = weight_only
            q_t, s_t = inits[cast.input[0]], inits[node.input[k]]
            q, scale = numpy_helper.to_array(q_t), numpy_helper.to_array(s_t)
            to = helper.tensor_dtype_to_np_dtype(next(a.i for a in cast.attribute if a.name == "to"))
            values = (q.astype(to) * scale.reshape([1] * (q.ndim - scale.ndim) + list(scale.shape))).astype(to)
            new.append(numpy_helper.from_array(values, node.output[0]))
            folded.append(QuantizedWeight(node.output[0], _copy(node), _copy(q_t), _copy(s_t), None, axis,
                                          cast=_copy(cast)))
            quantizers.add(cast.output[0])
            continue
        if not _foldable(node, inits, outputs, fake, shared):
            kept_nodes.append(node)
            continue
        s_t = inits[node.input[1]]
        zp_t = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        scale = numpy_helper.to_array(s_t)
        quantize = source = None
        if node.input[0] in inits:
            q_t = inits[node.input[0]]
            q = numpy_helper.to_array(q_t)
        else:  # Q(W) of a float W, computed as onnxruntime does: round half to even, saturate
            quantize = fake[node.input[0]]
            source = inits[quantize.input[0]]
            w = numpy_helper.to_array(source)
            dtype = numpy_helper.to_array(zp_t).dtype if zp_t is not None else np.dtype(np.uint8)
            axis = _axis(node, w.ndim, scale)
            z = _along(numpy_helper.to_array(zp_t).astype(np.float64), axis, w.ndim) if zp_t is not None else 0.0
            q = np.rint(w.astype(np.float64) / _along(scale.astype(np.float64), axis, w.ndim)) + z
            q = np.clip(q, np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
            q_t = numpy_helper.from_array(q, quantize.output[0])
            quantizers.add(quantize.output[0])
        zp = numpy_helper.to_array(zp_t) if zp_t is not None else np.zeros((), q.dtype)
        axis = _axis(node, q.ndim, scale)
        centred = q.astype(np.int64) - _along(zp.astype(np.int64), axis, q.ndim)
        values = (centred.astype(scale.dtype) * _along(scale, axis, q.ndim)).astype(scale.dtype)
        new.append(numpy_helper.from_array(values, node.output[0]))
        folded.append(QuantizedWeight(node.output[0], _copy(node), _copy(q_t), _copy(s_t),
                                      _copy(zp_t) if zp_t is not None else None, axis,
                                      _copy(quantize) if quantize is not None else None,
                                      _copy(source) if source is not None else None))
    if not any(w.dynamic is None for w in folded):
        return folded
    if widened:  # each lowp weight in its own place, read by its Cast's readers (every scope)
        by_name = {t.name: t for t in widened.values()}
        for t in graph.initializer:
            if t.name in by_name:
                t.CopyFrom(by_name[t.name])
        rename_reads(graph, {out: t.name for out, t in widened.items()})
    del graph.node[:]
    graph.node.extend(n for n in kept_nodes if not (n.op_type in ("QuantizeLinear", "Cast")
                                                     and n.output[0] in quantizers))
    graph.initializer.extend(new)
    _drop_unread(graph, {n for w in folded for n in (w.integer.name, w.scale.name if w.scale is not None else "",
                                                      w.zero_point.name if w.zero_point is not None else "",
                                                      w.source.name if w.source is not None else "")})
    return folded


def restore(model: onnx.ModelProto, folded: list[QuantizedWeight],
            slices: list[tuple[str, int, np.ndarray]] = ()) -> int:
    """Quantize each folded weight back to its grid and put its DequantizeLinear back, in place. `slices` are
    dead-neuron removal's (initializer, axis, keep) in order: a per-axis scale and zero point lose the positions
    their weight lost along that axis. Returns how many weights came back."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    taken |= {i.name for i in graph.input}
    nodes: list[onnx.NodeProto] = []
    gone: set[str] = set()
    quantizers = {n.output[0] for n in graph.node if n.op_type == "QuantizeLinear" and n.output}
    renames: dict[str, str] = {}  # a dynamic weight's QuantizeLinear output -> W_q, which its integer op reads again
    lowp_reads: dict[str, str] = {}  # a lowp weight's name -> its Cast's output, which its readers read again
    casts: list[onnx.NodeProto] = []
    for w in folded:
        held = inits.get(w.name)
        if held is None:  # nothing reads it any more
            continue
        if w.dynamic is not None:  # the integers back under W_q's name, read by the integer op itself
            if w.dynamic.output[0] not in quantizers or held.data_type not in FLOAT_TYPES:
                continue  # written already
            _restore_dynamic(w, held)
            renames[w.dynamic.output[0]] = w.name
            continue
        if w.lowp:  # back in the stored type (as stored where no value changed), its readers through its Cast
            if held.data_type == w.integer.data_type:
                continue  # written already
            low = _lowered(numpy_helper.to_array(held), w)
            stored = numpy_helper.to_array(w.integer)
            same = low.shape == stored.shape and np.array_equal(low.astype(np.float32), stored.astype(np.float32))
            held.CopyFrom(_copy(w.integer) if same else _lowp_tensor(low, w.integer.data_type, w.name))
            lowp_reads[w.name] = w.node.output[0]
            casts.append(_copy(w.node))
            continue
        values = numpy_helper.to_array(held)
        q, scale, zp = _on_grid(values, w, slices)
        dtype = q.dtype
        sliced = scale.size != numpy_helper.to_array(w.scale).size
        q_name = _fresh(w.integer.name, taken)
        s_name = _fresh(w.scale.name, taken) if sliced or w.scale.name not in inits else w.scale.name
        same = q.shape == tuple(w.integer.dims) and np.array_equal(q, numpy_helper.to_array(w.integer))
        if w.quantize is None:
            tensors = [_named(w.integer, q_name) if same else numpy_helper.from_array(q, q_name)]  # as stored if same
        else:  # fake quantization: the float W (on its grid, or as stored when Q(W) is unchanged) and its Q
            src_name, q_name = _fresh(w.source.name, taken), w.quantize.output[0]
            on_grid = ((q.astype(np.int64) - (_along(zp.astype(np.int64), w.axis, q.ndim) if zp is not None else 0))
                       * _along(scale.astype(np.float64), w.axis, q.ndim))
            dt = helper.tensor_dtype_to_np_dtype(w.source.data_type)
            tensors = [_named(w.source, src_name) if same else numpy_helper.from_array(on_grid.astype(dt), src_name)]
        stored = numpy_helper.to_array(w.scale)
        if s_name not in inits:
            shape = [-1 if d > 1 else d for d in stored.shape] if w.cast is not None else (-1,)
            tensors.append(_named(w.scale, s_name) if not sliced else numpy_helper.from_array(
                scale.astype(stored.dtype).reshape(shape), s_name))
        if w.cast is not None:  # weight-only: W_q -> Cast -> Mul(scale), the Mul's inputs in their own order
            for t in tensors:
                inits[t.name] = t
                graph.initializer.append(t)
            cast, mul = _copy(w.cast), _copy(w.node)
            cast.input[0] = q_name
            mul.input[list(mul.input).index(w.scale.name)] = s_name
            nodes += [cast, mul]
            gone.add(w.name)
            continue
        inputs = [q_name, s_name]
        if zp is not None:
            z_name = _fresh(w.zero_point.name, taken) if sliced or w.zero_point.name not in inits else w.zero_point.name
            if z_name not in inits:
                tensors.append(_named(w.zero_point, z_name) if not sliced else numpy_helper.from_array(
                    zp.astype(dtype).reshape(-1), z_name))
            inputs.append(z_name)
        for t in tensors:
            inits[t.name] = t
            graph.initializer.append(t)
        node = _copy(w.node)
        del node.input[:]
        node.input.extend(inputs)
        if w.quantize is not None:
            quantize = _copy(w.quantize)
            del quantize.input[:]
            quantize.input.extend([src_name, *inputs[1:]])
            nodes.append(quantize)
        nodes.append(node)
        gone.add(w.name)
    if renames:  # one pass over the nodes: the fold's QuantizeLinear nodes go, their readers read W_q
        kept_nodes = [n for n in graph.node if not (n.op_type == "QuantizeLinear" and n.output[0] in renames)]
        for n in kept_nodes:
            for k, i in enumerate(n.input):
                if i in renames:
                    n.input[k] = renames[i]
        del graph.node[:]
        graph.node.extend(kept_nodes)
        _drop_unread(graph, {n for w in folded if w.dynamic is not None for n in w.dynamic.input[1:]})
    if lowp_reads:
        rename_reads(graph, lowp_reads)
        nodes = casts + nodes
    if nodes:
        kept = [t for t in graph.initializer if t.name not in gone]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        rest = list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes + rest)  # their inputs are all initializers: first is topological
    return len(gone) + len(renames) + len(lowp_reads)


def _restore_dynamic(w: QuantizedWeight, held: onnx.TensorProto) -> None:
    """W_q on its grid in place of its float stand-in `held`, in place (the same integers where nothing changed,
    byte for byte)."""
    values = numpy_helper.to_array(held)
    if values.shape != tuple(w.integer.dims):
        raise PassError(f"dynamically quantized weight '{w.name}' changed shape {tuple(w.integer.dims)} -> "
                        f"{values.shape}; its layer was not to be shrunk")
    q, _, _ = _on_grid(values, w)
    tensor = _copy(w.integer) if np.array_equal(q, numpy_helper.to_array(w.integer)) else numpy_helper.from_array(
        q, w.name)
    held.CopyFrom(tensor)


def snap(model: onnx.ModelProto, folded: list[QuantizedWeight]) -> int:
    """Each folded weight of `model` (main graph, in place) to the float value of its grid point: what the file will
    hold, so counts of zeros and the parity oracle agree with it (a refit's value under half a step from 0 is 0).
    Returns how many changed."""
    by = {w.name: w for w in folded}
    changed = 0
    for t in model.graph.initializer:
        w = by.get(t.name)
        if w is None or t.data_type not in FLOAT_TYPES:  # a dynamic weight already written back is integer
            continue
        if w.lowp and t.data_type == w.integer.data_type:  # written back already
            continue
        values = numpy_helper.to_array(t)
        if w.lowp:  # the value the stored type holds
            snapped = _lowered(values, w).astype(values.dtype)
            if not np.array_equal(snapped, values):
                t.CopyFrom(numpy_helper.from_array(snapped, t.name))
                changed += 1
            continue
        q, scale, zp = _on_grid(values, w)
        centred = q.astype(np.int64) - (_along(zp.astype(np.int64), w.axis, q.ndim) if zp is not None else 0)
        snapped = (centred.astype(scale.dtype) * _along(scale, w.axis, q.ndim)).astype(values.dtype)
        if not np.array_equal(snapped, values):
            t.CopyFrom(numpy_helper.from_array(snapped, t.name))
            changed += 1
    return changed


def _lowered(values: np.ndarray, w: QuantizedWeight) -> np.ndarray:
    """`values` in w's stored type (float16 or ml_dtypes' bfloat16; round to nearest even, as Cast does)."""
    return values.astype(helper.tensor_dtype_to_np_dtype(w.integer.data_type))


def _lowp_tensor(values: np.ndarray, data_type: int, name: str) -> onnx.TensorProto:
    """A float16/bfloat16 initializer of `values` (already in that type)."""
    if data_type == onnx.TensorProto.BFLOAT16:  # raw bytes: from_array's bfloat16 support varies across onnx releases
        tensor = onnx.TensorProto(name=name, data_type=data_type, dims=list(values.shape))
        tensor.raw_data = np.ascontiguousarray(values).view(np.uint16).astype("<u2").tobytes()
        return tensor
    return numpy_helper.from_array(values, name)


def _on_grid(values: np.ndarray, w: QuantizedWeight, slices=()) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(the integers, the scale, the zero point) of `values` on w's grid; a per-axis scale and zero point sliced as
    `values` was (dead-neuron removal's `slices`)."""
    scale = numpy_helper.to_array(w.scale)
    zp = numpy_helper.to_array(w.zero_point) if w.zero_point is not None else None
    dtype = helper.tensor_dtype_to_np_dtype(w.integer.data_type)
    if w.axis is not None and scale.size != values.shape[w.axis]:  # this copy was shrunk (the oracle is not)
        for name, axis, keep in slices:
            if name == w.name and axis == w.axis and len(keep) == scale.size:
                scale = np.compress(keep, scale.reshape(-1), axis=0)
                zp = np.compress(keep, zp.reshape(-1), axis=0) if zp is not None else None
    if w.axis is not None and scale.size != values.shape[w.axis]:
        raise PassError(f"quantized weight '{w.name}' has {values.shape[w.axis]} positions on axis {w.axis} "
                        f"but {scale.size} scales after dead-neuron removal")
    s = _along(scale, w.axis, values.ndim).astype(np.float64)
    z = _along(zp, w.axis, values.ndim).astype(np.float64) if zp is not None else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s != 0, np.rint(values.astype(np.float64) / s), 0.0) + z
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype), scale, zp


def _fresh(name: str, taken: set[str]) -> str:
    """`name` itself when free (the input's own name), else the first free `name_k`."""
    out, k = name, 0
    while out in taken:
        k += 1
        out = f"{name}_{k}"
    taken.add(out)
    return out


def _drop_unread(graph: onnx.GraphProto, names: set[str]) -> None:
    from onnxprune.passes.scopes import scopes

    read = {i for sc in scopes(graph) for n in sc.graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name not in names or t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    listed = [i for i in graph.input if i.name not in names or i.name in read]  # IR < 4 lists initializers as inputs
    if len(listed) != len(graph.input):
        del graph.input[:]
        graph.input.extend(listed)


def _named(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
    out = _copy(tensor)
    out.name = name
    return out


def _copy(proto):
    out = type(proto)()
    out.CopyFrom(proto)
    return out
