"""A weight a Loop carries unchanged becomes a value its body reads from outside (before anything is measured).

tf2onnx writes a Keras 3 LSTM behind a Masking layer as a Loop (the TensorFlow while loop) whose kernel, recurrent
kernel and bias are loop-carried values: the Loop takes each initializer as an initial value, the body reads it
as a body input and hands it back unchanged as its next value. No pass follows a weight through a loop-carried
value that something besides the Loop also reads (the first time step runs outside the loop, reading the same
kernel), so the weights were "read by MatMul ... and by Loop ...: used in different ways" (sweep 24: 97% of a
Masking+LSTM model's weights unprunable; a weight only the Loop reads is followed through the carried value already,
`ScopeIndex.carried`). A value handed back unchanged is the same at every iteration: the body may read the
initializer itself, as a value of the outer scope, which the inventory follows into bodies (passes/scopes.py), and
the main-graph reader and the body's are one tied weight (`weights._tied`):

    Loop(M, cond, W, h) body(i, c, w, h) -> (c', w, h')    ->    Loop(M, cond, h) body(i, c, h) -> (c', h'), reads W

Rules: a Loop in the main graph or in any body (tf2onnx's tf.while_loop under a tf.cond: a Loop in each If branch
carries the same weights, the two bodies' inputs named alike, so no carried input had one reader; sweep 27); a
loop-carried value whose initial value is a main-graph initializer (not a graph input or output, not defined anew in
the Loop's scope) that another node (in any scope) reads too, and whose body output is the body input itself (by name); the initializer's name is not defined anywhere in the
body (no shadowing); the Loop's final value of it is read by nothing and is no output of the graph or of the Loop's branch. The body then reads
the initializer where it read the input (nested bodies too), and the value leaves the Loop's inputs, the body's
inputs and outputs, and the Loop's outputs. The Loop computes the same outputs. A carried initializer the body
reads nowhere (constant-weights stored what its chain computed: sweep 29's ConvLSTM2D) leaves the Loop too, with
one reader, and the initializer goes when nothing reads it any more.
"""

from __future__ import annotations

import logging

import onnx

from onnxprune.passes.base import Pass, PassResult, PruneState, register_pass
from onnxprune.passes.merge_copies import check_reads, frozen_names
from onnxprune.passes.scopes import body_definitions, rename_reads, scopes

log = logging.getLogger(__name__)


def carried_weights(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, int]]:
    """(Loop, k) for every loop-carried value k that the module docstring's rules let the body read from outside."""
    graph = model.graph
    inits = {t.name for t in graph.initializer} - {v.name for v in graph.input}
    frozen = frozen_names(graph)
    readers: dict[str, int] = {}  # nodes reading each name, in every scope (the Loops of both If branches)
    for sc in scopes(graph):
        for node in sc.graph.node:
            for name in set(node.input):
                readers[name] = readers.get(name, 0) + 1
    found = []
    for sc in scopes(graph):
        # a Loop inside an If branch (tf2onnx's tf.while_loop under a tf.cond): the same rules, its scope's outputs
        # read too, and the initializer not defined anew in that scope
        outputs = {v.name for v in sc.graph.output}
        local = ({t.name for t in sc.graph.initializer} | {v.name for v in sc.graph.input}
                 | {o for n in sc.graph.node for o in n.output}) if sc.path else set()
        for node in sc.graph.node:
            found.extend(_carried(node, inits, outputs, local, frozen, readers))
    return found


def _carried(node, inits, outputs, local, frozen, readers) -> list[tuple[onnx.NodeProto, int]]:
    found = []
    if node.op_type != "Loop" or (node.domain or "") not in ("", "ai.onnx"):
        return found
    body = next((a.g for a in node.attribute if a.name == "body"), None)
    if body is None:
        return found
    defined = None
    for k in range(len(node.input) - 2):
        init = node.input[2 + k]
        if init not in inits or init in outputs or init in local or 2 + k >= len(body.input) \
                or 1 + k >= len(body.output):
            continue
        if readers.get(init, 0) < 2 and not _unread(body, body.input[2 + k].name):
            continue
        if body.output[1 + k].name != body.input[2 + k].name:
            continue
        final = node.output[k] if k < len(node.output) else ""
        if final and (final in readers or final in frozen or final in outputs):  # read by a node, a body, as
            continue  # a graph output or its branch's output
        defined = body_definitions(node) if defined is None else defined
        if init in defined:
            continue
        found.append((node, k))
    return found


def _unread(body: onnx.GraphProto, name: str) -> bool:
    """No node of `body` (or of a body inside it) reads `name`: the body only hands it back (a weight whose chain
    constant-weights folded, sweep 29's ConvLSTM2D kernel), so the Loop need not carry it."""
    return not any(name in n.input for sc in scopes(body) for n in sc.graph.node)


@register_pass("loop-invariants")
class LoopInvariants(Pass):
    """Let a Loop body read the weights it carries unchanged from the outer scope (module docstring)."""

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        found = carried_weights(model)
        if not found:
            return PassResult(model, False)
        carried = {node.input[2 + k] for node, k in found}
        for node, k in sorted(found, key=lambda f: -f[1]):  # the highest index first: the lower ones stay in place
            body = next(a.g for a in node.attribute if a.name == "body")
            init, inner = node.input[2 + k], body.input[2 + k].name
            rename_reads(body, {inner: init})
            del body.output[1 + k]
            del body.input[2 + k]
            del node.input[2 + k]
            if k < len(node.output):
                del node.output[k]
        read = {i for sc in scopes(model.graph) for n in sc.graph.node for i in n.input}
        unread = carried - read - {v.name for v in model.graph.output}
        kept = [t for t in model.graph.initializer if t.name not in unread]  # carried, read by nothing now
        if len(kept) != len(model.graph.initializer):
            del model.graph.initializer[:]
            model.graph.initializer.extend(kept)
        log.debug("loop-invariants: %d weight(s) carried unchanged through a Loop read from outside", len(found))
        return PassResult(model, True)

    def ensures(self, model: onnx.ModelProto, state: PruneState) -> None:
        check_reads(model, self.name)
