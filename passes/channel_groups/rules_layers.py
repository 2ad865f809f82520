"""Rules for weight layers: Gemm, MatMul, Conv (dense, depthwise and grouped), ConvTranspose."""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.passes.channel_groups.builder import Builder
from onnxprune.passes.channel_groups.graph import Channels, Layer, WeightAxis
from onnxprune.passes.channel_groups.util import (
    NAN,
    _attr,
    _desc,
    _const,
    _no_padding,
    _opt_input,
    _per_channel,
)
from onnxprune.passes.einsum_linear import equation_terms

log = logging.getLogger(__name__)


def gemm_weight(node) -> tuple[int, np.ndarray] | None:
    """(which operand is the weight, its values) of a Gemm: the second operand when it is a 2-D constant, else the
    first (a column-major export: `Gemm(W, x, transB=1)` computes W·xᵀ, its channels on the output's axis 0)."""
    for k in (1, 0):
        v = _const(node.inputs[k])
        if v is not None and v.ndim == 2:
            return k, v
    return None


def _gemm(b: Builder, node: gs.Node) -> None:
    """Y = alpha·op(A)·op(B) + beta·C. The weight is B (channels on Y's last axis, read on op(A)'s columns) or A
    (channels on Y's axis 0, read on op(B)'s rows); C adds per channel when it is constant along the other axis."""
    c = _opt_input(node, 2)
    C, found = _const(c), gemm_weight(node)
    if found is None or (c is not None and C is None):
        return b.opaque(node, "has no constant 2-D weight and constant bias")
    k, W = found
    ta, tb = bool(_attr(node, "transA", 0)), bool(_attr(node, "transB", 0))
    alpha, beta = float(_attr(node, "alpha", 1.0)), float(_attr(node, "beta", 1.0))
    w, a = node.inputs[k], node.inputs[1 - k]
    if k == 1:  # [K, N] view of the weight (rows stay in the weight's dtype; folds upcast)
        wkn, (in_ax, out_ax), a_axis, y_axis = (W.T if tb else W), ((1, 0) if tb else (0, 1)), (-2 if ta else -1), -1
    else:
        wkn, (in_ax, out_ax), a_axis, y_axis = (W if ta else W.T), ((0, 1) if ta else (1, 0)), (-1 if tb else -2), -2
    n = wkn.shape[1]
    frozen = b.shared(w, node)  # a weight alike Gemms read (a Siamese net's towers) is tied, not frozen
    bias_frozen = b.shared(c, node) if c is not None else None
    # a fold edits the bias: never one another node reads too
    foldable = c is None or (beta != 0 and not b.frozen(c, node))
    fold = (lambda v: alpha * (v @ wkn.astype(np.float64))) if foldable else None
    if b.read(node, a, a_axis, wkn, fold, frozen):
        b.tie(w, in_ax, a, node)
        b.slices(a, w, in_ax)
    sliced_bias = C is not None and C.ndim >= -y_axis and C.shape[y_axis] == n > 1
    bias = beta * _per_channel(C, n, y_axis) if C is not None else np.zeros(n)
    b.produce(node, w, wkn.T, y_axis, bias, frozen or (bias_frozen if sliced_bias else None))
    b.tie(w, out_ax, node.outputs[0], node)
    if sliced_bias:
        b.tie(c, y_axis, node.outputs[0], node)
    more = [lambda keep: b.cg.slice_input(node, 2, y_axis, keep)] if sliced_bias else []
    b.slices(node.outputs[0], w, out_ax, *more)


def _matmul_weight(w):
    """(constant to slice, the 2-D weight as the MatMul reads it, the constant's axes of its axes 0 and 1, user of the
    constant) or None: a 2-D constant, or one behind a plain Transpose."""
    if isinstance(w, gs.Constant) and w.values.ndim == 2:
        return w, w.values, 0, 1, None
    t = w.inputs[0] if len(w.inputs) == 1 else None
    if t is not None and t.op == "Transpose" and isinstance(t.inputs[0], gs.Constant) and t.inputs[0].values.ndim == 2:
        if list(_attr(t, "perm", [1, 0])) == [1, 0] and len(w.outputs) == 1:
            return t.inputs[0], t.inputs[0].values.T, 1, 0, t
    return None


def matmul_weight(node) -> tuple[int, tuple] | None:
    """(which operand is the weight, `_matmul_weight` of it): the second when it is one, else the first when the
    other operand has at least 2 axes (W·X, X [..., K, N]: the channels on axis -2)."""
    for k in (1, 0):
        found = _matmul_weight(node.inputs[k])
        if found is not None:
            return k, found
    return None


def _matmul(b: Builder, node: gs.Node) -> None:
    found = matmul_weight(node)
    w = node.inputs[1]
    if found is None and isinstance(w, gs.Constant) and w.values.ndim > 2 and b.ch(w) is None:
        return _matrix_per_group(b, node, w)
    cw = b.ch(w)
    if found is None and cw is not None and cw.axis == -1 and b.ch(node.inputs[0]) is None and (b.rank(w) or 0) >= 2:
        return _weighted_sum(b, node, cw)
    if found is None and cw is not None and b.ch(node.inputs[0]) is not None:  # TokenLearner's maps @ features
        return b.opaque(node, "multiplies 2 operands that carry channels")
    if found is None or (found[0] == 0 and (b.rank(node.inputs[1]) or 0) < 2):
        return b.opaque(node, "has no constant 2-D weight (or one behind a non-trivial Transpose)")
    k, (src, W, ax0, ax1, via) = found
    a, user = node.inputs[1 - k], via or node
    c = b.ch(a)
    if k == 0 and c is not None and c.axis == -1:
        return _mixing(b, node, W, c)
    # [K, N] view: the second operand as it is; the first one transposed (W [M, K] reads X's axis -2)
    wkn, in_ax, out_ax, axis = (W, ax0, ax1, -1) if k == 1 else (W.T, ax1, ax0, -2)
    frozen = b.shared(src, user)  # alike readers (a Siamese net's towers): tied
    if b.read(node, a, axis, wkn, lambda v: v @ wkn.astype(np.float64), frozen):
        b.tie(src, in_ax, a, user)
        b.slices(a, src, in_ax)
    b.produce(node, src, wkn.T, axis, np.zeros(wkn.shape[1]), frozen)
    b.tie(src, out_ax, node.outputs[0], user)
    b.slices(node.outputs[0], src, out_ax)


def _einsum(b: Builder, node: gs.Node) -> None:
    """An Einsum of computed operands (one with a weight is a MatMul by now, passes/einsum_linear.py) where one
    operand carries channels on a letter the output keeps and no other operand has: attention's probabilities times
    the values, `einsum("nhwv,nchv->nchw", P, v)` (sweep 47's criss-cross attention), as `_weighted_sum` does for a
    MatMul. Every output is linear in that operand, so a zero channel stays zero and any other varies."""
    eq = node.attrs.get("equation", "")
    eq = (eq.decode() if isinstance(eq, bytes) else str(eq)).replace(" ", "")
    carriers = [k for k, t in enumerate(node.inputs) if b.ch(t) is not None]
    if len(carriers) > 1:
        return b.opaque(node, f"multiplies {len(carriers)} operands that carry channels ('{eq}')")
    terms, out = equation_terms(eq) or ([], "")
    if not out or "." in eq or len(terms) != len(node.inputs):
        return b.opaque(node, f"has an equation whose output letters are not all written out ('{eq}')")
    k = carriers[0]
    c, term = b.ch(node.inputs[k]), terms[k]
    letter = term[c.axis] if -len(term) <= c.axis < 0 else ""
    others = terms[:k] + terms[k + 1:]
    if not letter or term.count(letter) != 1 or letter not in out or any(letter in t for t in others):
        return b.opaque(node, f"sums or pairs the channels of its operand {k} (letter '{letter}' of '{eq}')")
    with np.errstate(invalid="ignore"):
        b.set(node.outputs[0], Channels(out.index(letter) - len(out), c.ids, np.where(c.value == 0, 0.0, NAN)))


def _matrix_per_group(b: Builder, node: gs.Node, w: gs.Constant) -> None:
    """X [..., *g, R, K] @ W [*g, K, M]: a matrix per group (torch.baddbmm's grouped linear; a capsule net's
    per-position transform, sweep 42). Output channel j is column j of every group's matrix, on the output's last
    axis: it goes when all those columns are zero (it holds 0 then). X's channel k is read by row k of every group's
    matrix: it goes with those rows when it is 0 in every sample (it adds nothing to any group) or the rows are all
    zero; a constant other than 0 would be a different bias per group, which no bias holds (no fold), so that one is
    kept. Sweep 42: the zero columns of such a weight were neither removed nor said; sweep 48: a Fourier neural
    operator's dead lifted channels, read by its spectral weights [modes, c, d], and an expert-choice MoE's dead
    expert hidden units were kept ("reads them with a matrix per group")."""
    W = w.values
    x = node.inputs[0]
    frozen = b.shared(w, node)
    if b.ch(x) is not None and W.ndim >= 3:
        rows = np.moveaxis(W, -2, 0).reshape(W.shape[-2], -1)  # row k of every group's matrix
        if b.read(node, x, -1, rows, None, frozen):
            b.tie(w, W.ndim - 2, x, node)
            b.slices(x, w, W.ndim - 2)
    b.produce(node, w, np.moveaxis(W, -1, 0).reshape(W.shape[-1], -1), -1, np.zeros(W.shape[-1]), frozen)
    b.tie(w, W.ndim - 1, node.outputs[0], node)
    b.slices(node.outputs[0], w, W.ndim - 1)


def _mixing(b: Builder, node: gs.Node, W: np.ndarray, c: Channels) -> None:
    """W [M, K] @ X [..., K, C] with X's channels on its last axis (a GCN's normalized adjacency mixing the nodes of
    every feature, sweep 35): output column j is W @ X[..., j], so the channels pass through and W's rows are not
    neurons here. A channel that holds v everywhere gives v times W's row sums: a constant where v is 0 or the row
    sums are all one number, else it varies along the rows."""
    sums = W.sum(axis=1, dtype=np.float64)
    scale = sums[0] if len(sums) and np.allclose(sums, sums[0], rtol=1e-6, atol=0) else NAN
    with np.errstate(all="ignore"):
        value = np.where(c.value == 0, 0.0, c.value * scale)
    b.set(node.outputs[0], Channels(-1, c.ids, value))


def _weighted_sum(b: Builder, node: gs.Node, c: Channels) -> None:
    """A @ X [..., K, C], A computed and carrying no channels, X's channels on its last axis (attention's
    probabilities times the values; an attention-free transformer's exp(w) @ (exp(k) * v), sweep 46): output column
    j is A @ X[..., j], so the channels pass through as in `_mixing`; a zero channel stays zero, any other varies with
    A. Sweep 46: "consumer MatMul ... has no constant 2-D weight" kept every dead value unit."""
    with np.errstate(invalid="ignore"):
        b.set(node.outputs[0], Channels(-1, c.ids, np.where(c.value == 0, 0.0, NAN)))


def _bias(b: Builder, node: gs.Node, n: int) -> tuple[np.ndarray, str | None]:
    t = _opt_input(node, 2)
    if t is None:
        return np.zeros(n), None
    v = _const(t)
    return (np.full(n, NAN) if v is None else v.astype(np.float64)), b.frozen(t, node)


def _tied_bias(b: Builder, node: gs.Node, n: int) -> tuple[np.ndarray, str | None, bool]:
    """(bias per output channel, why it may not be sliced, whether a fold may edit it): a bias alike readers share
    is sliced once (tied with the outputs by the caller), never folded into."""
    bias, strict = _bias(b, node, n)
    t = _opt_input(node, 2)
    return bias, (b.shared(t, node) if t is not None else None), strict is None


def _conv(b: Builder, node: gs.Node) -> None:
    x, w = node.inputs[:2]
    W, g, cx = _const(w), int(_attr(node, "group", 1)), b.ch(node.inputs[0])
    if W is None:
        return b.opaque(node, "has a non-constant weight")
    if g == 1:
        return _conv_dense(b, node, W)
    if cx is not None and W.shape[1] == 1 and len(cx.ids) == g and W.shape[0] % g == 0:
        return _depthwise(b, node, W, cx)
    if W.shape[0] % g == 0 and (cx is None or (len(cx.ids) == g * W.shape[1] and cx.axis == 1 - W.ndim)):
        return _grouped(b, node, W, g, cx)
    b.opaque(node, f"is a grouped Conv (group={g}), which has no channel rule")


def _conv_dense(b: Builder, node: gs.Node, W: np.ndarray) -> None:
    x, w = node.inputs[:2]
    o, i, axis = W.shape[0], W.shape[1], 1 - W.ndim
    bias, bias_frozen, foldable = _tied_bias(b, node, o)
    frozen = b.shared(w, node)  # a weight alike Convs read (a Siamese net's towers) is tied, not frozen
    taps = W.reshape(o, i, -1).sum(axis=2, dtype=np.float64)  # a constant input channel meets every tap
    fold = (lambda v: taps @ v) if _no_padding(node) and foldable else None
    if b.read(node, x, axis, W.swapaxes(0, 1).reshape(i, -1), fold, frozen):
        b.tie(w, 1, x, node)
        b.slices(x, w, 1)
    b.produce(node, w, W.reshape(o, -1), axis, bias, frozen or bias_frozen)
    b.tie(w, 0, node.outputs[0], node)
    if _opt_input(node, 2) is not None:
        b.tie(node.inputs[2], 0, node.outputs[0], node)
    b.slices(node.outputs[0], w, 0, lambda keep: b.cg.slice_input(node, 2, 0, keep))


def _join_groups(b: Builder, ids: np.ndarray, g: int) -> None:
    """Local channel j of every one of the g equal groups of `ids` is one class (a grouped Conv's input or output)."""
    width = len(ids) // g
    for k in range(1, g):
        for j in range(width):
            b.cg.union(ids[k * width + j], ids[j])


def _grouped(b: Builder, node: gs.Node, W: np.ndarray, g: int, cx: Channels | None) -> None:
    """Group k reads input channels k·ci … k·ci+ci-1 and writes outputs k·co … k·co+co-1 (RegNet, ResNeXt). The
    groups must keep equal widths, so local channel j of every group is one class, on each side: a local channel goes
    from all groups at once, and `group` stays."""
    x, w = node.inputs[:2]
    o, ci, axis = W.shape[0], W.shape[1], 1 - W.ndim
    co = o // g
    bias, bias_frozen = _bias(b, node, o)
    frozen = b.frozen(w, node)
    if cx is not None:
        _join_groups(b, cx.ids, g)
        rows = np.concatenate([W[k * co:(k + 1) * co].swapaxes(0, 1).reshape(ci, -1) for k in range(g)])
        taps = W.reshape(o, ci, -1).sum(axis=2, dtype=np.float64)

        def fold(v: np.ndarray) -> np.ndarray:
            return np.concatenate([taps[k * co:(k + 1) * co] @ v[k * ci:(k + 1) * ci] for k in range(g)])

        if b.read(node, x, axis, rows, fold if _no_padding(node) and not bias_frozen else None, frozen):
            b.edit(x, lambda keep: b.cg.slice(w, 1, keep[:ci]))
    b.produce(node, w, W.reshape(o, -1), axis, bias, frozen or bias_frozen)
    ids = b.ch(node.outputs[0]).ids
    _join_groups(b, ids, g)
    b.slices(node.outputs[0], w, 0, lambda keep: b.cg.slice_input(node, 2, 0, keep))


def _depthwise(b: Builder, node: gs.Node, W: np.ndarray, cx: Channels) -> None:
    """Input channel k feeds only filters k·m … k·m+m-1: they are members of class k, not consumers."""
    x, w = node.inputs[:2]
    if cx.axis != 1 - W.ndim:
        return b.opaque(node, f"reads '{x.name}' on another axis")
    m, rows = W.shape[0] // len(cx.ids), W.reshape(W.shape[0], -1)
    bias, bias_frozen = _bias(b, node, W.shape[0])
    b.block(cx.ids, b.frozen(w, node) or bias_frozen or "")
    taps, lifted = rows.sum(axis=1, dtype=np.float64), np.repeat(cx.value, m)
    # a constant channel meets every tap where nothing is padded; a zero one gives the bias, padded or not (sweep 40:
    # Keras' SeparableConv1D(padding="same") kept a dead channel of the layer before it, silently)
    through = lifted * taps + bias if _no_padding(node) else np.where(lifted == 0, bias, NAN)
    out = node.outputs[0]
    b.set(out, Channels(cx.axis, np.repeat(cx.ids, m), np.where(rows.any(axis=1), through, bias)))
    b.cg.layers.append(Layer(node.name, node.op, w.name, out.name, rows))
    b.cg.axes.append(WeightAxis(w.name, 0, out.name))

    def edit(keep: np.ndarray) -> None:
        b.cg.slice(w, 0, keep)
        b.cg.slice_input(node, 2, 0, keep)
        node.attrs["group"] = int(keep.sum()) // m

    b.edit(out, edit)


def _conv_transpose(b: Builder, node: gs.Node) -> None:
    x, w = node.inputs[:2]
    W, g, cx = _const(w), int(_attr(node, "group", 1)), b.ch(node.inputs[0])
    if W is None:
        return b.opaque(node, "is a non-constant ConvTranspose")
    if g != 1:
        if W.shape[0] % g == 0 and (cx is None or (len(cx.ids) == W.shape[0] and cx.axis == 1 - W.ndim)):
            return _grouped_transpose(b, node, W, g, cx)
        return b.opaque(node, f"is a grouped ConvTranspose (group={g}) whose input is not its channels")
    i, o, axis = W.shape[0], W.shape[1], 1 - W.ndim
    if b.read(node, x, axis, W.reshape(i, -1), None, b.frozen(w, node)):  # borders see fewer taps: no folding
        b.slices(x, w, 0)
    bias, bias_frozen = _bias(b, node, o)
    b.produce(node, w, W.swapaxes(0, 1).reshape(o, -1), axis, bias, b.frozen(w, node) or bias_frozen)
    b.slices(node.outputs[0], w, 1, lambda keep: b.cg.slice_input(node, 2, 0, keep))




def _grouped_transpose(b: Builder, node: gs.Node, W: np.ndarray, g: int, cx: Channels | None) -> None:
    """A grouped ConvTranspose, W [C_in, C_out/g, k…]: group k reads input channels k·ci … k·ci+ci-1 and writes
    outputs k·co … k·co+co-1, as a grouped Conv (`_grouped`): local channel j of every group is one class on each
    side, so the groups keep equal widths and `group` stays; the input's channels are W's axis 0, the outputs' its
    local axis 1. Sweep 39: a ConvTranspose2d(16, 16, groups=4) kept the dead channels before it ("a grouped or
    non-constant ConvTranspose")."""
    x, w = node.inputs[:2]
    i, co, axis = W.shape[0], W.shape[1], 1 - W.ndim
    ci = i // g
    frozen = b.frozen(w, node)
    if cx is not None:
        _join_groups(b, cx.ids, g)
        if b.read(node, x, axis, W.reshape(i, -1), None, frozen):  # borders see fewer taps: no folding
            b.slices(x, w, 0)
    bias, bias_frozen = _bias(b, node, g * co)
    rows = np.concatenate([W[k * ci:(k + 1) * ci].swapaxes(0, 1).reshape(co, -1) for k in range(g)])
    b.produce(node, w, rows, axis, bias, frozen or bias_frozen)
    ids = b.ch(node.outputs[0]).ids
    _join_groups(b, ids, g)
    b.edit(node.outputs[0], lambda keep: [b.cg.slice(w, 1, keep[:co]), b.cg.slice_input(node, 2, 0, keep)])


RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}  # W and R rows are these many blocks of hidden_size, in order


def _recurrent(b: Builder, node: gs.Node) -> None:
    """LSTM/GRU/RNN: hidden unit k is a class. Its incoming weights are row k of every gate block of
    W and R (and of B, P); what reads it is column k of R (every gate of every unit reads h[t-1]) and whatever reads
    Y, Y_h or Y_c at position k. A unit's output varies with time even when its rows are zero (its cell integrates
    sigmoid(bias) gates), so it never holds a constant: it goes only when nothing reads it, column k of R and every
    reader downstream zero, and then exactly, whatever its own rows hold. Removing it slices W, R, B and P by gate
    block, R's columns and the initial states (an initial state other than an initializer of this node alone keeps
    its size and is read through a Gather of the kept units: a graph input's interface does not change; its own
    channels, a graph input's features seeded as classes, are read and stay), and sets
    hidden_size. A bidirectional layer's unit k of both directions is one class (they sit at the same position of
    Y's last axis; torch concatenates them as [..., 2, H] -> [..., 2H], rules_layout._merge_before): they go
    together."""
    x, w, r = node.inputs[:3]
    W, R, gates = _const(w), _const(r), RECURRENT_GATES[node.op]
    outs = [t for t in node.outputs if t.name]
    if W is None or R is None or W.ndim != 3 or R.ndim != 3 or W.shape[0] != R.shape[0] or not outs:
        why = "has no constant W and R" if outs else "has no output that is read"
        log.info("%s '%s' %s; its weights keep their channels", node.op, node.name, why)
        return b.opaque(node, f"({node.op}) {why}")
    hidden, dirs = R.shape[2], W.shape[0]
    bias_t = _opt_input(node, 3)
    peep = _opt_input(node, 7) if node.op == "LSTM" else None
    extras = [t for t in (bias_t, peep) if t is not None]
    frozen = next((why for why in (b.frozen(t, node) for t in (w, r, *extras)) if why), None)
    if frozen is None and any(_const(t) is None for t in extras):
        frozen = f"{_desc(node)} has a computed bias or peephole"
    # a constant input channel is not folded into B: kept unless unread
    if b.read(node, x, -1, np.concatenate([W[d].T for d in range(dirs)], axis=1), None, frozen):
        b.slices(x, w, 2)
    main = outs[0]
    ids = b.cg.new_classes(hidden, _desc(node))
    value = np.full(hidden, NAN)  # never a constant (docstring)
    for t in outs:
        b.set(t, Channels(-1, ids, value))
    by_unit = [m[d].reshape(gates, hidden, -1).swapaxes(0, 1).reshape(hidden, -1) for m in (W, R) for d in range(dirs)]
    b.cg.layers.append(Layer(node.name, node.op, w.name, main.name, np.hstack(by_unit)))
    b.cg.axes += [WeightAxis(w.name, 1, main.name, gates, True), WeightAxis(r.name, 1, main.name, gates, True),
                  WeightAxis(r.name, 2, main.name, 1, False)]
    if frozen:
        b.block(ids, frozen)
    # column k of R: every gate of its direction reads unit k's last output
    b.read(node, main, -1, np.concatenate([R[d].T for d in range(dirs)], axis=1), None, frozen)
    states = [i for i in ((5, 6) if node.op == "LSTM" else (5,)) if _opt_input(node, i) is not None]
    for i in states:  # an initial state's channels (a graph input's features: g2p_id's decoder) are read: they stay
        c = b.ch(node.inputs[i])
        if c is not None:
            b.block(c.ids, f"{_desc(node)} reads '{node.inputs[i].name}' as its initial state")

    def edit(keep: np.ndarray) -> None:
        rows = np.tile(keep, gates)
        b.cg.slice(w, 1, rows)
        b.cg.slice(r, 1, rows)
        b.cg.slice(r, 2, keep)
        if bias_t is not None:
            b.cg.slice(bias_t, 1, np.tile(keep, 2 * gates))
        if peep is not None:
            b.cg.slice(peep, 1, np.tile(keep, 3))
        taken: dict[str, gs.Variable] = {}  # LSTM's h0 and c0 are often one tensor (torch: zeros of one shape)
        for i in states:
            t = node.inputs[i]
            if isinstance(t, gs.Constant) and not b.frozen(t, node):
                b.cg.slice(t, 2, keep)
                continue
            if t.name not in taken:
                idx = gs.Constant(b.cg.unique(f"{node.name}_kept_units"), np.flatnonzero(keep).astype(np.int64))
                out = gs.Variable(b.cg.unique(f"{t.name}_kept"), dtype=t.dtype)
                b.cg.graph.nodes.append(gs.Node("Gather", b.cg.unique(f"{node.name}_state_gather"), {"axis": 2},
                                                [t, idx], [out]))
                taken[t.name] = out
            node.inputs[i] = taken[t.name]
        node.attrs["hidden_size"] = int(keep.sum())

    b.edit(main, edit)
