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

Left alone (the DequantizeLinear stays, and the weight is not prunable, said by the inventory): block-quantized
weights (opset 21 `block_size`), scales or zero points that are not initializers, DequantizeLinear nodes inside
If/Loop/Scan bodies. Dynamic quantization (ConvInteger, MatMulInteger and onnxruntime's fused kernels) keeps its
integer weights: see opfacts.QUANTIZED_HOW.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.errors import PassError

__all__ = ["QuantizedWeight", "as_written", "fold", "foldable", "restore", "snap"]


@dataclass(frozen=True)
class QuantizedWeight:
    name: str  # the DequantizeLinear's output: the float initializer between fold and restore
    node: onnx.NodeProto  # the DequantizeLinear as the input held it
    integer: onnx.TensorProto  # W_q as the input held it (dtype, name)
    scale: onnx.TensorProto
    zero_point: onnx.TensorProto | None
    axis: int | None  # the scale's axis of W (normalized), None: one scale for the tensor
    quantize: onnx.NodeProto | None = None  # fake quantization: the QuantizeLinear between a float W and the node
    source: onnx.TensorProto | None = None  # ... and that float W as the input held it (`integer`: its Q(W))
    cast: onnx.NodeProto | None = None  # weight-only quantization: W_q -> Cast -> Mul(scale) (`node` is the Mul)


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


def foldable(model: onnx.ModelProto) -> bool:
    inits = {t.name: t for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    fake, casts, shared = _fake_quantizers(model.graph), _float_casts(model.graph), _shared(model.graph)
    return any(_foldable(n, inits, outputs, fake, shared) or _cast_mul(n, inits, outputs, casts, shared)
               for n in model.graph.node)


def as_written(model: onnx.ModelProto, folded: list[QuantizedWeight],
               slices: list[tuple[str, int, np.ndarray]] = ()) -> onnx.ModelProto:
    """`model` as it would be written: a copy with its folded weights quantized back, or `model` itself when it
    holds none of them (a model already written, a capture that reads none)."""
    names = {w.name for w in folded}
    if not names or not any(t.name in names for t in model.graph.initializer):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    restore(out, folded, slices)
    return out


def fold(model: onnx.ModelProto) -> list[QuantizedWeight]:
    """Replace each foldable DequantizeLinear of an integer initializer (main graph) by its float values, in place;
    the integer, scale and zero-point initializers nothing else reads go. Returns what `restore` needs."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    folded: list[QuantizedWeight] = []
    kept_nodes: list[onnx.NodeProto] = []
    new: list[onnx.TensorProto] = []
    fake, casts, shared = _fake_quantizers(graph), _float_casts(graph), _shared(graph)
    quantizers: set[str] = set()  # fake quantization's QuantizeLinear / weight-only Cast nodes folded with their node
    for node in graph.node:
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
    if not folded:
        return folded
    del graph.node[:]
    graph.node.extend(n for n in kept_nodes if not (n.op_type in ("QuantizeLinear", "Cast")
                                                     and n.output[0] in quantizers))
    graph.initializer.extend(new)
    _drop_unread(graph, {n for w in folded for n in (w.integer.name, w.scale.name,
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
    for w in folded:
        held = inits.get(w.name)
        if held is None:  # nothing reads it any more
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
    if nodes:
        kept = [t for t in graph.initializer if t.name not in gone]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        rest = list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes + rest)  # their inputs are all initializers: first is topological
    return len(gone)


def snap(model: onnx.ModelProto, folded: list[QuantizedWeight]) -> int:
    """Each folded weight of `model` (main graph, in place) to the float value of its grid point: what the file will
    hold, so counts of zeros and the parity oracle agree with it (a refit's value under half a step from 0 is 0).
    Returns how many changed."""
    by = {w.name: w for w in folded}
    changed = 0
    for t in model.graph.initializer:
        w = by.get(t.name)
        if w is None:
            continue
        values = numpy_helper.to_array(t)
        q, scale, zp = _on_grid(values, w)
        centred = q.astype(np.int64) - (_along(zp.astype(np.int64), w.axis, q.ndim) if zp is not None else 0)
        snapped = (centred.astype(scale.dtype) * _along(scale, w.axis, q.ndim)).astype(values.dtype)
        if not np.array_equal(snapped, values):
            t.CopyFrom(numpy_helper.from_array(snapped, t.name))
            changed += 1
    return changed


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
