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


def _evaluate(model: onnx.ModelProto, name: str, chain: list[onnx.NodeProto]) -> np.ndarray | None:
    from onnx.reference import ReferenceEvaluator

    order = {id(n): k for k, n in enumerate(model.graph.node)}
    nodes = sorted(chain, key=lambda n: order[id(n)])
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
