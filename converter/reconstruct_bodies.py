"""Layer-wise reconstruction inside If branches and Loop bodies: the capture side of converter/reconstruct.py.

A layer inside a body is refit like any other; what differs is how its input and its dense output are read. A
*capture* is (tensor, scope): the tensor as the graph at `scope` sees it (scope: the path of (node index, body
attribute) pairs from the main graph to the body, () for the main graph). `expose` threads each capture out to a
main-graph output on a copy of the model, innermost body first:

    If    the branch that holds it outputs it (through an Identity); the other branch outputs an empty tensor of the
          same element type (If allows the branches' shapes to differ), and the If node gets one more output. A
          sample whose batch took the other branch yields 0 rows, so a weight read in both branches (an
          outer-scope tensor) gets the rows of each batch from the branch that ran.
    Loop  the body outputs it as one more scan output (after the existing ones; the Loop node's outputs grow
          accordingly): onnxruntime stacks it over the iterations, and `unstack` folds iterations into the batch
          axis (rows = iterations x samples).

A layer in a body captures its input in its own scope even when the body reads it from outside (a Loop's
per-iteration rows must line up with its output's). The dense target is the same capture on the dense model.
The model the user gets is never changed here: captures run on temporary copies.

`dependencies` is the wave order's view of the graph across scopes: a body tensor depends on the Loop's or If's
inputs and the outer tensors the body reads, and a Loop's loop-carried body inputs also on what the body computed
the iteration before. A layer whose input depends on its own output (a recurrent MatMul h_{t-1}·R in a Loop body)
takes that input from the dense model (teacher forcing, as converter/reconstruct_recurrent.py does for LSTM/GRU
states: fitted to its own pruned states the refit learns to undo errors of a trajectory it then no longer
produces). Measured on the corpus's keras_gru_tf2onnx (tf2onnx's while-Loop GRU step, its two MatMuls on
loop-invariant weights; every layer at one magnitude sparsity, refit on 160 calibration samples, top-1 agreement
with the dense model on the other 80 calibration samples): 50%: pruned 0.76, refit on the pruned model's own
states 0.88, teacher-forced 0.98; 70%: 0.44, 0.58, 0.94.

`why_not` says which body layers are left as pruned: in a Scan body (its per-iteration slices are not exposed
here), in an If inside a Loop (a branch's tensor and the other branch's empty one cannot be stacked over
iterations), and an LSTM/GRU/RNN in a Loop body (its per-step rows would be stacked twice). A weight a Loop body
changes per iteration is not a weight at all (passes/weights.py only follows loop-invariant Loop inputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

Scope = tuple[tuple[int, str], ...]  # (node index, body attribute) from the main graph inwards
Capture = tuple[str, Scope]
THREADED = ("If", "Loop")  # bodies a capture is threaded out of


def bodies(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    return [(a.name, a.g) for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]


@dataclass(frozen=True)
class Place:
    """Where a node sits: its scope and the op types of the bodies around it (outermost first)."""

    scope: Scope
    ops: tuple[str, ...]
    node: onnx.NodeProto | None = None  # held so that id(node) stays this node's while the map lives


def places(graph: onnx.GraphProto, scope: Scope = (), ops: tuple[str, ...] = ()) -> dict[int, Place]:
    """id(node) -> Place, for every node of the graph and its bodies, in graph order (a node before its bodies').

    Keep the map while using the ids: protobuf hands out a new wrapper per access once the old one is gone."""
    out: dict[int, Place] = {}
    for i, node in enumerate(graph.node):
        out[id(node)] = Place(scope, ops, node)
        for attr, g in bodies(node):
            out.update(places(g, scope + ((i, attr),), ops + (node.op_type,)))
    return out


def why_not(place: Place, op_type: str, recurrent: bool, scope_text: str) -> str | None:
    """Why a layer at `place` cannot be refit from captures, or None when it can."""
    other = next((op for op in place.ops if op not in THREADED), None)
    if other is not None:
        return f"inside a {other} body ({scope_text}): its tensors are not captured; left as pruned"
    if "Loop" in place.ops and "If" in place.ops[place.ops.index("Loop"):]:
        return (f"inside an If within a Loop body ({scope_text}): a branch's tensors cannot be stacked over "
                "iterations; left as pruned")
    if recurrent and "Loop" in place.ops:
        return f"{op_type} inside a Loop body ({scope_text}): its per-step rows are not unstacked; left as pruned"
    return None


def _graph_at(model: onnx.ModelProto, scope: Scope) -> tuple[onnx.GraphProto, list[onnx.NodeProto]]:
    """The body graph at `scope` and the If/Loop nodes around it (outermost first)."""
    graph, chain = model.graph, []
    for index, attr in scope:
        node = graph.node[index]
        chain.append(node)
        graph = next(g for a, g in bodies(node) if a == attr)
    return graph, chain


def expose(model: onnx.ModelProto, captures: list[Capture], types: dict[str, int]) -> dict[Capture, tuple[str, int]]:
    """Thread every capture out to a main-graph tensor, in place on `model` (a copy). Returns capture -> (main-graph
    name, how many Loops stacked it). Main-graph captures map to themselves."""
    current: dict[Capture, tuple[str, Scope, int]] = {c: (c[0], c[1], 0) for c in dict.fromkeys(captures)}
    done: dict[tuple[str, Scope], str] = {}  # (tensor, scope) already threaded one level out -> its new name
    while any(scope for _, scope, _ in current.values()):
        depth = max(len(scope) for _, scope, _ in current.values())
        for cap, (name, scope, stacks) in list(current.items()):
            if len(scope) != depth:
                continue
            key = (name, scope)
            if key not in done:  # the element type is the captured tensor's (the threaded names have none)
                done[key] = _thread(model, name, scope, types.get(cap[0]) or onnx.TensorProto.FLOAT)
            outer = scope[:-1]
            looped = _graph_at(model, outer)[0].node[scope[-1][0]].op_type == "Loop"
            current[cap] = (done[key], outer, stacks + int(looped))
    return {c: (name, stacks) for c, (name, _, stacks) in current.items()}


def _thread(model: onnx.ModelProto, name: str, scope: Scope, elem: int) -> str:
    """Make tensor `name` of the body at `scope` an output of the If/Loop node that holds it; returns that output."""
    parent, _ = _graph_at(model, scope[:-1])
    index, attr = scope[-1]
    node = parent.node[index]
    if node.op_type not in THREADED:
        raise ValueError(f"{node.op_type} '{node.name}': captures are threaded out of If/Loop bodies only")
    tag = "/".join(f"{i}.{a}" for i, a in scope)
    out = f"{name}::{tag}::out"
    graphs = dict(bodies(node))
    n_outputs = len(graphs[attr].output) - (1 if node.op_type == "Loop" else 0)
    while len(node.output) < n_outputs:  # omitted trailing outputs get names, so the new one lands last
        node.output.append(f"{node.name}::unused{len(node.output)}")
    for a, g in graphs.items():
        inner = f"{name}::{tag}::{a}"
        if a == attr:
            g.node.append(helper.make_node("Identity", [name], [inner], name=f"{inner}::capture"))
        else:  # the other branch ran: 0 rows for this sample
            g.node.append(helper.make_node("Constant", [], [inner], name=f"{inner}::absent",
                                           value=helper.make_tensor("", elem, [0], [])))
        g.output.append(helper.make_tensor_value_info(inner, elem, None))
    node.output.append(out)
    return out


def unstack(value: np.ndarray, stacks: int) -> np.ndarray:
    """Fold the iteration axes a Loop's scan outputs added into the batch axis."""
    if stacks == 0 or value.size == 0:
        return value
    return value.reshape(-1, *value.shape[stacks + 1:])


def dependencies(graph: onnx.GraphProto, marks: dict[str, int], upstream: dict[str, frozenset] | None = None
                 ) -> dict[str, frozenset]:
    """tensor -> the marks (layer indices, keyed by the tensors they produce) it depends on, across every scope."""
    upstream = {} if upstream is None else upstream

    def deps(names):
        return frozenset().union(*(upstream.get(n, frozenset()) for n in names if n))

    for node in graph.node:
        base = deps(node.input)
        inner = frozenset()
        subs = bodies(node)
        for _ in range(2 if node.op_type in ("Loop", "Scan") and subs else 1 if subs else 0):
            for _, g in subs:
                for k, v in enumerate(g.input):  # Loop: iteration, condition, then the carried values
                    carried = node.op_type == "Loop" and k >= 2
                    upstream[v.name] = base | (inner if carried else frozenset())
                dependencies(g, marks, upstream)
                inner = inner | deps(o.name for o in g.output)
        out = base | inner
        for o in node.output:
            upstream[o] = out | {marks[o]} if o in marks else out
    return upstream
