"""Which If branches the calibration data runs, and so which weights a budget has evidence about.

A weight in a branch that no calibration sample takes has no evidence behind it. The sensitivity scan sees no loss
when it is pruned (its branch never runs), so a budget prunes it as far as the search goes, and verification on the
same data cannot see it either. Measured on silero_vad: its calibration chunks are all 16 kHz, and the 8 kHz
branch's Convs were pruned to about 0.4% of their weights under `--max-loss 1`; fed the held-out chunks at
sr=8000, the output probability moved by 0.20 on average. So with a budget such weights are kept as they are, and
the run says which branch and what would prune it (data that takes it); with a fixed `--sparsity` they are pruned as
asked and the run says that no sample checked them.

How: a copy of the input model counts how often each If branch runs. Every If gets a slot, and the copy one output,
a float32 vector of 2K counts for K Ifs ([then, else] per slot; float because every opset's Constant and Add take
it, and a count never rounds to zero). Each branch outputs its own one-hot count plus the counts of the Ifs inside
it, so the If node gets one more output whichever branch runs; a Loop or Scan body adds its counts to a value
carried over the iterations (zero at first), so its final value sums every iteration and a body that ran no
iteration counts nothing; a graph adds up what its nodes return. The copy runs once over the data (only that
output asked for); a branch ran when some batch counted it. Sketch, an If in a Scan body:

    before   Scan(h0, x) { h, x_t -> If(c) {then: a} {else: b} }
    counted  Scan(h0, zeros, x) { h, n, x_t -> If(c) {then: a, [1, 0]} {else: b, [0, 1]} as (h', m); n' = n + m }
             -> (h_T, n_T): n_T counts the steps that took each branch

So an If is counted wherever it sits: in the main graph; in a branch of another If (the inner one counts only on
the runs, and iterations, that took its outer branch: the other branch gives its own counts, zero for the inner);
in a Loop body; in a Scan body (opset 9+: a state after the existing ones, which leaves scan_input/output_axes and
directions as they are; opset 8's Scan, whose states carry a batch axis, gets a scan output instead, zero-padded by
onnxruntime past each sample's sequence_lens, summed over samples and steps after the node); and any nesting of
these. Nor does it need the branches' output types (exporters leave them out: the capture of each branch's first
output used before skipped such Ifs, 14 of silero_vad_op15's 24 branches, and so called its decoder's untaken
If_1 else branch and rnn/If_4 then branch run; the counts agree with their conditions read directly: If_1's
true and rnn/If_4's false on every calibration chunk). A node runs when every branch around it ran; a weight is
reached when every node reading it does. Cost: the counting run over silero_vad's 180 calibration chunks takes
0.75-0.93 s CPU against 0.90-0.97 s for the capture run it replaces (two runs each, a loaded machine).

Not counted, so their branches count as run: Ifs inside the graph attribute of an op other than the standard
If/Loop/Scan (a contrib op's body, whose semantics are not known here). A Loop or Scan that ran no iteration marks
its Ifs' branches untaken, not its body's other nodes (their weights stay prunable). The input model is never changed:
the counting runs on a copy.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxprune.converter.reconstruct_bodies import bodies
from onnxprune.errors import ConverterError
from onnxprune.plain import listed, more
from onnxprune.passes.scopes import ScopeIndex, local_constants, scopes

log = logging.getLogger(__name__)

COUNTED = ("If", "Loop", "Scan")  # ops whose bodies are counted
BRANCH = {"then_branch": 0, "else_branch": 1}  # an If branch's place in its slot's pair of counts
PREFIX = "onnxprune::coverage"


@dataclass
class Coverage:
    """Branches ("If 'name'/then_branch") no sample took, and the weights only such branches read; branches no
    input of the model's declared shapes can take (`static_conditions`), and what only they read."""

    untaken: list[str] = field(default_factory=list)
    unreached: dict[str, str] = field(default_factory=dict)  # weight -> the untaken branch around a reader
    dead: list[str] = field(default_factory=list)  # outermost branches no valid input takes
    # weight -> the dead branch around it: read by nothing but such branches (it never runs; left as it is)
    unused: dict[str, str] = field(default_factory=dict)

    def note(self, budgeted: bool) -> str | None:
        notes = []
        untaken = [w for w in self.unreached if w not in self.unused]
        if untaken:
            where = _listed(self.untaken)
            what = f"{len(untaken)} weight(s) read in branches no sample of --data took ({where})"
            notes.append(f"{what} were left as they are: the budget has no evidence about them; add samples that "
                         "take those branches to --data to prune them" if budgeted else
                         f"{what} were pruned as asked, but no sample checked them; add samples that take those "
                         "branches")
        if self.dead:
            what = (f"{len(self.unused)} weight(s) read only there are left as they are, and w" if self.unused
                    else "w")
            notes.append(f"{len(self.dead)} If branch(es) can take no input of the shapes the model declares "
                         f"({_listed(self.dead)}: the condition follows from those shapes alone); {what}eights they "
                         "share with the branches that run are pruned on those branches' evidence")
        return "; ".join(notes) or None


def _listed(labels: list[str]) -> str:
    return listed(labels)


# ops a condition computed from shapes alone goes through (static_conditions); any other leaves it to the data
_STATIC_OPS = frozenset({"Constant", "Shape", "Size", "Gather", "Squeeze", "Unsqueeze", "Cast", "Identity", "Not",
                         "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Slice",
                         "Concat", "Add", "Sub", "Mul", "ReduceProd", "Reshape", "CastLike"})


def static_conditions(model: onnx.ModelProto, ifs: list[onnx.NodeProto]) -> dict[int, bool]:
    """{id(If node): the branch it always takes (True: then)} for the Ifs whose condition follows from constants and
    the shapes the model declares or shape inference gives alone: torch.jit.script'ed models branch on
    `input.dim() == 3` or `state.shape[0]` (silero-vad's decoder: its state input is declared [2, batch, 128], so
    its no-state LSTM branch can never run; onnxruntime refuses a feed that breaks a declared dimension). A Shape
    (of an activation or an initializer) gives the dimensions known (unknown ones stay unknown: anything that reads
    one is not decided), Size of a Shape the rank; every other op computes on known values only."""
    from onnxprune.passes.shapes import infer_shapes

    shapes = infer_shapes(model)  # on a skeleton: no big weight copied; a failure leaves the declared shapes
    for t in model.graph.initializer:  # a weight's own dims: onnxscript's Conv tests `Size(Shape(weight))`, its rank
        shapes.setdefault(t.name, list(t.dims))
    ix = ScopeIndex.of(model)
    memo: dict[str, np.ndarray | None] = {}

    def value(name: str, depth: int = 0):
        if name in memo:
            return memo[name]
        memo[name] = None  # a cycle or a dead end stays unknown
        if name in ix.consts:
            memo[name] = onnx.numpy_helper.to_array(ix.consts[name])
            return memo[name]
        node = ix.producers.get(name)
        if node is None or depth > 32 or node.op_type not in _STATIC_OPS or (node.domain or "") not in ("",
                                                                                                        "ai.onnx"):
            return None
        try:
            memo[name] = _static(node, name, shapes, lambda i: value(i, depth + 1))
        except Exception:  # noqa: BLE001 - an op's inputs it cannot compute on: unknown
            memo[name] = None
        return memo[name]

    out = {}
    for node in ifs:
        cond = value(node.input[0])
        if cond is not None and np.asarray(cond).size == 1:
            out[id(node)] = bool(np.asarray(cond).reshape(()))
    return out


def dead_branches(model: onnx.ModelProto) -> list[str]:
    """The outermost If branches no input of the model's declared shapes can take ("If 'name'/else_branch"), as
    `branch_coverage` names them; `inspect` says them (no data needed)."""
    walked = list(_walk(model.graph))
    labels = _branch_labels(walked)
    dead = _dead(model, walked) if labels else set()
    return _outermost([label for key, label in labels.items() if key in dead])


def _branch_labels(walked) -> dict[tuple[int, str], str]:
    """{(slot, branch attribute): "If 'name'/then_branch"} for every counted If, in graph order."""
    return {(slot, attr): f"{label}/{attr}" for node, label, _, slot in walked if slot is not None
            for attr, _ in bodies(node)}


def _dead(model: onnx.ModelProto, walked) -> set[tuple[int, str]]:
    """The (slot, branch attribute) of every branch `static_conditions` says no valid input takes."""
    static = static_conditions(model, [node for node, _, _, slot in walked if slot is not None])
    return {(slot, "else_branch" if static[id(node)] else "then_branch") for node, _, _, slot in walked
            if slot is not None and id(node) in static}


def _outermost(labels: list[str]) -> list[str]:
    """The branches not inside another of `labels` (a branch inside a named one is implied by it)."""
    return [b for b in labels if not any(b.startswith(o + "/") for o in labels)]


def _static(node: onnx.NodeProto, name: str, shapes: dict, value) -> np.ndarray | None:
    """`name`'s value when `node` computes it from values `value` knows (None: unknown). A Shape is a float array
    with NaN for the unknown dimensions; only Gather/Slice/Size read through those, everything else needs all known."""
    op = node.op_type
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if op == "Constant":
        return onnx.numpy_helper.to_array(attrs["value"]) if "value" in attrs else None
    if op == "Shape":
        dims = shapes.get(node.input[0])
        if dims is None:
            return None
        dims = np.array([np.nan if d is None else d for d in dims], np.float64)
        return dims[attrs.get("start", 0): attrs.get("end", len(dims)) if "end" in attrs else None]
    ins = [value(i) if i else None for i in node.input]
    if op == "Size":
        x = ins[0]
        return None if x is None else np.array(x.size, np.int64)
    if any(x is None for k, x in enumerate(ins) if node.input[k]):
        return None
    if op in ("Gather", "Slice"):
        if op == "Gather":
            got = np.take(ins[0], ins[1].astype(np.int64), axis=attrs.get("axis", 0))
        else:
            starts, ends = ins[1].astype(np.int64), ins[2].astype(np.int64)
            axes = ins[3].astype(np.int64) if len(ins) > 3 and ins[3] is not None else range(len(starts))
            steps = ins[4].astype(np.int64) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
            index = [slice(None)] * ins[0].ndim
            for a, b, e, st in zip(axes, starts, ends, steps):
                index[a] = slice(int(b), int(e), int(st))
            got = ins[0][tuple(index)]
        return None if np.issubdtype(np.asarray(got).dtype, np.floating) and np.isnan(got).any() else _ints(got)
    if any(np.issubdtype(np.asarray(x).dtype, np.floating) and np.isnan(x).any() for x in ins if x is not None):
        return None
    x = [_ints(v) for v in ins]
    if op in ("Identity",):
        return x[0]
    if op == "Cast":
        return x[0].astype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if op == "CastLike":  # onnxscript's constants: CastLike(2, rank)
        return x[0].astype(np.asarray(x[1]).dtype)
    if op == "Not":
        return np.logical_not(x[0])
    if op in ("Squeeze", "Unsqueeze"):
        axes = attrs.get("axes", list(x[1].astype(np.int64)) if len(x) > 1 else None)
        if op == "Squeeze":
            return np.squeeze(x[0], axis=tuple(axes)) if axes is not None else np.squeeze(x[0])
        out = x[0]
        for a in sorted(int(a) % (out.ndim + len(axes)) for a in axes):
            out = np.expand_dims(out, a)
        return out
    if op == "Concat":
        return np.concatenate(x, axis=attrs.get("axis", 0))
    if op == "Reshape":
        return x[0].reshape([int(d) for d in x[1]]) if 0 not in list(x[1]) else None
    if op == "ReduceProd":
        return np.prod(x[0], keepdims=bool(attrs.get("keepdims", 1)))
    fn = {"Equal": np.equal, "Greater": np.greater, "Less": np.less, "GreaterOrEqual": np.greater_equal,
          "LessOrEqual": np.less_equal, "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
          "Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op]
    return fn(x[0], x[1])


def _ints(v) -> np.ndarray:
    """A Shape's float dims back to int64 once all known; other values as they are."""
    v = np.asarray(v)
    return v.astype(np.int64) if v.dtype == np.float64 and np.all(np.mod(v, 1) == 0) else v


def _walk(graph: onnx.GraphProto, path="", around=(), counted=True, slots=None):
    """(node, its path label, the If branches around it as (slot, attr), its slot or None) for every node of every
    scope, a node before its bodies. Ifs get slots in this order; `_Counter.graph` numbers them the same way."""
    slots = [0] if slots is None else slots
    for node in graph.node:
        label = f"{path}/{node.op_type} '{node.name}'" if path else f"{node.op_type} '{node.name}'"
        slot = None
        if counted and _counted(node) and node.op_type == "If":
            slot, slots[0] = slots[0], slots[0] + 1
        yield node, label, around, slot
        for attr, g in bodies(node):
            inner = around + ((slot, attr),) if slot is not None else around
            yield from _walk(g, f"{label}/{attr}", inner, counted and _counted(node), slots)


def _counted(node: onnx.NodeProto) -> bool:
    return node.op_type in COUNTED and node.domain in ("", "ai.onnx")


class _Counter:
    """Rewrites a copy of the model so that its only output counts how often each If branch ran (module
    docstring). One rule per op whose bodies are counted; each returns the tensor of the node's scope that holds
    the counts of one run of the node, or None when no If is inside."""

    def __init__(self, slots: int, opset: int):
        self.width, self.opset, self.next_slot, self.names = 2 * slots, opset, 0, 0
        self.zeros = self.name("zeros")

    def name(self, what: str) -> str:
        self.names += 1
        return f"{PREFIX}::{self.names}::{what}"

    def vector(self, name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [self.width])

    def constant(self, graph: onnx.GraphProto, values: np.ndarray, dtype=np.float32) -> str:
        out = self.name("constant")
        graph.node.append(helper.make_node("Constant", [], [out], name=out,
                                           value=onnx.numpy_helper.from_array(np.asarray(values).astype(dtype))))
        return out

    def add(self, graph: onnx.GraphProto, parts: list[str | None]) -> str | None:
        parts = [p for p in parts if p]
        total = parts[0] if parts else None
        for p in parts[1:]:
            out = self.name("sum")
            graph.node.append(helper.make_node("Add", [total, p], [out], name=out))
            total = out
        return total

    def graph(self, graph: onnx.GraphProto) -> str | None:
        """Counts of one run of `graph`; nodes appended for them go after the node list (topological order)."""
        parts = []
        for node in list(graph.node):
            if _counted(node):
                parts.append(_RULES[node.op_type](self, node, graph))
        return self.add(graph, parts)

    def if_(self, node: onnx.NodeProto, parent: onnx.GraphProto) -> str:
        slot, self.next_slot = self.next_slot, self.next_slot + 1
        branches = bodies(node)
        _name_outputs(node, len(branches[0][1].output))
        for attr, g in branches:
            mark = np.zeros(self.width, np.float32)
            mark[2 * slot + BRANCH[attr]] = 1
            out = self.add(g, [self.constant(g, mark), self.graph(g)])
            g.output.append(self.vector(out))
        node.output.append(self.name(f"{node.name}::counts"))
        return node.output[-1]

    def loop(self, node: onnx.NodeProto, parent: onnx.GraphProto) -> str | None:
        """Loop(M, cond, carried...): a carried value after the others (before the scan outputs)."""
        return self._carry(node, len(node.input) - 2, first_input=2, first_output=1)

    def scan(self, node: onnx.NodeProto, parent: onnx.GraphProto) -> str | None:
        """Scan-9+(states..., scan inputs...): a state after the others. Scan-8(sequence_lens, states..., scan
        inputs...) carries a batch axis on its states: a scan output [batch, steps, 2K] summed after the node."""
        scanned = next(a.i for a in node.attribute if a.name == "num_scan_inputs")
        if self.opset >= 9:
            return self._carry(node, len(node.input) - scanned, first_input=0, first_output=0)
        (_, body), = bodies(node)
        inner = self.graph(body)
        if inner is None:
            return None
        _name_outputs(node, len(body.output))
        body.output.append(self.vector(inner))
        node.output.append(self.name(f"{node.name}::steps"))
        out = self.name(f"{node.name}::counts")
        parent.node.append(helper.make_node("ReduceSum", [node.output[-1]], [out], axes=[0, 1], keepdims=0,
                                            name=out))
        return out

    def _carry(self, node: onnx.NodeProto, carried: int, first_input: int, first_output: int) -> str | None:
        """A carried value (zeros in, the body's counts added every iteration) after the node's `carried` existing
        ones: the node's and the body's inputs start them at `first_input`, the body's outputs at `first_output`,
        the node's outputs at 0 (then come the scan outputs)."""
        (_, body), = bodies(node)
        inner = self.graph(body)
        if inner is None:
            return None
        acc = self.name(f"{node.name}::before")
        total = self.add(body, [acc, inner])
        _name_outputs(node, len(body.output) - first_output)
        body.input.insert(first_input + carried, self.vector(acc))
        body.output.insert(first_output + carried, self.vector(total))
        node.input.insert(first_input + carried, self.zeros)
        node.output.insert(carried, self.name(f"{node.name}::counts"))
        return node.output[carried]


_RULES = {"If": _Counter.if_, "Loop": _Counter.loop, "Scan": _Counter.scan}


class _RowCounter(_Counter):
    """Rewrites a copy of the model so that its only output marks which rows of each embedding table its lookups
    read, wherever they sit (row_coverage: a table read inside a body). One float32 vector of every counted table's
    rows end to end (`tables`: name -> (offset, rows)); each lookup adds a one at offset + id for each id it reads
    (ScatterElements of ones into zeros; a negative id counts from the end, as Gather reads it), and the vector is
    carried out of If branches, Loop and Scan bodies as `_Counter` carries its counts (an If's branches mark
    nothing of their own here). torch's legacy export of `nn.EmbeddingBag` reads each table in a Loop body, one bag
    an iteration (sweep 28's DLRM: its three tables were left unpruned, "read inside an If/Loop/Scan body")."""

    def __init__(self, tables: dict[str, tuple[int, int]], opset: int):
        self.tables, self.opset, self.next_slot, self.names = tables, opset, 0, 0
        self.width = sum(rows for _, rows in tables.values())
        self.zeros = self.name("zeros")

    def graph(self, graph: onnx.GraphProto) -> str | None:
        from onnxprune.passes.opfacts import LOOKUP_OPS

        parts = []
        for node in list(graph.node):
            if node.op_type in LOOKUP_OPS and node.domain in ("", "ai.onnx") and node.input[0] in self.tables:
                parts.append(self.rows(node, graph))
            if _counted(node):
                parts.append(_RULES[node.op_type](self, node, graph))
        return self.add(graph, parts)

    def if_(self, node: onnx.NodeProto, parent: onnx.GraphProto) -> str:
        branches = bodies(node)
        _name_outputs(node, len(branches[0][1].output))
        for _, g in branches:  # both branches give a vector: zeros, plus what the branch's lookups read
            out = self.add(g, [self.constant(g, np.zeros(self.width, np.float32)), self.graph(g)])
            g.output.append(self.vector(out))
        node.output.append(self.name(f"{node.name}::rows"))
        return node.output[-1]

    def rows(self, node: onnx.NodeProto, graph: onnx.GraphProto) -> str:
        offset, rows = self.tables[node.input[0]]

        def op(op_type: str, inputs: list[str], **attrs) -> str:
            out = self.name(op_type)
            graph.node.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
            return out

        def ints(value: int, shape: tuple = ()) -> str:
            return self.constant(graph, np.full(shape, value), np.int64)

        flat = op("Reshape", [op("Cast", [node.input[1]], to=TensorProto.INT64), ints(-1, (1,))])
        pos = op("Where", [op("Less", [flat, ints(0)]), op("Add", [flat, ints(rows)]), flat])
        at = op("Add", [pos, ints(offset)])
        ones = op("Expand", [self.constant(graph, np.ones((), np.float32)), op("Shape", [at])])
        return op("ScatterElements", [self.constant(graph, np.zeros(self.width, np.float32)), at, ones], axis=0)


def rows_model(model: onnx.ModelProto, tables: dict[str, tuple[int, int]]) -> onnx.ModelProto | None:
    """A copy of `model` whose only output marks the rows of `tables` its lookups read (`_RowCounter`), or None (an
    opset before ScatterElements, or no lookup found)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    if opset < 11 or not tables:
        return None
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    counter = _RowCounter(tables, opset)
    total = counter.graph(copy.graph)
    if total is None:
        return None
    copy.graph.node.insert(0, helper.make_node("Constant", [], [counter.zeros], name=counter.zeros,
                                               value=onnx.numpy_helper.from_array(np.zeros(counter.width, np.float32))))
    del copy.graph.output[:]
    copy.graph.output.append(counter.vector(total))
    return copy


def _name_outputs(node: onnx.NodeProto, n: int) -> None:
    """Name the outputs a node leaves out at the end, so that one added after them lands where the body says."""
    while len(node.output) < n:
        node.output.append(f"{PREFIX}::{node.name}::unused{len(node.output)}")


def counting_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int] | None:
    """A copy of `model` whose only output counts each If branch's runs (module docstring), and the number of Ifs
    (slots, in `_walk`'s order); None when the model has no If that can be counted."""
    slots = sum(1 for *_, slot in _walk(model.graph) if slot is not None)
    if not slots:
        return None
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    opset = next((o.version for o in copy.opset_import if o.domain in ("", "ai.onnx")), 1)
    counter = _Counter(slots, opset)
    total = counter.graph(copy.graph)
    copy.graph.node.insert(0, helper.make_node("Constant", [], [counter.zeros], name=counter.zeros,
                                               value=onnx.numpy_helper.from_array(np.zeros(2 * slots, np.float32))))
    del copy.graph.output[:]  # only the counts: the outputs' own work is not needed
    copy.graph.output.append(counter.vector(total))
    return copy, slots


def branch_coverage(model: onnx.ModelProto, weights, reader) -> Coverage:
    """Which If branches `reader`'s samples take, and which of `weights` (PrunableWeight) only untaken branches read.
    One run of the counting copy of `model` over the reader; a model without If nodes is not run."""
    from onnxprune.calibration.runtime import make_session

    cov = Coverage()
    counting = counting_model(model)
    if counting is None:
        return cov
    copy, slots = counting
    session = make_session(copy, optimize=False)
    output = copy.graph.output[0].name
    counts = np.zeros(2 * slots, np.float64)
    for feeds in reader:
        counts += session.run([output], feeds)[0]
    walked = list(_walk(model.graph))
    labels = _branch_labels(walked)
    untaken = {key for key in labels if counts[2 * key[0] + BRANCH[key[1]]] == 0}
    conditions = {slot: _condition(model.graph, node) for node, _, around, slot in walked
                  if slot is not None and not around}
    for key in untaken:  # a main-graph If whose condition is an input: say what value takes the branch
        cond = conditions.get(key[0])
        if cond is not None:
            name, negated = cond
            wanted = (key[1] == "then_branch") != negated
            labels[key] += f" (taken when input '{name}' is {'true' if wanted else 'false'})"
    dead = _dead(model, walked)
    if dead - untaken:  # some sample took a branch decided dead: the decision is wrong, so the data decides
        log.debug("coverage: branches decided dead that ran: %s", sorted(dead - untaken))
        dead &= untaken
    cov.untaken = _outermost([label for key, label in labels.items() if key in untaken - dead])
    cov.dead = _outermost([label for key, label in labels.items() if key in dead])
    blocked: dict[str, str] = {}  # tensor read by a node in an untaken branch some input can take -> that branch
    only_dead: dict[str, str] = {}  # tensor read in a branch no valid input takes -> that branch
    for node, _, around, _ in walked:
        gone = next((labels[b] for b in around if b in dead), None)
        hit = next((labels[b] for b in around if b in untaken), None)
        for name in node.input:
            if gone:
                only_dead.setdefault(name, gone)
            elif hit:
                blocked.setdefault(name, hit)
    live = {name for node, _, around, _ in walked if not any(b in dead for b in around) for name in node.input}
    behind = _behind_untaken(model.graph, walked, untaken, blocked)
    for w in weights:
        if w.name in blocked:
            cov.unreached[w.name] = blocked[w.name]
        elif w.name in behind:
            cov.unreached[w.name] = behind[w.name]
        elif w.name in only_dead and w.name not in live:  # it never runs: no evidence and no need of any
            cov.unreached[w.name] = cov.unused[w.name] = only_dead[w.name]
    if cov.unreached:
        log.info("branches no sample took: %s", cov.untaken)
    return cov


def _reads(graph: onnx.GraphProto) -> set[str]:
    """Every name the nodes of `graph` and of its bodies read."""
    return {name for sc in scopes(graph) for node in sc.graph.node for name in node.input}


def _behind_untaken(graph: onnx.GraphProto, walked, untaken: set, blocked: dict[str, str]) -> dict[str, str]:
    """Main-graph tensors (weights among them) whose values reach the model's outputs only through If branches no
    sample took, or through an If's condition, and which such a branch reads through the main graph: an early exit's
    head computed outside the If (its output read by the exit branch, its confidence by the condition) that no sample
    left by; sweep 35: pruned to 1% on a file whose batch always took the deep branch, the exit then fired for 0% of
    the test images (79.3% before). -> the untaken branch it reaches. The condition's own evidence is no evidence of
    the values the branch returns."""
    slots = {id(node): slot for node, _, around, slot in walked if slot is not None and not around}
    live = {v.name for v in graph.output}
    for node in reversed(graph.node):
        if not any(o in live for o in node.output):
            continue
        if id(node) in slots:  # an If: its outputs are its taken branches' values, not its condition's
            for attr, g in bodies(node):
                if (slots[id(node)], attr) not in untaken:
                    live |= _reads(g)
        else:
            live.update(node.input)
            for _, g in bodies(node):
                live |= _reads(g)
    behind = {name: why for name, why in blocked.items() if name not in live}
    for node in reversed(graph.node):
        hit = next((behind[o] for o in node.output if o in behind), None)
        if hit:
            for name in node.input:
                if name and name not in live:
                    behind.setdefault(name, hit)
    return behind


def _condition(graph: onnx.GraphProto, node: onnx.NodeProto) -> tuple[str, bool] | None:
    """(the graph input an If's condition is, whether it is negated on the way) through Cast, Identity, Not,
    Squeeze/Unsqueeze/Reshape; None when it is computed (optimum's merged decoders read `use_cache_branch`)."""
    inputs = {i.name for i in graph.input}
    producers = {o: n for n in graph.node for o in n.output}
    name, negated = node.input[0], False
    for _ in range(8):
        if name in inputs:
            return name, negated
        p = producers.get(name)
        if p is None or p.op_type not in ("Cast", "Identity", "Not", "Squeeze", "Unsqueeze", "Reshape"):
            return None
        negated ^= p.op_type == "Not"
        name = p.input[0]
    return None


@dataclass
class RowCoverage:
    """Embedding tables (a Gather's table, passes/weights.py kind "embedding") whose rows the data does not all
    read: weight -> (rows read, rows). A row no sample reads has no evidence behind it: the scan sees no loss when
    it is pruned, and a user's input that reads it later meets whatever pruning left. Measured (sweep 9, an ID
    embedding of 6,000 items whose calibration set read 111): 5,922 rows were changed, and held-out samples reading
    an unread row crossed 0.5 on 2.18% of them against 0.51% for the rest."""

    partial: dict[str, tuple[int, int]] = field(default_factory=dict)
    unread: dict[str, list[int]] = field(default_factory=dict)  # a few of each table's unread rows, lowest first
    bodies: set[str] = field(default_factory=set)  # tables read inside a body whose rows could not be counted
    read: dict[str, np.ndarray] = field(default_factory=dict)  # a counted table's rows: True where a sample reads it

    def merge(self, other: "RowCoverage") -> "RowCoverage":
        """The rows read by either's data (--data and --val-data): a row one of them reads is read."""
        out = RowCoverage(bodies=self.bodies | other.bodies)
        for name in self.partial.keys() & other.partial.keys():
            if name in out.bodies:
                out.partial[name] = self.partial[name]
                continue
            read = self.read[name] | other.read[name]
            if not read.all():
                out.partial[name], out.read[name] = (int(read.sum()), len(read)), read
                out.unread[name] = [int(i) for i in np.flatnonzero(~read)[:3]]
        return out

    def reasons(self) -> dict[str, str]:
        return {n: ("read inside an If/Loop/Scan body, its rows not counted" if n in self.bodies else
                    f"{read:,} of {rows:,} rows read by --data") for n, (read, rows) in self.partial.items()}

    def _said(self, name: str) -> str:
        if name in self.bodies:
            return f"'{name}' read inside an If/Loop/Scan body, where its rows are not counted"
        read, rows = self.partial[name]
        return f"'{name}' {read:,} of {rows:,} rows{self._examples(name)}"

    def note(self, budgeted: bool, rows_apart: Collection[str] = ()) -> str | None:
        """What was done with the tables: under a budget, those in `rows_apart` pruned on their read rows alone
        (the others left whole); without one, pruned as asked."""
        if not self.partial:
            return None
        apart = [n for n in self.partial if n in rows_apart]
        whole = RowCoverage({n: v for n, v in self.partial.items() if n not in rows_apart}, self.unread, self.bodies)
        if apart and budgeted:
            what = "; ".join(self._said(n) for n in apart[:3])
            # said before the search: a rule, not an outcome (real models 51: chython-rxnmap's tables "were pruned"
            # in a run that kept the input model)
            said = (f"embedding table(s) whose rows --data does not all read ({what}{more(len(apart), 3)}) are "
                    "pruned, if at all, on the rows it reads only; the unread rows keep their input values, as the "
                    "budget has no evidence about them (data that reads them lets them be pruned)")
            rest = whole.note(budgeted)
            return f"{said}; {rest}" if rest else said
        what = "; ".join(self._said(n) for n in list(self.partial)[:3])
        head = f"embedding table(s) whose rows --data does not all read ({what}{more(len(self.partial), 3)})"
        if budgeted:
            return (f"{head} were left as they are: the budget has no evidence about the unread rows; data that "
                    "reads every row (every token id, category or item) lets them be pruned; a table some of whose "
                    "rows no input reaches (padding, reserved ids) is pruned only by a fixed --sparsity, unchecked")
        return f"{head} were pruned as asked, but no sample checked the unread rows"

    def _examples(self, name: str) -> str:
        rows = self.unread.get(name)
        return f", unread e.g. {', '.join(map(str, rows))}" if rows else ""


def _rows_in_bodies(model: onnx.ModelProto, tables, reader) -> dict[str, np.ndarray] | None:
    """Which rows of `tables` (read inside a body) the samples of `reader` read: {name: bool per row}, from one run
    of `rows_model`'s copy over the data; None when they cannot be counted (a lookup on another axis than 0, an
    opset before 11, or a copy onnxruntime does not run), and the tables then count as not all read."""
    from onnxprune.calibration.runtime import make_session
    from onnxprune.passes.opfacts import LOOKUP_OPS
    from onnxprune.passes.scopes import all_nodes

    if not tables:
        return None
    names = {w.name for w in tables}
    lookups = [n for n in all_nodes(model) if n.op_type in LOOKUP_OPS and n.input and n.input[0] in names]
    if any(a.name == "axis" and a.i != 0 for n in lookups for a in n.attribute):
        return None
    spans, offset = {}, 0
    for w in tables:
        spans[w.name] = (offset, int(w.shape[0]))
        offset += int(w.shape[0])
    try:  # the copy's rewrite and its run alike: a graph these rules do not foresee leaves the tables uncounted
        copy = rows_model(model, spans)
        if copy is None:
            return None
        session = make_session(copy, optimize=False)
        output = copy.graph.output[0].name
        read = np.zeros(offset, bool)
        for feeds in reader:
            read |= session.run([output], feeds)[0] > 0
    except Exception as exc:  # noqa: BLE001 - a copy the runtime refuses: the tables stay "not counted"
        log.debug("coverage: rows read inside bodies not counted (%s)", exc)
        return None
    return {name: read[o: o + rows] for name, (o, rows) in spans.items()}


def row_coverage(model: onnx.ModelProto, weights, reader) -> RowCoverage:
    """Which rows of each embedding table among `weights` the samples of `reader` read: the ids reaching each of the
    table's main-graph Gathers (a tied table's every lookup), read from the feeds when they are a graph input, from
    the constant they are, else from one run of a copy of the model whose outputs are those ids. A table read inside a
    body (If/Loop/Scan: torch's legacy `nn.EmbeddingBag`) is counted by one run of a copy that marks the rows its
    lookups read (`_rows_in_bodies`); where that cannot run, it counts as not all read."""
    from onnxprune.calibration.runtime import make_session

    cov = RowCoverage()
    tables = [w for w in weights if w.kind == "embedding"]
    if not tables:
        return cov
    from onnxprune.passes.opfacts import LOOKUP_OPS

    nodes = {n.name: n for n in model.graph.node}
    # every main-graph lookup of the table: a greedy decoder's embedding is read once a step, the first step's ids
    # a constant start token (sweep 27: "1 of 12 rows" where the data read 11)
    ids = {w.name: sorted({n.input[1] for n in model.graph.node if n.op_type in LOOKUP_OPS and len(n.input) > 1
                           and n.input[0] == w.name} | {nodes[w.node].input[1]})
           for w in tables if not w.scope and w.node in nodes}
    inside = [w for w in tables if w.name not in ids]
    counted = _rows_in_bodies(model, inside, reader)
    for w in inside:
        if counted is None:
            cov.partial[w.name] = (0, w.shape[0])
            cov.bodies.add(w.name)
        elif not counted[w.name].all():
            cov.partial[w.name] = (int(counted[w.name].sum()), w.shape[0])
            cov.unread[w.name] = [int(i) for i in np.flatnonzero(~counted[w.name])[:3]]
            cov.read[w.name] = counted[w.name]
    inputs = {i.name for i in model.graph.input}
    consts = local_constants(model.graph)
    made = consts.keys() | {n.output[0] for n in model.graph.node if n.op_type == "Constant" and n.output}
    computed = sorted({t for ts in ids.values() for t in ts if t not in inputs and t not in made})
    session, reads = None, set()
    if computed:  # only the nodes that compute the ids (onnxruntime runs every node of a session, fetched or not)
        from onnxprune.calibration.sensitivity import _GraphIndex, _prefix_model

        session = make_session(_prefix_model(model, _GraphIndex(model), computed, set(), None), optimize=False)
        reads = {i.name for i in session.get_inputs()}
    rows_of = {w.name: w.shape[0] for w in tables}
    seen = {n: np.zeros(rows_of[n], bool) for n in ids}
    for feeds in reader:
        values = (dict(zip(computed, session.run(computed, {k: v for k, v in feeds.items() if k in reads})))
                  if session is not None else {})
        for name, ts in ids.items():
            for t in ts:
                if t in feeds:
                    x = feeds[t]
                elif t in values:
                    x = values[t]
                elif t in consts:
                    x = onnx.numpy_helper.to_array(consts[t])
                else:
                    continue
                x = np.asarray(x).astype(np.int64).reshape(-1)
                rows = len(seen[name])
                x = np.where(x < 0, x + rows, x)
                seen[name][x[(x >= 0) & (x < rows)]] = True
    for name, s in seen.items():
        if not s.all():
            cov.partial[name] = (int(s.sum()), len(s))
            cov.unread[name] = [int(i) for i in np.flatnonzero(~s)[:3]]
            cov.read[name] = s
    if cov.partial:
        log.info("embedding rows read by the data: %s", {n: f"{r} of {t}" for n, (r, t) in cov.partial.items()})
    return cov


@dataclass
class FeatureCoverage:
    """Input features a first layer reads that have one value in every sample of the data (0 for a pixel no
    calibration image inks, or what a scaler makes of it): weight -> (its input axis, a bool per feature, True where
    no sample differs). Pruning a weight on such a feature moves every sample alike (by nothing when the value is 0),
    so what it does to an input that varies there was never measured. Measured (sweep 29, scikit-learn's scaler +
    PCA + SVC on MNIST, 250 calibration images): 2.19x "0 of 187 changed", 1.75% of 2,000 test images changed, 5.0%
    of those with ink where no calibration image had any against 1.5% of the rest."""

    unseen: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)

    def note(self, original: onnx.ModelProto, pruned: onnx.ModelProto) -> str | None:
        """What the run says when it pruned weights on such features (None when it pruned none)."""
        from onnxprune.passes.weights import constant_tensors

        before, after = constant_tensors(original), constant_tensors(pruned)
        count, said = 0, []
        for name, (axis, unseen) in self.unseen.items():
            if name not in before or name not in after:
                continue
            w0, w1 = (np.moveaxis(onnx.numpy_helper.to_array(t[name]), axis, 0) for t in (before, after))
            if w0.shape != w1.shape:
                continue
            gone = int(np.count_nonzero((w0[unseen] != 0) & (w1[unseen] == 0)))
            if gone:
                count += gone
                said.append(f"weight '{name}': {int(unseen.sum()):,} of its {len(unseen):,} input features, "
                            f"{_indices(np.flatnonzero(unseen))}")
        if not count:
            return None
        return (f"{count:,} pruned weight(s) read input features that have one value in every sample of --data "
                f"({'; '.join(said[:3])}{' ...' if len(said) > 3 else ''}): no sample measured them, so an input "
                "with values there may change more than the budget says; samples that vary there would measure "
                "them")


def _indices(at: np.ndarray) -> str:
    """Which features, by index along the weight's input axis: the first few. Real models 48: a surfaces surrogate
    was said to prune weights on "'coefficient' 1 of 4 features", which named the weight and left the newcomer to
    guess that feature 1 ('dataset', one value for a one-dataset function) was meant."""
    head = ", ".join(str(int(i)) for i in at[:4])
    return f"feature{'s' if len(at) > 1 else ''} {head}{', ...' if len(at) > 4 else ''}"


def feature_coverage(model: onnx.ModelProto, weights, reader) -> FeatureCoverage:
    """The features of each first fully connected layer (a main-graph MatMul/Gemm weight whose input no prunable
    weight precedes: what the model's inputs become before any learned layer) that have one value in every sample
    of `reader`, from one run of the nodes that compute those layers' inputs (sensitivity's prefix model:
    onnxruntime runs every node of a session whatever is fetched). A tied weight's features are judged on every
    reader's input: one value in each (a Keras Dense shared by four crops), else not said."""
    from onnxprune.calibration.sensitivity import _GraphIndex

    index = _GraphIndex(model)
    layer_nodes = {w.node for w in weights}

    def first(x: str) -> bool:
        todo, seen = [x], set()
        while todo:
            i = index.producer.get(todo.pop())
            if i is None or i in seen:
                continue
            seen.add(i)
            if index.nodes[i].name in layer_nodes:
                return False
            todo.extend(index.inputs[i])
        return True

    nodes = {n.name: n for n in index.nodes}
    layers = {}
    for w in weights:
        node = nodes.get(w.node)
        if (w.scope or w.kind != "fc" or w.in_axis is None or node is None or node.op_type not in ("MatMul", "Gemm")
                or w.input_index != 1 or len(w.shape) != 2):
            continue
        # a tied weight (Keras' shared Dense over four crops): a feature is unseen only where every reader's input
        # has one value; each reader must be a first layer of the same op reading the same operand
        readers = [n for n in index.nodes if n.op_type == node.op_type and len(n.input) > 1
                   and n.input[1] == node.input[1]]
        if len(readers) != w.readers or any(_transposes_a(n) or not first(n.input[0]) for n in readers):
            continue
        layers[w.name] = ([n.input[0] for n in readers], w.in_axis, w.shape[w.in_axis])
    if not layers:
        return FeatureCoverage()
    try:
        return _feature_coverage(model, index, layers, reader)
    except ConverterError:  # the data's own errors: said by the step that reads it, as before
        raise
    except Exception as exc:  # noqa: BLE001 - a model the data does not run is said by the data's check, by name
        log.debug("input features not counted: %s", exc)
        return FeatureCoverage()


def _transposes_a(node: onnx.NodeProto) -> bool:
    return node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute)


def _feature_coverage(model: onnx.ModelProto, index, layers: dict, reader) -> FeatureCoverage:
    from onnxprune.calibration.runtime import make_session
    from onnxprune.calibration.sensitivity import _prefix_model

    cov = FeatureCoverage()
    inputs = {i.name for i in model.graph.input}
    outs = sorted({x for xs, _, _ in layers.values() for x in xs if x not in inputs})
    session = make_session(_prefix_model(model, index, outs, set(), None), optimize=False) if outs else None
    reads = {i.name for i in session.get_inputs()} if session is not None else set()  # the inputs the prefix reads
    varies = {name: np.zeros(size, bool) for name, (_, _, size) in layers.items()}
    first_row: dict[tuple[str, str], np.ndarray] = {}
    for feeds in reader:
        values = (dict(zip(outs, session.run(outs, {k: v for k, v in feeds.items() if k in reads})))
                  if session is not None else {})
        for name, (xs, _, size) in layers.items():
            for x in xs:
                v = feeds.get(x) if x in inputs else values.get(x)
                if v is None:
                    continue
                v = np.asarray(v)
                if v.ndim == 0 or v.shape[-1] != size:
                    varies[name][:] = True  # not features on the last axis: nothing said
                    continue
                rows = v.reshape(-1, size)
                ref = first_row.setdefault((name, x), rows[0].copy())  # each reader's own: a constant per crop
                varies[name] |= (rows != ref).any(0)
    for name, v in varies.items():
        if any(key[0] == name for key in first_row) and not v.all():
            cov.unseen[name] = (layers[name][1], ~v)
    return cov
