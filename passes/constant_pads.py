"""A Pad whose pads are computed from constants reads them as one (before anything is measured).

torch's legacy exporter writes `F.pad(x, (2 * d, 0))` (a causal Conv1d's left padding: TCNs, WaveNet-style nets)
as a Pad whose pads come from a chain of constant ops: Constant -> ConstantOfShape -> Concat -> Reshape -> Slice ->
Transpose -> Reshape -> Cast. The channel analysis reads a Pad's pads only when they are a constant, so every
channel through such a Pad was blocked ("consumer Pad '/b/b.1/Pad' has pads, axes or a value that are not
constants"; sweep 24: a TCN's hand recipe masked no neuron of 7 of its 8 layers), and the Convs behind them showed
MACs "unknown" (shape inference cannot follow the chain).

Rules: a main-graph Pad's pads, constant value or axes input that a node computes from initializers (not graph
inputs) and Constant nodes alone, through at most MAX_CHAIN nodes of the standard domain without bodies, with at
most MAX_VALUES values, is evaluated once (onnx's reference evaluator) and becomes an initializer of the same name;
the chain's nodes that nothing else reads go. The Pad pads exactly as before.

A Slice's starts, ends, axes or steps likewise, and also where the chain reads a tensor's shape: torch legacy's
`x.chunk(2, dim=1)` is two Slices whose bounds are Mul(Div(Add(Gather(Shape(x), 1), 1), 2), k), so the channel
analysis blocked every channel through it ("consumer Slice ... has starts, ends, axes or steps that are not
constant"; sweep 36's RevNet, sweep 34's legacy WaveNet, ShuffleNetV2). A Shape node of a tensor whose rank onnx's
inference knows is given its inferred dimensions, one that is not a fixed number each of constant_weights'
PLACEHOLDERS in turn, and the bounds are stored only where every evaluation gives the same values (a Slice cut at
the batch size or a dynamic length stays as it is).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.passes.base import Pass, PassResult, PruneState, register_pass
from onnxprune.passes.merge_copies import check_reads, frozen_names
from onnxprune.passes.scopes import constant_chain

log = logging.getLogger(__name__)

MAX_CHAIN = 32
MAX_VALUES = 64


def _chain(name: str, producers: dict, inits: set[str], graph_inputs: set[str]) -> list[onnx.NodeProto] | None:
    """The nodes computing `name` from constants alone; None when a graph input, a body or another domain takes
    part, or the chain is longer than MAX_CHAIN."""
    chain = constant_chain(name, producers, inits, graph_inputs, max_nodes=MAX_CHAIN)
    return None if chain is None else chain[0]


def computed_pads(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """{a Pad input computed from constants: the nodes that compute it} (module docstring)."""
    g = model.graph
    producers = {o: n for n in g.node for o in n.output if o}
    inits = {t.name for t in g.initializer}
    graph_inputs = {v.name for v in g.input}
    found = {}
    for node in g.node:
        if node.op_type != "Pad" or (node.domain or "") not in ("", "ai.onnx"):
            continue
        for name in list(node.input)[1:4]:
            if name and name in producers and name not in found:
                chain = _chain(name, producers, inits, graph_inputs)
                if chain is not None:
                    found[name] = chain
    return found


def computed_bounds(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, list[onnx.NodeProto]]]:
    """{a Slice's starts/ends/axes/steps input computed from constants and fixed dimensions: (its value, the nodes
    that compute it, up to the Shapes)} (module docstring); onnx's shape inference runs only where such a chain reads
    a Shape."""
    from onnxprune.passes.constant_weights import _shape_feeds  # PLACEHOLDERS' sizes where a dimension is free
    from onnxprune.passes.shapes import infer_shapes

    g = model.graph
    producers = {o: n for n in g.node for o in n.output if o}
    inits = {t.name for t in g.initializer}
    graph_inputs = {v.name for v in g.input}
    names = [name for node in g.node if node.op_type == "Slice" and (node.domain or "") in ("", "ai.onnx")
             for name in list(node.input)[1:5] if name and name in producers]
    dims = None
    found: dict[str, tuple[np.ndarray, list[onnx.NodeProto]]] = {}
    for name in dict.fromkeys(names):
        chain = constant_chain(name, producers, inits, graph_inputs, max_nodes=MAX_CHAIN)
        if chain is None:
            dims = infer_shapes(model) if dims is None else dims
            chain = constant_chain(name, producers, inits, graph_inputs, max_nodes=MAX_CHAIN,
                                   shaped=frozenset(n for n, d in dims.items() if d is not None))
        if chain is None or all(n.op_type == "Constant" for n in chain[0]):
            continue  # a lone Constant node is read as the constant it is already
        nodes, leaves = chain
        values = []
        for shapes in _shape_feeds(nodes, leaves, dims):
            fed = [onnx.helper.make_node("Constant", [], [n.output[0]],
                                         value=numpy_helper.from_array(shapes[n.output[0]]))
                   if n.op_type == "Shape" and n.output[0] in shapes else n for n in nodes]
            values.append(_evaluate(model, name, fed))
        if values and all(v is not None and v.shape == values[0].shape and v.tobytes() == values[0].tobytes()
                          for v in values):
            found[name] = (values[0], nodes)
    return found


def _evaluate(model: onnx.ModelProto, name: str, chain: list[onnx.NodeProto]) -> np.ndarray | None:
    from onnx.reference import ReferenceEvaluator

    from onnxprune.passes.constant_weights import _ordered

    nodes = _ordered(chain)
    needed = {i for n in nodes for i in n.input}
    inits = [t for t in model.graph.initializer if t.name in needed]
    out = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)
    graph = onnx.helper.make_graph(nodes, "pads", [], [out], inits)
    sub = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    try:
        (value,) = ReferenceEvaluator(sub).run(None, {})
    except Exception as exc:  # noqa: BLE001 - an op the reference does not run: the Pad stays as it was
        log.debug("constant-pads: could not evaluate '%s' (%s)", name, exc)
        return None
    value = np.asarray(value)
    return value if value.size <= MAX_VALUES else None


@register_pass("constant-pads")
class ConstantPads(Pass):
    """Evaluate a Pad's constant-computed pads (value, axes) once and store them as an initializer."""

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        found = computed_pads(model)
        values = {name: v for name, chain in found.items() if (v := _evaluate(model, name, chain)) is not None}
        for name, (value, nodes) in computed_bounds(model).items():
            found[name], values[name] = nodes, value
        if not values:
            return PassResult(model, False)
        g = model.graph
        drop = {id(n) for name in values for n in g.node if name in n.output}
        for name, value in values.items():
            g.initializer.append(numpy_helper.from_array(value, name))
        keep = [n for n in g.node if id(n) not in drop]
        chained = {id(n) for name in values for n in found[name]}
        while True:  # the chain's other nodes, once nothing reads them
            read = {i for n in keep for i in n.input} | frozen_names(g)
            dead = {id(n) for n in keep if id(n) in chained and not any(o in read for o in n.output if o)}
            if not dead:
                break
            keep = [n for n in keep if id(n) not in dead]
        keep = [onnx.NodeProto.FromString(n.SerializeToString()) for n in keep]
        del g.node[:]
        g.node.extend(keep)
        for v in [v for v in g.value_info if v.name in values]:
            g.value_info.remove(v)
        log.debug("constant-pads: %d Pad input(s) computed from constants stored as initializers", len(values))
        return PassResult(model, True)

    def ensures(self, model: onnx.ModelProto, state: PruneState) -> None:
        check_reads(model, self.name)
