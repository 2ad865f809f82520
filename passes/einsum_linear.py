"""A linear layer written as an Einsum becomes the MatMul it is (before anything is measured).

Code that writes its layers with `torch.einsum("bi,oi->bo", x, W)` (or `"...i,io->...o"`, or the weight first)
exports an Einsum node that reads the weight; no pass knew it as a weight op, so the weight was "not a weight of
Conv/ConvTranspose/Gemm/MatMul" and, read by two towers of a Siamese net, "shared by ..." (sweep 23: 99.9% of the
weights of an einsum-written Siamese MLP were left unprunable). Such an Einsum computes `x @ W` (W stored [in, out])
or `x @ W.T` (W stored [out, in]):

    Einsum(x, W) "bi,oi->bo"   ->   MatMul(x, W')   W' = W.T, stored [in, out] under W's name
    Einsum(x, W) "...i,io->...o" -> MatMul(x, W)

Rules: a main-graph Einsum of two operands, one of them a 2-D float initializer W (not a graph input, no body reads
it) with two distinct letters (o, i), the other x; x's letters are a prefix P (distinct letters or a leading
"...") then i, with i and o not in P; the output's letters are P then o. Every reader of W must be such an Einsum
with the same layout of W (W is stored once, transposed when the layout is [out, in]); otherwise nothing moves.
The node keeps its name and output; x @ W broadcasts over P as the Einsum did.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.passes.base import Pass, PassResult, PruneState, register_pass
from onnxprune.passes.merge_copies import check_reads, frozen_names

log = logging.getLogger(__name__)

FLOAT = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
_TERM = re.compile(r"^(\.\.\.)?([A-Za-z]*)$")


def _terms(node: onnx.NodeProto) -> tuple[list[str], str] | None:
    eq = next((a.s.decode() for a in node.attribute if a.name == "equation"), "").replace(" ", "")
    if "->" not in eq:
        return None
    lhs, out = eq.split("->")
    return lhs.split(","), out


def _split(term: str) -> tuple[bool, str] | None:
    m = _TERM.match(term)
    return (bool(m.group(1)), m.group(2)) if m else None


def linear_layout(node: onnx.NodeProto, weight_index: int) -> str | None:
    """"io" when Einsum `node` is x @ W with W (input `weight_index`) stored [in, out], "oi" when x @ W.T, else
    None (module docstring)."""
    if node.op_type != "Einsum" or (node.domain or "") not in ("", "ai.onnx") or len(node.input) != 2:
        return None
    terms = _terms(node)
    if terms is None or len(terms[0]) != 2:
        return None
    (a, b), out = terms
    x_term, w_term = (b, a) if weight_index == 0 else (a, b)
    xs, ws, os_ = _split(x_term), _split(w_term), _split(out)
    if xs is None or ws is None or os_ is None or ws[0] or len(ws[1]) != 2 or ws[1][0] == ws[1][1]:
        return None
    (x_ell, x_letters), (o_ell, o_letters) = xs, os_
    if not x_letters or not o_letters or x_ell != o_ell:
        return None
    prefix, i, o = x_letters[:-1], x_letters[-1], o_letters[-1]
    if o_letters[:-1] != prefix or len(set(prefix)) != len(prefix) or i in prefix or o in prefix or i == o:
        return None
    return {i + o: "io", o + i: "oi"}.get(ws[1])


def einsum_layers(model: onnx.ModelProto) -> dict[str, str]:
    """{weight initializer: "io" or "oi"} for every weight whose every reader is a linear Einsum of one layout."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer
             if t.data_type in FLOAT and len(t.dims) == 2 and t.data_location != onnx.TensorProto.EXTERNAL}
    frozen = frozen_names(graph)
    layouts: dict[str, set] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in inits and name not in frozen:
                other = node.input[1 - k] if node.op_type == "Einsum" and len(node.input) == 2 else None
                layout = linear_layout(node, k) if other not in inits else None
                layouts.setdefault(name, set()).add(layout)
    return {name: next(iter(s)) for name, s in layouts.items() if len(s) == 1 and None not in s}


@register_pass("einsum-linear")
class EinsumLinear(Pass):
    """Rewrite each linear-layer Einsum as a MatMul reading its weight as [in, out] (module docstring)."""

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        found = einsum_layers(model)
        if not found:
            return PassResult(model, False)
        for k, t in enumerate(model.graph.initializer):
            if found.get(t.name) == "oi":
                w = numpy_helper.to_array(t)
                model.graph.initializer[k].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w.T), t.name))
        for v in [v for v in model.graph.value_info if found.get(v.name) == "oi"]:  # its old [out, in] shape
            model.graph.value_info.remove(v)
        for node in model.graph.node:
            if node.op_type == "Einsum" and any(name in found for name in node.input):
                w_first = node.input[0] in found
                x, w = (node.input[1], node.input[0]) if w_first else (node.input[0], node.input[1])
                del node.input[:]
                node.input.extend([x, w])
                del node.attribute[:]
                node.op_type = "MatMul"
        log.debug("einsum-linear: %d weight(s) of linear Einsum layers read by MatMul", len(found))
        return PassResult(model, True)

    def ensures(self, model: onnx.ModelProto, state: PruneState) -> None:
        check_reads(model, self.name)
