"""Which If branches the calibration data runs, and so which weights a budget has evidence about.

A weight in a branch that no calibration sample takes has no evidence behind it. The sensitivity scan sees no loss
when it is pruned (its branch never runs), so a budget prunes it as far as the search goes, and verification on the
same data cannot see it either. Measured on silero_vad: its calibration chunks are all 16 kHz, and the 8 kHz
branch's Convs were pruned to about 0.4% of their weights under `--max-loss 1`; fed the held-out chunks at
sr=8000, the output probability moved by 0.20 on average. So with a budget such weights are kept as they are, and
the run says which branch and what would prune it (data that takes it); with a fixed `--sparsity` they are pruned as
asked and the run says that no sample checked them.

How: each If's two branches get their first tensor output captured (converter/reconstruct_bodies.expose: the
branch that did not run outputs an empty tensor) and the input model runs once over the data. A branch ran when
some batch gave its capture a value. An If inside a Loop body has its condition captured instead (a branch's
output cannot be stacked over iterations when the branch changes between them; the condition is a scalar every
iteration): its then branch ran when some iteration's condition was true, its else branch when some was false (a
Loop that ran no iteration ran neither). A node runs when every branch around it ran; a weight is reached when
every node reading it does. Ifs inside a Scan body, or inside an If branch inside a Loop body (whose condition is
absent on the iterations that took the other branch), are not captured: their branches count as run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import onnx

from onnxprune.converter.reconstruct_bodies import bodies, expose

log = logging.getLogger(__name__)


@dataclass
class Coverage:
    """Branches ("If 'name'/then_branch") no sample took, and the weights only such branches read."""

    untaken: list[str] = field(default_factory=list)
    unreached: dict[str, str] = field(default_factory=dict)  # weight -> the untaken branch around a reader

    def note(self, budgeted: bool) -> str | None:
        if not self.unreached:
            return None
        where = ", ".join(self.untaken[:3]) + (f" (+{len(self.untaken) - 3} more)" if len(self.untaken) > 3 else "")
        what = f"{len(self.unreached)} weight(s) read in branches no sample of --data took ({where})"
        if budgeted:
            return (f"{what} were left as they are: the budget has no evidence about them; add samples that take "
                    "those branches to --data to prune them")
        return f"{what} were pruned as asked, but no sample checked them; add samples that take those branches"


def _ifs(graph: onnx.GraphProto, scope=(), ops=(), path=""):
    """(If node, its scope for expose, its path label, its index, whether a Loop is around it) for every If that can
    be captured (module docstring): outside Scan bodies, and with no If between it and the innermost Loop around."""
    for i, node in enumerate(graph.node):
        label = f"{path}/{node.op_type} '{node.name}'" if path else f"{node.op_type} '{node.name}'"
        looped = "Loop" in ops
        if node.op_type == "If" and "Scan" not in ops and (not looped or "If" not in ops[_last(ops, "Loop"):]):
            yield node, scope, label, i, looped
        for attr, g in bodies(node):
            yield from _ifs(g, scope + ((i, attr),), ops + (node.op_type,), f"{label}/{attr}")


def _last(ops: tuple, op: str) -> int:
    return len(ops) - 1 - ops[::-1].index(op)


def _readers(graph: onnx.GraphProto, around=()):
    """(node, the branches around it) for every node of every scope."""
    for node in graph.node:
        yield node, around
        for attr, g in bodies(node):
            inner = around + ((node.name, attr),) if node.op_type == "If" else around
            yield from _readers(g, inner)


def branch_coverage(model: onnx.ModelProto, weights, reader) -> Coverage:
    """Which If branches `reader`'s samples take, and which of `weights` (PrunableWeight) only untaken branches read.
    One run of `model` over the reader; a model without If nodes is not run."""
    from onnxprune.calibration.runtime import make_session

    captures, types = [], {}
    which = {}  # capture of a branch's output -> (If node name, branch)
    conditions = {}  # capture of an in-Loop If's condition -> its If node's name
    labels = {}  # (If node name, branch) -> its path label, for every branch captured either way
    for node, scope, label, index, looped in _ifs(model.graph):
        if looped:
            cap = (node.input[0], scope)
            captures.append(cap)
            types[node.input[0]] = onnx.TensorProto.BOOL
            conditions[cap] = node.name
            labels.update({(node.name, attr): f"{label}/{attr}" for attr in ("then_branch", "else_branch")})
            continue
        for attr, g in bodies(node):
            out = next((o for o in g.output if o.type.HasField("tensor_type")), None)
            if out is None:
                continue
            cap = (out.name, scope + ((index, attr),))
            captures.append(cap)
            types[out.name] = out.type.tensor_type.elem_type
            which[cap] = (node.name, attr)
            labels[(node.name, attr)] = f"{label}/{attr}"
    cov = Coverage()
    if not captures:
        return cov
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    names = expose(copy, captures, types)
    wanted = list(dict.fromkeys(names[c][0] for c in captures))
    del copy.graph.output[:]  # only the captures: the outputs' own work is not needed
    copy.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted)
    session = make_session(copy, optimize=False)
    ran: dict[tuple[str, str], bool] = {}
    for feeds in reader:
        values = dict(zip(wanted, session.run(wanted, feeds)))
        for cap in captures:
            value = values[names[cap][0]]
            if cap in conditions:  # every iteration's condition: which branches some iteration took
                name = conditions[cap]
                took = {"then_branch": bool(value.any()), "else_branch": bool((~value.astype(bool)).any())}
                for attr, yes in took.items():
                    ran[(name, attr)] = ran.get((name, attr), False) or yes
                continue
            key = which[cap]
            ran[key] = ran.get(key, False) or value.size > 0
    untaken = {key for key, took in ran.items() if not took}
    inner = [label for key, label in labels.items() if key in untaken]
    # a branch inside an untaken one is implied by it: only the outermost are named
    cov.untaken = [b for b in inner if not any(b.startswith(o + "/") for o in inner)]
    blocked: dict[str, str] = {}  # tensor read by a node in an untaken branch -> that branch
    for node, around in _readers(model.graph):
        hit = next((labels[b] for b in around if b in untaken), None)
        if hit:
            for name in node.input:
                blocked.setdefault(name, hit)
    for w in weights:
        if w.name in blocked:
            cov.unreached[w.name] = blocked[w.name]
    if cov.unreached:
        log.info("branches no sample took: %s", cov.untaken)
    return cov
