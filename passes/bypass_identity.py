"""Read a weight directly where an exporter put an Identity between it and its layer (before anything is measured).

torch's legacy exporter writes a module used several times (ALBERT's shared layers, a cell applied in a loop) as one
initializer and one Identity per use, each Identity feeding one MatMul. Behind the Identity nodes the weight had
six readers of another kind and was refused as "shared"; read directly it is one tied weight (passes/weights.py
`_tied`): one mask, and the layer-wise refit pools every use's rows.

    W --Identity i1--> MatMul a          W --MatMul a
      \\-Identity i2--> MatMul b    ->     \\-MatMul b

Rules: a main-graph Identity whose input is an initializer (not a graph input) and whose output is no graph
output, is read by no If/Loop/Scan body, and is read only as a weight (an input other than the first) of
Conv/ConvTranspose/Gemm/MatMul, once per reader (`weights.tie_use`, the rule a tied weight's readers follow). The Identity is dropped and its readers read the initializer. Nothing else moves.

The same exporter hands one bias to several layers whose biases are equal (torchvision FCOS's head: eight zero
Conv biases, one initializer, seven Identity nodes). Shared, the bias blocked dead-neuron removal of every layer that
reads it ("initializer ... is shared with 'Identity_212', ...") and the layer-wise refit left seven of the head's
fourteen weights as pruned ("its bias ... is computed by the graph"). An Identity of an initializer read only as the
bias (input 2) of Conv/ConvTranspose/Gemm becomes a copy of it under the Identity's output name (`bias_identities`):
each layer owns its bias, as merge_copies.py keeps them. The
dynamo exporter shares one equal bias directly (timm LeViT's two zero-initialized heads read 'head.linear.bias'):
an initializer read only as a bias by several layers gets a copy per later reader (`shared_biases`), unless
they are one tied layer applied again (the same weight and attributes: a scripted loop unrolled; `_one_tied_layer`).
Each copy is recorded (`PruneState.copies`), and copies of one source still bit-identical when the model is written
are one initializer again (`reshare`, the encode step): real models 45's basic-pitch (tf2onnx shares one zero bias
between TFLite layers) was written with 17 all-zero copies, 2.4 KB, and its file grew from 225.04 to 230.68 KB.
"""

from __future__ import annotations

import logging

import onnx
from onnx import numpy_helper

from onnxprune.passes.base import Pass, PassResult, PruneState, register_pass
from onnxprune.passes.merge_copies import check_reads, frozen_names, read_as
from onnxprune.passes.scopes import readers_of
from onnxprune.passes.weights import tie_use

log = logging.getLogger(__name__)


def weight_identities(model: onnx.ModelProto) -> dict[str, str]:
    """{Identity output: the initializer it passes on} for every Identity `BypassIdentity` drops."""
    inits = {t.name for t in model.graph.initializer}
    return _identities(model, inits, lambda r, out: (use := tie_use(r, out)) is not None and use[1] > 0)  # a weight


BIAS_READERS = ("Conv", "ConvTranspose", "Gemm")


def bias_identities(model: onnx.ModelProto) -> dict[str, str]:
    """{Identity output: the initializer it passes on} for every Identity of an initializer read only as a bias."""
    inits = {t.name for t in model.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL}  # copied
    return _identities(model, inits, _reads_as_bias)


def _reads_as_bias(node: onnx.NodeProto, name: str) -> bool:
    """`node` reads `name` once, as its bias (input 2 of Conv/ConvTranspose/Gemm)."""
    inputs = list(node.input)
    return (node.op_type in BIAS_READERS and (node.domain or "") in ("", "ai.onnx") and inputs.count(name) == 1
            and inputs.index(name) == 2)


def _identities(model: onnx.ModelProto, inits: set[str], reads) -> dict[str, str]:
    """{Identity output: its initializer} for each Identity of one of `inits` (not a graph input) whose output is
    not frozen (a graph output, read in a body) and whose every reader r passes `reads(r, output)`."""
    graph = model.graph
    inits = inits - {v.name for v in graph.input}
    frozen = frozen_names(graph)
    readers = readers_of(graph)
    found = {}
    for node in graph.node:
        if node.op_type != "Identity" or (node.domain or "") not in ("", "ai.onnx") or node.input[0] not in inits:
            continue
        out = node.output[0]
        uses = readers.get(out, [])
        if out not in frozen and uses and all(reads(r, out) for r in uses):
            found[out] = node.input[0]
    return found


def shared_biases(model: onnx.ModelProto) -> list[tuple[int, str]]:
    """(node index, initializer) for each reader after the first of an initializer that several layers read only
    as their bias (input 2 of Conv/ConvTranspose/Gemm), and nothing else reads."""
    graph = model.graph
    inits = {t.name for t in graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL}
    inits -= frozen_names(graph)
    readers: dict[str, list[tuple[int, onnx.NodeProto]]] = {}
    for k, node in enumerate(graph.node):
        for name in set(node.input):
            if name in inits:
                readers.setdefault(name, []).append((k, node))
    out = []
    for name, uses in readers.items():
        if len(uses) > 1 and all(_reads_as_bias(r, name) for _, r in uses) and not _one_tied_layer(uses, inits):
            out.extend((k, name) for k, _ in uses[1:])
    return out


def _one_tied_layer(uses, inits: set[str]) -> bool:
    """Every reader is the same layer applied again (the same op reading the same input 1 with the same attributes:
    a scripted loop unrolled by the exporter, sweep 27's greedy decoder), or reads the same weight initializer in
    other ways (sweep 34: TridentNet's one kernel at three dilations). A tied weight's neurons go together or not at
    all (channel groups block a shared tensor), so one bias serves them; copies only grew the file (the greedy
    decoder's Gemm bias 3 times; TridentNet's 21.40 KB -> 21.71 KB at 1.14x fewer nonzeros). An activation as input 1
    (a Gemm whose first operand is the weight) is no tied weight."""
    first = uses[0][1]
    if not all(len(n.input) > 1 and n.input[1] == first.input[1] for _, n in uses):
        return False
    key = lambda n: (n.op_type, sorted(a.SerializeToString() for a in n.attribute))  # noqa: E731
    return first.input[1] in inits or all(key(n) == key(first) for _, n in uses)


def reshare(model: onnx.ModelProto, copies: dict[str, str]) -> int:
    """Main-graph readers of a bias copy (`copies`: copy -> source, `BypassIdentity`'s record) read the first of its
    source's copies (the source first where it is still there) that has the same type, shape and bytes, and the copy
    goes; a copy the refit or a shrink changed stays its layer's own. In place; returns the initializers dropped."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    frozen = frozen_names(graph)
    groups: dict[str, list[str]] = {}
    for copy, src in sorted(copies.items()):
        groups.setdefault(src, [src]).append(copy)
    rename: dict[str, str] = {}
    for members in groups.values():
        first: dict[tuple, str] = {}
        for name in members:
            t = inits.get(name)
            if t is None or name in frozen or t.data_location == onnx.TensorProto.EXTERNAL:
                continue
            key = (t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes())
            if key in first:
                rename[name] = first[key]
            else:
                first[key] = name
    if not rename:
        return 0
    read_as(model, rename)
    kept = [t for t in graph.initializer if t.name not in rename]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(rename)


def _copy_initializer(model: onnx.ModelProto, tensor: onnx.TensorProto, name: str) -> None:
    """A copy of `tensor` under `name`, appended to the model's initializers (a layer's own bias)."""
    copy = onnx.TensorProto()
    copy.CopyFrom(tensor)
    copy.name = name
    model.graph.initializer.append(copy)


@register_pass("bypass-identity")
class BypassIdentity(Pass):
    """Drop the Identity nodes between an initializer and the layers that read it as a weight (module docstring)."""

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        rename, copies = weight_identities(model), bias_identities(model)
        shared = shared_biases(model)
        if not rename and not copies and not shared:
            return PassResult(model, False)
        by_name = {t.name: t for t in model.graph.initializer}  # the sources: initializers the model had
        if shared:
            taken = by_name.keys() | {o for n in model.graph.node for o in n.output}
            for k, src in shared:
                node, name, i = model.graph.node[k], f"{src}.{model.graph.node[k].name or k}", 0
                while name in taken:
                    i += 1
                    name = f"{src}.{node.name or k}.{i}"
                _copy_initializer(model, by_name[src], name)
                node.input[2] = name
                taken.add(name)
                state.copies[name] = src
        if rename:
            read_as(model, rename)
        for out, src in copies.items():
            _copy_initializer(model, by_name[src], out)
            state.copies[out] = src
        gone = set(rename) | set(copies)
        kept = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in gone)]
        del model.graph.node[:]
        model.graph.node.extend(kept)
        log.debug("bypass-identity: %d Identity node(s) between a weight and its layer dropped, %d shared bias(es) "
                  "copied", len(rename), len(copies) + len(shared))
        return PassResult(model, True)

    def ensures(self, model: onnx.ModelProto, state: PruneState) -> None:
        check_reads(model, self.name)
