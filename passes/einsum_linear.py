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

A bilinear layer of three operands (`torch.einsum("bi,oij,bj->bo", x, W, y)`, what torch's legacy exporter writes
for it; sweep 31: its [10, 24, 24] weight was "not a weight ... (used by Einsum)") is a MatMul of x by W laid out
[in_x, out · in_y], then a product with y summed over in_y:

    Einsum(x, W, y) "Pi,oij,Pj->Po"  ->  MatMul(x, W') -> Reshape [P, o, j] -> Mul(Unsqueeze(y, -2)) -> ReduceSum(-1)

Rules: a main-graph Einsum of three operands, one a 3-D float initializer W (letters o, i, j in any order, read by
this Einsum alone), the others x and y with the same explicit prefix P (distinct letters, no "...") then i and j;
the output P then o; i, j, o distinct and not in P. W' (W's values, [i, o·j]) is stored under W's name.

A linear layer that contracts several axes at once (sweep 40: a KAN-like layer's Chebyshev terms [N, 64, 4] with
`torch.einsum("nik,oik->no", T, W)`, W [32, 64, 4], 14% of the model "used by Einsum"; an attention output
projection "bshd,hdm->bsm") is a MatMul of x with those axes flattened:

    Einsum(x, W) "PC,W(C, o)->Po"  ->  Reshape(x, [0] * |P| + [-1]) -> MatMul(., W')   W' = W as [C, o], [|C|, o]

Rules: a main-graph Einsum of two operands, one a float initializer W of rank >= 3, the other x; W's letters are
distinct, one of them o and the others C (at least two); x's letters are an explicit
prefix P (distinct, no "...") then C in some order; the output P then o; o not in P or C. W's axes are moved to x's
order of C then o and flattened to [prod C, o] under W's name.

A weight with a matrix per position of the input (sweep 42: a capsule net's transform `torch.einsum("nid,iokd->niok",
u, W)`, W [144, 10, 8, 8], 52% of the model "used by Einsum"; a locally connected layer) is a batched MatMul of x's
rows, one row a position, by W's matrices: the letters both operands and the output share are groups G, those both
operands share and the output does not are contracted C, W's own letters (all in the output) are outputs O and x's
own (all in the output, at least one) are P:

    Einsum(x, W) "PGC,W(G, C, O)->Out"  ->  Transpose(x, P G C) -> Reshape [0.., 1, |C|] -> MatMul(., W')
                                             -> Reshape [0.., O] -> Transpose(Out)     W' = W as [G, |C|, |O|]

Rules: a main-graph Einsum of two operands, one a float initializer W, the other x, not a constant; each term's
letters explicit and distinct; C, O and P not empty; the output's letters exactly P, G
and O. G may be empty where the rules above do not take the Einsum (sweep 45: per-head projections
`torch.einsum("btd,hde->bhte", x, W)`, W [4, 48, 12], the head axis between the batch's letters in the output,
"not a weight ... (used by Einsum)"): one matrix W [|C|, |O|] then, no group axis. W's axes are moved to G, C, O
(W's order within each) and C and O flattened, under W's name; MatMul broadcasts x's P axes over W's groups, so
the batch stays where it was.

Under both of the last two rules W may be read by several such Einsums (no other reader), each once and with W's
letters, G, C and O alike (sweep 48: a Fourier neural operator's complex spectral weights, the real part's W_r read
by "nmc,mcd->nmd" with Re(x) for the real output and with Im(x) for the imaginary one, "not a weight ... (used by 2
nodes: Einsum)", 86% of the model): W is stored once as above and each Einsum is rewritten around it.

An Einsum of one input x and several weights (sweep 54: a tensor-train layer `torch.einsum("nij,iak,ajl->nkl", x,
G1, G2)`, its cores 79% of the model "not a weight ... (used by Einsum)", legacy and dynamo) is the chain that
contracts x with each weight in turn, every step keeping the letters a later weight or the output reads:

    Einsum(x, G1, G2) "nij,iak,ajl->nkl"  ->  Einsum(x, G1) "nij,iak->njak" -> Einsum(., G2) "njak,ajl->nkl"

Rules: a main-graph Einsum of three or more operands, one of them no initializer (x), the others float
initializers this Einsum alone reads (each once); each term's letters explicit and distinct; every step of the
chain an Einsum one of the rules above takes, so each weight becomes a MatMul weight; otherwise nothing moves.
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
    return equation_terms(next((a.s.decode() for a in node.attribute if a.name == "equation"), ""))


def equation_terms(eq: str) -> tuple[list[str], str] | None:
    """An Einsum equation's operand terms and output term ('ntu,nuc->ntc': ['ntu', 'nuc'], 'ntc'), spaces dropped;
    None without an explicit output."""
    eq = eq.replace(" ", "")
    if "->" not in eq:
        return None
    lhs, _, out = eq.partition("->")
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


def _weights(graph: onnx.GraphProto, rank: int) -> dict[str, onnx.TensorProto]:
    """The float initializers of `rank` dims held in the file (not external data): the weights a rewrite may move."""
    return {t.name: t for t in graph.initializer
            if t.data_type in FLOAT and len(t.dims) == rank and t.data_location != onnx.TensorProto.EXTERNAL}


def einsum_layers(model: onnx.ModelProto) -> dict[str, str]:
    """{weight initializer: "io" or "oi"} for every weight whose every reader is a linear Einsum of one layout."""
    graph = model.graph
    inits, frozen = _weights(graph, 2), frozen_names(graph)
    layouts: dict[str, set] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in inits and name not in frozen:
                other = node.input[1 - k] if node.op_type == "Einsum" and len(node.input) == 2 else None
                layout = linear_layout(node, k) if other not in inits else None
                layouts.setdefault(name, set()).add(layout)
    return {name: next(iter(s)) for name, s in layouts.items() if len(s) == 1 and None not in s}


def bilinear_layout(node: onnx.NodeProto, weight_index: int) -> tuple[tuple[int, int, int], int] | None:
    """(W's axes in the order (i, o, j), x's input index) when Einsum `node` is the bilinear layer of the module
    docstring with W its input `weight_index`, else None."""
    if node.op_type != "Einsum" or (node.domain or "") not in ("", "ai.onnx") or len(node.input) != 3:
        return None
    terms = _terms(node)
    if terms is None or len(terms[0]) != 3 or not 0 <= weight_index < 3:
        return None
    lhs, out = terms
    split = [_split(t) for t in (*lhs, out)]
    if any(t is None or t[0] for t in split):
        return None
    letters = [t[1] for t in split]
    w, (a, b) = letters[weight_index], [letters[k] for k in range(3) if k != weight_index]
    prefix = out[:-1]
    if (len(w) != 3 or len(set(w)) != 3 or not a or not b or a[:-1] != prefix or b[:-1] != prefix
            or len(set(prefix)) != len(prefix)):
        return None
    i, j, o = a[-1], b[-1], out[-1]
    if len({i, j, o}) != 3 or set(w) != {i, j, o} or {i, j, o} & set(prefix):
        return None
    return (w.index(i), w.index(o), w.index(j)), (0 if weight_index != 0 else 1)


def bilinear_layers(model: onnx.ModelProto) -> dict[str, tuple[onnx.NodeProto, tuple[int, int, int], int]]:
    """{weight: (its Einsum, W's axes as (i, o, j), x's input index)} for each 3-D float weight read by one
    bilinear Einsum alone."""
    graph = model.graph
    inits = _weights(graph, 3)
    found = {}
    for name, node, k in _read_once(graph, inits):
        layout = bilinear_layout(node, k)
        if layout is not None and not any(x in inits for j, x in enumerate(node.input) if j != k):
            found[name] = (node, *layout)
    return found


def _reads(graph: onnx.GraphProto, inits) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    """Each of `inits` the graph's nodes read, not frozen -> (its reader, the input index read), a pair per read."""
    frozen = frozen_names(graph)
    readers: dict[str, list] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in inits and name not in frozen:
                readers.setdefault(name, []).append((node, k))
    return readers


def _read_once(graph: onnx.GraphProto, inits) -> list[tuple[str, onnx.NodeProto, int]]:
    """(weight, its reader, the input index it is read at) for each of `inits` one node input reads, not frozen."""
    return [(name, *reads[0]) for name, reads in _reads(graph, inits).items() if len(reads) == 1]


def _operand_letters(node: onnx.NodeProto, weight_index: int) -> tuple[str, str, str] | None:
    """(x's letters, W's, the output's) of a two-operand Einsum with W its input `weight_index`, no ellipsis in any;
    else None."""
    if node.op_type != "Einsum" or (node.domain or "") not in ("", "ai.onnx") or len(node.input) != 2:
        return None
    terms = _terms(node)
    if terms is None or len(terms[0]) != 2 or weight_index not in (0, 1):
        return None
    (a, b), out = terms
    split = [_split(t) for t in ((b, a) if weight_index == 0 else (a, b)) + (out,)]
    if any(t is None or t[0] for t in split):
        return None
    return tuple(t[1] for t in split)


def flat_layout(node: onnx.NodeProto, weight_index: int) -> tuple[tuple[int, ...], int] | None:
    """(W's axes in the order (C as x reads them, then o), |P|) when Einsum `node` contracts several axes of x
    with W, its input `weight_index` (module docstring), else None."""
    letters = _operand_letters(node, weight_index)
    if letters is None:
        return None
    x, w, o_letters = letters
    if len(w) < 3 or len(set(w)) != len(w) or not o_letters:
        return None
    o, prefix = o_letters[-1], o_letters[:-1]
    c = x[len(prefix):]
    if (x[:len(prefix)] != prefix or len(set(x)) != len(x) or o not in w or o in x
            or sorted(c) != sorted(w.replace(o, ""))):
        return None
    return tuple(w.index(letter) for letter in c + o), len(prefix)


def flat_layers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, tuple[int, ...], int]]]:
    """{weight: [(an Einsum, W's axes as (C, o), |P|), ...]} for each float weight of rank >= 3 that only Einsums
    read, each contracting several axes of its other operand with it, W's axes alike in all."""
    return {name: [(node, *layout) for node, layout in found]
            for name, found in _einsum_weights(model, 3, flat_layout, lambda layout: layout[0])}


def _einsum_weights(model: onnx.ModelProto, rank: int, layout_of, key):
    """(weight, [(an Einsum, `layout_of(node, k)`), ...]) for each float weight of rank >= `rank` that only Einsums
    read, each once (input k) with another operand that is no constant, where every layout is not None and all give
    the same `key(layout)`: the weight's own layout, so one stored W serves them all (the real and imaginary parts
    of a complex product read each weight twice: sweep 48's Fourier neural operator, "nmc,mcd->nmd")."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer if t.data_type in FLOAT and len(t.dims) >= rank
             and t.data_location != onnx.TensorProto.EXTERNAL}
    consts = {t.name for t in graph.initializer}
    for name, reads in _reads(graph, inits).items():
        if len({id(node) for node, _ in reads}) != len(reads):
            continue
        found = [(node, layout_of(node, k)) for node, k in reads]
        if all(layout is not None and node.input[1 - k] not in consts for (node, layout), (_, k) in zip(found, reads)) \
                and len({key(layout) for _, layout in found}) == 1:
            yield name, found


def _store(graph: onnx.GraphProto, name: str, values: np.ndarray) -> None:
    """`values` stored under initializer `name`, its old value_info dropped."""
    k = next(n for n, t in enumerate(graph.initializer) if t.name == name)
    graph.initializer[k].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(values), name))
    for v in [v for v in graph.value_info if v.name == name]:
        graph.value_info.remove(v)


def _replace(graph: onnx.GraphProto, node: onnx.NodeProto, nodes: list) -> None:
    at = list(graph.node).index(node)
    graph.node.remove(node)
    for n, new in enumerate(nodes):
        graph.node.insert(at + n, new)


def _rewrite_flat(model: onnx.ModelProto, name: str, reads: list) -> None:
    graph = model.graph
    w = np.transpose(numpy_helper.to_array(next(t for t in graph.initializer if t.name == name)), reads[0][1])
    _store(graph, name, w.reshape(-1, w.shape[-1]))  # [C..., o] as [|C|, o]
    for node, _, prefix in reads:
        x = node.input[1 - list(node.input).index(name)]
        base = node.name or node.output[0]
        shape = numpy_helper.from_array(np.array([0] * prefix + [-1], np.int64), f"{base}/flat_shape")
        graph.initializer.append(shape)
        _replace(graph, node, [
            onnx.helper.make_node("Reshape", [x, shape.name], [f"{base}/flat_x"], name=f"{base}/flat_reshape"),
            onnx.helper.make_node("MatMul", [f"{base}/flat_x", name], [node.output[0]], name=node.name)])


def _rewrite_bilinear(model: onnx.ModelProto, name: str, node: onnx.NodeProto, axes: tuple, x_index: int) -> None:
    graph = model.graph
    w = np.transpose(numpy_helper.to_array(next(t for t in graph.initializer if t.name == name)), axes)  # [i, o, j]
    i, o, j = w.shape
    _store(graph, name, w.reshape(i, o * j))
    x = node.input[x_index]
    y = next(n for m, n in enumerate(node.input) if m not in (x_index, list(node.input).index(name)))
    rank = len(_terms(node)[1])  # the output's letters: P then o
    base, out = node.name or node.output[0], node.output[0]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    shape = numpy_helper.from_array(np.array([0] * (rank - 1) + [o, j], np.int64), f"{base}/bilinear_shape")
    graph.initializer.append(shape)
    nodes = [onnx.helper.make_node("MatMul", [x, name], [f"{base}/bilinear_xw"], name=node.name),
             onnx.helper.make_node("Reshape", [f"{base}/bilinear_xw", shape.name], [f"{base}/bilinear_xwr"],
                                   name=f"{base}/bilinear_reshape")]
    if opset >= 13:
        axis = numpy_helper.from_array(np.array([-2], np.int64), f"{base}/bilinear_axis")
        last = numpy_helper.from_array(np.array([-1], np.int64), f"{base}/bilinear_last")
        graph.initializer.extend([axis, last])
        nodes += [onnx.helper.make_node("Unsqueeze", [y, axis.name], [f"{base}/bilinear_y"],
                                        name=f"{base}/bilinear_unsqueeze"),
                  onnx.helper.make_node("Mul", [f"{base}/bilinear_xwr", f"{base}/bilinear_y"], [f"{base}/bilinear_p"],
                                        name=f"{base}/bilinear_mul"),
                  onnx.helper.make_node("ReduceSum", [f"{base}/bilinear_p", last.name], [out], keepdims=0,
                                        name=f"{base}/bilinear_sum")]
    else:
        nodes += [onnx.helper.make_node("Unsqueeze", [y], [f"{base}/bilinear_y"], axes=[rank - 1],
                                        name=f"{base}/bilinear_unsqueeze"),
                  onnx.helper.make_node("Mul", [f"{base}/bilinear_xwr", f"{base}/bilinear_y"], [f"{base}/bilinear_p"],
                                        name=f"{base}/bilinear_mul"),
                  onnx.helper.make_node("ReduceSum", [f"{base}/bilinear_p"], [out], axes=[rank], keepdims=0,
                                        name=f"{base}/bilinear_sum")]
    _replace(graph, node, nodes)


def grouped_layout(node: onnx.NodeProto, weight_index: int) -> tuple[str, str, str, str, str, str] | None:
    """(x's letters, W's, the output's, G, C, O in W's order; P is x's own) when Einsum `node` is the per-position
    linear layer of the module docstring with W its input `weight_index`, else None."""
    letters = _operand_letters(node, weight_index)
    if letters is None:
        return None
    x, w, o_letters = letters
    if any(len(set(t)) != len(t) for t in (x, w, o_letters)):
        return None
    groups = "".join(c for c in w if c in x and c in o_letters)
    contracted = "".join(c for c in w if c in x and c not in o_letters)
    outs = "".join(c for c in w if c not in x)
    own = "".join(c for c in x if c not in w)
    if not (contracted and outs and own) or sorted(o_letters) != sorted(own + groups + outs):
        return None
    if not groups and (linear_layout(node, weight_index) or flat_layout(node, weight_index)):
        return None  # a plain linear layer: those rules write it without the Transposes
    return x, w, o_letters, groups, contracted, outs


def grouped_layers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, tuple]]]:
    """{weight: [(an Einsum, its `grouped_layout`), ...]} for each float weight that only Einsums read, each
    multiplying each position of its other operand by the weight's matrix for that position, W's letters, G, C and
    O alike in all."""
    return dict(_einsum_weights(model, 2, grouped_layout, lambda layout: layout[1] + "|" + "|".join(layout[3:])))


def _rewrite_grouped(model: onnx.ModelProto, name: str, reads: list) -> None:
    graph = model.graph
    _, w_letters, _, groups, contracted, outs = reads[0][1]
    w = np.transpose(numpy_helper.to_array(next(t for t in graph.initializer if t.name == name)),
                     [w_letters.index(c) for c in groups + contracted + outs])
    size = dict(zip(groups + contracted + outs, w.shape))
    out_dims = [size[c] for c in outs]
    flat = w.reshape([size[c] for c in groups] + [int(np.prod([size[c] for c in contracted])), -1])
    _store(graph, name, flat)
    for node, (x_letters, _, out_letters, *_) in reads:
        own = "".join(c for c in x_letters if c not in w_letters)
        x = node.input[1 - list(node.input).index(name)]
        base, kept = node.name or node.output[0], len(own) + len(groups)
        first = [x_letters.index(c) for c in own + groups + contracted]
        last = [(own + groups + outs).index(c) for c in out_letters]
        rows = numpy_helper.from_array(np.array([0] * kept + [1, flat.shape[-2]], np.int64), f"{base}/grouped_rows")
        back = numpy_helper.from_array(np.array([0] * kept + out_dims, np.int64), f"{base}/grouped_outs")
        graph.initializer.extend([rows, back])
        nodes, src = [], x
        if first != sorted(first):
            nodes.append(onnx.helper.make_node("Transpose", [x], [f"{base}/grouped_x"], perm=first,
                                               name=f"{base}/grouped_transpose_x"))
            src = f"{base}/grouped_x"
        tail = f"{base}/grouped_y" if last != sorted(last) else node.output[0]
        nodes += [
            onnx.helper.make_node("Reshape", [src, rows.name], [f"{base}/grouped_r"], name=f"{base}/grouped_rows"),
            onnx.helper.make_node("MatMul", [f"{base}/grouped_r", name], [f"{base}/grouped_p"], name=node.name),
            onnx.helper.make_node("Reshape", [f"{base}/grouped_p", back.name], [tail], name=f"{base}/grouped_outs")]
        if tail != node.output[0]:
            nodes.append(onnx.helper.make_node("Transpose", [tail], [node.output[0]], perm=last,
                                               name=f"{base}/grouped_transpose_y"))
        _replace(graph, node, nodes)


def chain_steps(node: onnx.NodeProto, consts) -> list[tuple[str, str]] | None:
    """[(a weight, the step's equation), ...] when Einsum `node` is one input x and several weights, none of them in
    `consts` but the weights, contracted in turn as the module docstring's chain; else None."""
    if node.op_type != "Einsum" or (node.domain or "") not in ("", "ai.onnx") or len(node.input) < 3:
        return None
    terms = _terms(node)
    if terms is None or len(terms[0]) != len(node.input):
        return None
    split = [_split(t) for t in (*terms[0], terms[1])]
    if any(t is None or t[0] or len(set(t[1])) != len(t[1]) for t in split):
        return None
    letters, out = [t[1] for t in split[:-1]], split[-1][1]
    data = [k for k, name in enumerate(node.input) if name not in consts]
    if len(data) != 1 or any(not name for name in node.input):
        return None
    weights = [k for k in range(len(node.input)) if k != data[0]]
    cur, steps = letters[data[0]], []
    for n, k in enumerate(weights):
        later = "".join(letters[j] for j in weights[n + 1:]) + out
        nxt = out if n == len(weights) - 1 else "".join(dict.fromkeys(c for c in cur + letters[k] if c in later))
        steps.append((node.input[k], f"{cur},{letters[k]}->{nxt}"))
        cur = nxt
    return steps


def _taken(equation: str) -> bool:
    """Whether one of the two-operand rules takes Einsum(x, W) with `equation`."""
    step = onnx.helper.make_node("Einsum", ["x", "w"], ["y"], equation=equation)
    return any(rule(step, 1) for rule in (linear_layout, flat_layout, grouped_layout))


def split_chains(model: onnx.ModelProto) -> int:
    """Each Einsum of one input and several weights (module docstring) written as its chain of two-operand Einsums;
    how many."""
    graph = model.graph
    weights = {t.name for t in graph.initializer if t.data_type in FLOAT}
    reads = _reads(graph, weights)
    consts = {t.name for t in graph.initializer}
    done = 0
    for node in [n for n in graph.node if n.op_type == "Einsum" and len(n.input) >= 3]:
        steps = chain_steps(node, consts)
        if (steps is None or any(len(reads.get(w, [])) != 1 for w, _ in steps)
                or not all(_taken(eq) for _, eq in steps)):
            continue
        base, cur, nodes = node.name or node.output[0], next(n for n in node.input if n not in consts), []
        for k, (w, eq) in enumerate(steps):
            y = node.output[0] if k == len(steps) - 1 else f"{base}/chain_{k}"
            nodes.append(onnx.helper.make_node("Einsum", [cur, w], [y], equation=eq,
                                               name=node.name if k == len(steps) - 1 else f"{base}/chain_{k}"))
            cur = y
        _replace(graph, node, nodes)
        done += 1
    return done


@register_pass("einsum-linear")
class EinsumLinear(Pass):
    """Rewrite each linear-layer Einsum as a MatMul reading its weight as [in, out] (module docstring)."""

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        chains = split_chains(model)
        if chains:
            log.debug("einsum-linear: %d Einsum(s) of one input and several weights written as chains", chains)
        found = einsum_layers(model)
        bilinear = bilinear_layers(model)
        for name, (node, axes, x_index) in bilinear.items():
            _rewrite_bilinear(model, name, node, axes, x_index)
        if bilinear:
            log.debug("einsum-linear: %d bilinear Einsum weight(s) read by MatMul", len(bilinear))
        flat = flat_layers(model)
        for name, reads in flat.items():
            _rewrite_flat(model, name, reads)
        if flat:
            log.debug("einsum-linear: %d Einsum weight(s) contracting several axes read by MatMul", len(flat))
        grouped = grouped_layers(model)
        for name, reads in grouped.items():
            _rewrite_grouped(model, name, reads)
        if grouped:
            log.debug("einsum-linear: %d Einsum weight(s) with a matrix per position read by MatMul", len(grouped))
        if not found:
            return PassResult(model, bool(chains) or bool(bilinear) or bool(flat) or bool(grouped))
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
