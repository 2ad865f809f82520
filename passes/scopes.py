"""The main graph and its If/Loop/Scan bodies: walk every scope, find constants wherever they live, and edit
bodies safely.

ONNX names are unique across a model's scopes (a body may read outer names, never redefine them), so a constant is
found by name alone. A body reads the outer names it uses without declaring them: `outer_reads(node)` lists them,
`body_definitions(node)` lists what its bodies define.

Editing protobuf: re-filling a graph's node list (``del g.node[:]; g.node.extend(...)``) copies its nodes, bodies
included, so references taken before into those bodies point at detached copies. Edit inner bodies first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import onnx

FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.DOUBLE,
}


@dataclass(frozen=True)
class Scope:
    graph: onnx.GraphProto
    path: str  # "" for the main graph


def scopes(graph: onnx.GraphProto, path: str = "") -> Iterator[Scope]:
    """The graph and, depth first, every body graph of its nodes."""
    yield Scope(graph, path)
    for node in graph.node:
        for attr in node.attribute:
            for k, g in enumerate(([attr.g] if attr.HasField("g") else []) + list(attr.graphs)):
                label = attr.name if attr.HasField("g") else f"{attr.name}[{k}]"
                inner = f"{node.op_type} '{node.name}'/{label}"
                yield from scopes(g, f"{path}/{inner}" if path else inner)


@dataclass
class ScopeIndex:
    """Producers, consumers and constants over all scopes; names are unique across scopes in valid ONNX."""

    consts: dict[str, onnx.TensorProto] = field(default_factory=dict)
    producers: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    scope_of: dict[int, str] = field(default_factory=dict)  # id(node) -> scope path
    reused: set[str] = field(default_factory=set)  # constant names defined in more than one scope
    # a Loop body input that every iteration passes on unchanged (body output = the same name) -> the Loop's input
    # for it: tf2onnx hands a Keras RNN's weights to its while-loop this way (loop_invariants below)
    carried: dict[str, str] = field(default_factory=dict)
    # the outputs of those Identity nodes (not uses of the value); by name, as names are unique across scopes: the
    # id() of a node read from a body is that of a wrapper protobuf (upb) may drop and make anew, and with two or
    # more hand-backs the ids kept matched none of the body's nodes (jax2onnx's lax.scan, sweep 19)
    pass_back: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, model: onnx.ModelProto) -> "ScopeIndex":
        ix = cls()
        for sc in scopes(model.graph):
            for name, tensor in local_constants(sc.graph).items():
                if name in ix.consts:
                    ix.reused.add(name)
                ix.consts.setdefault(name, tensor)
            for n in sc.graph.node:
                ix.scope_of[id(n)] = sc.path
                for o in n.output:
                    ix.producers.setdefault(o, n)
                for i in n.input:
                    if i:
                        ix.consumers.setdefault(i, []).append(n)
                for name, (outer, hand_back) in loop_invariants(n).items():
                    ix.carried[name] = outer
                    if hand_back is not None:
                        ix.pass_back.add(hand_back.output[0])
        return ix

    def uses(self, name: str) -> list[onnx.NodeProto]:
        """The nodes that read `name`, less the Identity that hands a loop-invariant value back to its Loop."""
        return [n for n in self.consumers.get(name, [])
                if not (n.op_type == "Identity" and n.output and n.output[0] in self.pass_back)]

    def nodes(self, model) -> Iterator[onnx.NodeProto]:
        return all_nodes(model)


def loop_invariants(node: onnx.NodeProto) -> dict[str, tuple[str, onnx.NodeProto | None]]:
    """A Loop's loop-carried values that no iteration changes: body input name -> (the Loop input that sets it,
    the Identity that hands it back, or None when the body output is the input itself).

    Loop inputs are (M, cond, v_1..v_N), body inputs (iter, cond, v_1..v_N), body outputs (cond, v_1..v_N, scans);
    v_k is invariant when the body's output for it is its own input (by name, or through one Identity)."""
    if node.op_type != "Loop" or (node.domain or "") not in ("", "ai.onnx"):
        return {}
    body = next((a.g for a in node.attribute if a.name == "body" and a.HasField("g")), None)
    if body is None:
        return {}
    # an Identity that only hands the value back is not a use of it (ScopeIndex.uses)
    identity = {n.output[0]: n for n in body.node if n.op_type == "Identity" and n.input and n.output}
    out = {}
    for j in range(2, min(len(body.input), len(node.input))):
        k = j - 1  # the body output carrying v_{j-1}
        if k >= len(body.output) or not node.input[j]:
            continue
        name, back = body.input[j].name, body.output[k].name
        if back == name:
            out[name] = (node.input[j], None)
        elif back in identity and identity[back].input[0] == name:
            out[name] = (node.input[j], identity[back])
    return out


def local_constants(graph) -> dict[str, onnx.TensorProto]:
    out = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = attr.t
    return out


def readers_of(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Each name the graph's own nodes read (not its bodies') -> those nodes, in graph order."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def all_constants(graph) -> dict[str, onnx.TensorProto]:
    """Every dense constant of the graph and its bodies, by name (the first definition wins)."""
    out: dict[str, onnx.TensorProto] = {}
    for sc in scopes(graph):
        for name, tensor in local_constants(sc.graph).items():
            out.setdefault(name, tensor)
    return out


def constant_homes(model: onnx.ModelProto) -> dict[str, tuple[onnx.GraphProto, onnx.NodeProto | None]]:
    """Constant name -> (the graph that defines it, its Constant node or None for an initializer)."""
    out: dict[str, tuple[onnx.GraphProto, onnx.NodeProto | None]] = {}
    for sc in scopes(model.graph):
        for t in sc.graph.initializer:
            out.setdefault(t.name, (sc.graph, None))
        for node in sc.graph.node:
            if node.op_type == "Constant" and any(a.name == "value" for a in node.attribute):
                out.setdefault(node.output[0], (sc.graph, node))
    return out


def drop_constant(model: onnx.ModelProto, name: str) -> bool:
    """Remove constant `name` (an initializer or a Constant node, in any scope) from `model`, in place, so it can
    be fed as a graph input instead (bodies see outer-scope names). Returns whether it was found."""
    home = constant_homes(model).get(name)
    if home is None:
        return False
    graph, node = home
    if node is None:
        kept = [t for t in graph.initializer if t.name != name]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    else:
        kept_nodes = [n for n in graph.node if n is not node]
        del graph.node[:]
        graph.node.extend(kept_nodes)
    return True


def drop_local_constants(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove the graph's own constants `names` (initializers and Constant nodes), in place."""
    kept = [t for t in graph.initializer if t.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    kept_nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output and n.output[0] in names)]
    del graph.node[:]
    graph.node.extend(kept_nodes)


def body_definitions(node: onnx.NodeProto) -> set[str]:
    """Names defined inside `node`'s bodies (their inputs, initializers and node outputs), at any depth."""
    names: set[str] = set()
    for attr in node.attribute:
        for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for sc in scopes(g):
                names.update(i.name for i in sc.graph.input)
                names.update(t.name for t in sc.graph.initializer)
                names.update(o for n in sc.graph.node for o in n.output)
    return names


def outer_reads(node: onnx.NodeProto) -> set[str]:
    """Names `node`'s bodies read from the enclosing scopes (what the node really depends on besides its inputs)."""
    read: set[str] = set()
    for attr in node.attribute:
        for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for sc in scopes(g):
                read.update(i for n in sc.graph.node for i in n.input if i)
    return read - body_definitions(node)


def rename_reads(graph: onnx.GraphProto, rename: dict[str, str], *, bodies: bool = True) -> None:
    """Every node of `graph` (and, with `bodies`, of its bodies at any depth: a body reads outer names) reads
    rename[name] where it read name; the renamed names' value_info goes (a declared type would no longer hold)."""
    for sc in scopes(graph) if bodies else [Scope(graph, "")]:
        for node in sc.graph.node:
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
        for v in [v for v in sc.graph.value_info if v.name in rename]:
            sc.graph.value_info.remove(v)


def all_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node of the main graph and of its bodies, depth first."""
    for sc in scopes(model.graph):
        yield from sc.graph.node


def hoist_body_constants(model: onnx.ModelProto) -> list[str]:
    """Move the float constants of If/Loop/Scan bodies (body initializers, Constant nodes) into the main graph's
    initializers, in place; bodies read them from the outer scope, so the model computes the same. Returns the
    names moved. What the torch bridge trains are main-graph initializers: this makes body weights trainable.

    Left in place: names defined in several scopes, non-float constants, and everything when IR < 4 (there an
    initializer must also be a graph input)."""
    if model.ir_version < 4:
        return []
    ix = ScopeIndex.of(model)
    taken = {t.name for t in model.graph.initializer}
    moved: list[onnx.TensorProto] = []
    for sc in reversed(list(scopes(model.graph))[1:]):  # inner bodies first (module docstring)
        local = local_constants(sc.graph)
        names = {n for n, t in local.items() if t.data_type in FLOAT_TYPES and n not in ix.reused and n not in taken}
        if not names:
            continue
        for name in sorted(names):
            t = onnx.TensorProto()
            t.CopyFrom(local[name])
            t.name = name
            moved.append(t)
        kept_inits = [t for t in sc.graph.initializer if t.name not in names]
        kept_nodes = [n for n in sc.graph.node if not (n.op_type == "Constant" and n.output[0] in names)]
        del sc.graph.initializer[:]
        sc.graph.initializer.extend(kept_inits)
        del sc.graph.node[:]
        sc.graph.node.extend(kept_nodes)
    model.graph.initializer.extend(moved)
    return [t.name for t in moved]


def lift_constants(model: onnx.ModelProto) -> list[str]:
    """Main-graph Constant nodes of float tensors (not scalars) become initializers of the same name, in place (what
    reads them reads the same values); returns the names lifted. What the torch bridge trains and differentiates
    are initializers: paddle2onnx writes every weight and bias as a Constant node, and those were frozen in
    retraining and had no gradient statistics. Left as they are: graph outputs, and everything when IR < 4 (there an
    initializer must also be a graph input)."""
    if model.ir_version < 4:
        return []
    taken = {o.name for o in model.graph.output} | {t.name for t in model.graph.initializer}
    lifted: list[onnx.TensorProto] = []
    kept: list[onnx.NodeProto] = []
    for node in model.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is not None and node.output[0] not in taken and value.data_type in FLOAT_TYPES and value.dims:
            t = onnx.TensorProto()
            t.CopyFrom(value)
            t.name = node.output[0]
            lifted.append(t)
        else:
            kept.append(node)
    if lifted:
        del model.graph.node[:]
        model.graph.node.extend(kept)
        model.graph.initializer.extend(lifted)
    return [t.name for t in lifted]


def constant_chain(name: str, producers: dict, consts, inputs, *, max_nodes: int, never: tuple[str, ...] = (),
                   shaped: frozenset[str] | set[str] = frozenset()) -> tuple[list[onnx.NodeProto], list[str]] | None:
    """(the nodes computing `name` from constants alone, the constants with no producer they read) or None when a
    graph or body input (`inputs`), a name nothing defines, a node of another domain or with a body, an op whose name
    starts with one of `never`, or more than `max_nodes` nodes take part (passes/constant_pads.py,
    passes/constant_weights.py). A Shape node reading a tensor in `shaped` (whose rank is known) is part of the chain
    and ends it there: the caller gives it its value."""
    nodes: dict[int, onnx.NodeProto] = {}
    leaves: list[str] = []
    stack = [name]
    while stack:
        t = stack.pop()
        if not t:
            continue
        node = producers.get(t)
        if node is None:
            if t in consts and t not in inputs:
                if t not in leaves:
                    leaves.append(t)
                continue
            return None
        if id(node) in nodes:
            continue
        if (node.domain or "") not in ("", "ai.onnx") or (never and node.op_type.startswith(never)) or any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return None
        nodes[id(node)] = node
        if len(nodes) > max_nodes:
            return None
        if node.op_type == "Shape" and node.input[0] in shaped:
            continue
        stack.extend(node.input)
    return list(nodes.values()), leaves
