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
some batch gave its capture a value. A node runs when every branch around it ran; a weight is reached when every
node reading it does. Ifs inside a Loop or Scan body are not captured (their per-iteration outputs cannot be
stacked when the branch changes between iterations): their branches count as run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import onnx

from onnxprune.converter.reconstruct_bodies import bodies, expose

log = logging.getLogger(__name__)

UNCAPTURED = ("Loop", "Scan")  # an If inside these bodies is assumed to run both ways


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
    """(If node, its scope for expose, its path label) for every If outside Loop/Scan bodies."""
    for i, node in enumerate(graph.node):
        label = f"{path}/{node.op_type} '{node.name}'" if path else f"{node.op_type} '{node.name}'"
        if node.op_type == "If" and not any(op in UNCAPTURED for op in ops):
            yield node, scope, label, i
        for attr, g in bodies(node):
            yield from _ifs(g, scope + ((i, attr),), ops + (node.op_type,), f"{label}/{attr}")


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

    captures, types, which = [], {}, {}
    for node, scope, label, index in _ifs(model.graph):
        for attr, g in bodies(node):
            out = next((o for o in g.output if o.type.HasField("tensor_type")), None)
            if out is None:
                continue
            cap = (out.name, scope + ((index, attr),))
            captures.append(cap)
            types[out.name] = out.type.tensor_type.elem_type
            which[cap] = (node.name, attr, f"{label}/{attr}")
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
            key = which[cap][:2]
            ran[key] = ran.get(key, False) or values[names[cap][0]].size > 0
    untaken = {key for key, took in ran.items() if not took}
    inner = [which[c][2] for c in captures if which[c][:2] in untaken]
    # a branch inside an untaken one is implied by it: only the outermost are named
    cov.untaken = [b for b in inner if not any(b.startswith(o + "/") for o in inner)]
    labels = {which[c][:2]: which[c][2] for c in captures}
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
