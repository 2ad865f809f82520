"""Find the prunable weights of any ONNX graph, and say why everything else is left alone.

Prunable = a float constant input of Conv, ConvTranspose, Gemm or MatMul, however it is laid out: an initializer or
a Constant node, reached directly or through Transpose/Reshape/Identity/Cast/Squeeze/Unsqueeze. For each we record
the storage axis that holds the op's output channels (what dead-neuron removal and the report need):

    W[K,N] --Transpose(perm=1,0)--> Wt[N,K] --> Gemm(transB=1)   out channels: axis 0 of Wt = axis 1 of W

Not prunable, with the reason reported: biases, normalization parameters, integer (quantized) weights, weights
shared by several nodes, weights behind DequantizeLinear, anything inside an If/Loop/Scan subgraph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.passes.shapes import infer_shapes

WEIGHT_OPS = {"Conv": "conv", "ConvTranspose": "conv", "Gemm": "fc", "MatMul": "fc"}
PASS_THROUGH = {"Transpose", "Reshape", "Identity", "Cast", "Squeeze", "Unsqueeze"}
FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.DOUBLE,
}
NORM_OPS = {"BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization"}
SUBGRAPH_OPS = {"If", "Loop", "Scan"}


@dataclass(frozen=True)
class PrunableWeight:
    name: str  # the initializer, or the output of the Constant node, that holds the values
    node: str  # the consuming Conv/ConvTranspose/Gemm/MatMul
    op_type: str
    input_index: int
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "conv" or "fc"
    out_axis: int | None  # storage axis of the consumer's output channels (None: unknown, e.g. via Reshape)
    in_axis: int | None
    via: tuple[str, ...] = ()  # op types between the constant and the consumer
    source: str = "initializer"  # or "constant" (a Constant node)
    macs: int | None = None  # multiply-accumulates per sample, when shapes are known

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str
    size: int


@dataclass
class Inventory:
    prunable: list[PrunableWeight] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def by_name(self) -> dict[str, PrunableWeight]:
        return {w.name: w for w in self.prunable}


# Storage-independent axes of the weight operand, as the consumer sees it: (out_axis, in_axis).
def _conv_axes(node, index, rank):
    return (0, 1) if index == 1 else (None, None)


def _conv_transpose_axes(node, index, rank):
    return (1, 0) if index == 1 else (None, None)


def _gemm_axes(node, index, rank):
    if index == 1:
        return (0, 1) if _attr(node, "transB", 0) else (1, 0)
    return (None, None)  # a constant A (or C): prunable by magnitude, no channel mapping


def _matmul_axes(node, index, rank):
    if index == 1:
        return (rank - 1, rank - 2) if rank >= 2 else (None, None)
    return (None, None)


AXES = {"Conv": _conv_axes, "ConvTranspose": _conv_transpose_axes, "Gemm": _gemm_axes, "MatMul": _matmul_axes}
WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (0, 1), "MatMul": (0, 1)}


def name_nodes(model: onnx.ModelProto) -> None:
    """Give unnamed nodes a stable name (op type + index) so every message and report can point at them."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            candidate = f"{node.op_type}_{i}"
            while candidate in taken:
                candidate += "_"
            node.name = candidate
            taken.add(candidate)


def find_prunable(model: onnx.ModelProto, *, with_macs: bool = True) -> Inventory:
    graph = model.graph
    consts = _constants(graph)
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    captured = _names_used_in_subgraphs(graph)
    shapes = infer_shapes(model) if with_macs else {}

    inv = Inventory()
    claimed: set[str] = set()
    for node in graph.node:
        if node.op_type not in WEIGHT_OPS:
            continue
        for index in WEIGHT_INPUTS[node.op_type]:
            if index >= len(node.input) or not node.input[index]:
                continue
            traced = _trace_constant(node.input[index], producers, consts, consumers)
            if traced is None:
                continue
            source_name, via_nodes, problem = traced
            if source_name in claimed:
                continue
            tensor = consts[source_name]
            size = int(np.prod(tensor.dims, dtype=np.int64))
            reason = problem or _refusal(tensor, source_name, node, via_nodes, consumers, captured)
            if reason:
                inv.skipped.append(Skipped(source_name, reason, size))
                claimed.add(source_name)
                continue
            rank = len(tensor.dims) if not via_nodes else _consumer_rank(node.input[index], shapes, tensor)
            out_axis, in_axis = AXES[node.op_type](node, index, rank)
            out_axis, in_axis = _map_axes_through(via_nodes, out_axis, in_axis, len(tensor.dims))
            inv.prunable.append(
                PrunableWeight(
                    name=source_name,
                    node=node.name,
                    op_type=node.op_type,
                    input_index=index,
                    shape=tuple(int(d) for d in tensor.dims),
                    dtype=onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).name,
                    kind=WEIGHT_OPS[node.op_type],
                    out_axis=out_axis,
                    in_axis=in_axis,
                    via=tuple(v.op_type for v in via_nodes),
                    source="constant" if source_name in producers else "initializer",
                    macs=_macs(node, size, shapes),
                )
            )
            claimed.add(source_name)
    _explain_the_rest(graph, consts, consumers, claimed, captured, inv)
    return inv


def _trace_constant(name, producers, consts, consumers):
    """Follow pass-through ops back to a constant. Returns (constant name, via nodes, problem) or None."""
    via = []
    while name not in consts:
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "DequantizeLinear" and node.input[0] in consts:
            return node.input[0], via, "behind a DequantizeLinear (quantized weight)"
        if node.op_type not in PASS_THROUGH or len(consumers.get(name, [])) != 1:
            return None
        via.insert(0, node)
        name = node.input[0]
    return name, via, None


def _refusal(tensor, name, node, via_nodes, consumers, captured) -> str | None:
    if tensor.data_type not in FLOAT_TYPES:
        return f"integer dtype ({onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).name}) weight of {node.op_type} '{node.name}'"
    users = consumers.get(name, [])
    if len(users) > 1:
        others = ", ".join(f"'{u.name}'" for u in users if u is not (via_nodes[0] if via_nodes else node))
        return f"shared with node {others}"
    if name in captured:
        return "also used inside an If/Loop/Scan subgraph"
    if len(tensor.dims) < 1:
        return "scalar"
    return None


def _explain_the_rest(graph, consts, consumers, claimed, captured, inv: Inventory) -> None:
    for name, tensor in consts.items():
        if name in claimed:
            continue
        size = int(np.prod(tensor.dims, dtype=np.int64))
        users = consumers.get(name, [])
        if size < 2 and not users:
            continue
        reason = _why_not(tensor, users, name, captured)
        if reason:
            inv.skipped.append(Skipped(name, reason, size))
    for node in graph.node:
        if node.op_type in SUBGRAPH_OPS:
            n_sub = sum(1 for _ in _subgraph_initializers(node))
            if n_sub:
                inv.skipped.append(Skipped(f"{node.op_type} '{node.name}'", f"{n_sub} tensor(s) inside a subgraph (left untouched)", 0))


def _why_not(tensor, users, name, captured) -> str | None:
    ops = {u.op_type for u in users}
    if name in captured and not users:
        return "used inside an If/Loop/Scan subgraph (left untouched)"
    if tensor.data_type not in FLOAT_TYPES:
        if ops & {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DequantizeLinear"}:
            return "integer dtype (quantized weight)"
        return None  # shapes, axes, indices: not weights, not worth a line
    for u in users:
        if u.op_type in ("Conv", "ConvTranspose", "Gemm") and len(u.input) > 2 and u.input[2] == name:
            return f"bias of {u.op_type} '{u.name}'"
        if u.op_type in NORM_OPS:
            return f"normalization parameter of {u.op_type} '{u.name}'"
        if u.op_type == "Add":
            return f"bias (Add '{u.name}')"
    if len(users) > 1:
        return "shared by " + ", ".join(f"'{u.name}'" for u in users)
    if int(np.prod(tensor.dims, dtype=np.int64)) < 2:
        return None
    op = next(iter(ops), "nothing")
    return f"not a weight of Conv/ConvTranspose/Gemm/MatMul (used by {op})"


def _constants(graph) -> dict[str, onnx.TensorProto]:
    out = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = attr.t
    return out


def _names_used_in_subgraphs(graph) -> set[str]:
    used: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            subs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for g in subs:
                for n in g.node:
                    used.update(n.input)
                for sub_node in g.node:
                    if any(a.HasField("g") or a.graphs for a in sub_node.attribute):
                        used |= _names_used_in_subgraphs(g)
    return used


def _subgraph_initializers(node):
    for attr in node.attribute:
        for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            yield from g.initializer
            for n in g.node:
                if n.op_type == "Constant":
                    yield n


def _map_axes_through(via_nodes, out_axis, in_axis, storage_rank):
    """Map consumer-space axes back to the constant's storage axes through the pass-through chain."""
    for v in reversed(via_nodes):
        if v.op_type == "Transpose":
            perm = _attr(v, "perm", None) or list(reversed(range(storage_rank)))
            out_axis = perm[out_axis] if out_axis is not None else None
            in_axis = perm[in_axis] if in_axis is not None else None
        elif v.op_type in ("Identity", "Cast"):
            continue
        else:  # Reshape/Squeeze/Unsqueeze: the axes no longer line up one to one
            return None, None
    return out_axis, in_axis


def _consumer_rank(name, shapes, tensor):
    shape = shapes.get(name)
    return len(shape) if shape is not None else len(tensor.dims)


def _macs(node, size, shapes) -> int | None:
    out = shapes.get(node.output[0])
    if out is None:
        return None
    if node.op_type == "Gemm":
        return size
    if any(d is None for d in out[1:]):
        return None
    if node.op_type == "Conv":
        return size * int(np.prod(out[2:], dtype=np.int64))
    if node.op_type == "ConvTranspose":
        inp = shapes.get(node.input[0])
        if inp is None or any(d is None for d in inp[2:]):
            return None
        return size * int(np.prod(inp[2:], dtype=np.int64))
    if node.op_type == "MatMul":
        return size * int(np.prod(out[1:-1], dtype=np.int64)) if len(out) >= 2 else size
    return None


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def weight_array(model: onnx.ModelProto, name: str) -> np.ndarray:
    """The values of a prunable weight, initializer or Constant node output."""
    return numpy_helper.to_array(_constants(model.graph)[name])


def constant_tensors(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return _constants(model.graph)
