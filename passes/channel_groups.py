"""Channel groups: which channels of which tensors live and die together (coupling as data, after DepGraph).

A *class* is one output channel of a weight layer (Gemm, MatMul with a constant weight, Conv, ConvTranspose) or,
with `gather_inputs`, one feature of a flattened graph input. Walking the graph in topological order, every
tensor that carries classes gets a `Channels` map: its channel axis and, per position on that axis, the class it
holds. One small rule per op type (`RULES`) says how the map flows through that op:

    Conv c1 ─ BN ─ Relu ─ MaxPool ─ Flatten ─ Gemm fc1    c1 channel k  ==  fc1 input rows k·HW … k·HW+HW-1
    Conv a ─┐
    Conv b ─┴─ Add ─ Relu ─ Conv c                          a channel k  ==  b channel k  (one class)
    Concat / Split: offsets        depthwise Conv: channel k stays class k (its filter k goes with it)

Along the way each rule records, as data:
  * `Layer`: weights whose output rows are the classes (producers, depthwise members, gathered inputs);
  * `Read`:  a consumer's weight rows indexed by a tensor's positions, with `fold`, which turns constant inputs
             into a bias delta where that is exact (None where it is not, e.g. a padded Conv);
  * `Edit`:  what to slice once the kept positions of a tensor are known (constants, Split sizes, Reshape shape,
             depthwise `group`, a Gather on an input);
  * `Channels.value`: the constant each position holds when it is input-independent (act(bias) of a zero-weight
             row, carried through the element-wise chain), NaN when unknown;
  * blocks: an op with no rule, a graph output, a shared or protected initializer keeps the classes it touches.

`ChannelGraph.remove(dead)` folds, slices and adds biases; deciding what is dead is the caller's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

Shapes = dict[str, list]  # tensor name -> dims (int, or None where unknown); from onnx shape inference
NAN = float("nan")


@dataclass
class Channels:
    axis: int  # negative: counted from the end, so numpy broadcasting keeps it in place
    ids: np.ndarray  # raw class id per position
    value: np.ndarray  # float64 constant per position, NaN when not known to be input-independent


@dataclass
class Layer:
    node: str
    op: str
    weight: str
    tensor: str  # its output rows are the positions of this tensor
    rows: np.ndarray  # (positions, fan-in)


@dataclass
class Read:
    node: gs.Node
    tensor: str
    rows: np.ndarray  # (positions of tensor, fan-out)
    fold: Callable[[np.ndarray], np.ndarray] | None  # per-position constants -> delta of the node's output


@dataclass
class Edit:
    tensor: str
    apply: Callable[[np.ndarray], None]  # keep mask over the tensor's positions


@dataclass
class WeightAxis:
    """Axis `axis` of initializer `weight` is indexed by the positions of `tensor` (for neuron masks)."""

    weight: str
    axis: int
    tensor: str


@dataclass
class ChannelGroup:
    """Classes linked through tensors that hold several of them; `classes` are root ids."""

    classes: list[int]
    tensors: list[str]
    layers: list[Layer]
    reads: list[Read]

    @property
    def size(self) -> int:
        return len(self.classes)


@dataclass
class ChannelGraph:
    graph: gs.Graph
    channels: dict[str, Channels] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    blocks: list[tuple[np.ndarray, str]] = field(default_factory=list)  # raw ids, note
    origins: list[str] = field(default_factory=list)  # raw id -> "Conv 'c1'"
    parent: list[int] = field(default_factory=list)  # union-find over raw ids
    slices: list[tuple[str, int, np.ndarray]] = field(default_factory=list)  # (initializer, axis, keep) done
    axes: list[WeightAxis] = field(default_factory=list)  # weight axes indexed by channels, members and consumers
    boxes: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # (flattened input, its dims): crops
    gain: dict[int, float] = field(default_factory=dict)  # raw id -> |factor| of BN/Mul/Div on its way (default 1)
    _root: np.ndarray | None = None
    _names: set[str] = field(default_factory=set)

    # -- classes -----------------------------------------------------------------------------------------------
    def new_classes(self, n: int, origin: str) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.origins.extend([origin] * n)
        return np.arange(start, start + n, dtype=np.int64)

    def scale(self, ids: np.ndarray, factors: np.ndarray) -> None:
        """A per-channel factor multiplies these classes on their way (BatchNorm, Mul, Div by a constant)."""
        for i, f in zip(np.asarray(ids).tolist(), np.abs(np.asarray(factors, dtype=np.float64)).tolist()):
            self.gain[i] = self.gain.get(i, 1.0) * f

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
        self._root = None

    def root_of(self, ids: np.ndarray) -> np.ndarray:
        if self._root is None or len(self._root) != len(self.parent):
            self._root = np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)
        return self._root[np.asarray(ids, dtype=np.int64)]

    def roots(self, tensor: str) -> np.ndarray:
        return self.root_of(self.channels[tensor].ids)

    def blocked(self) -> set[int]:
        return {int(r) for ids, _ in self.blocks for r in self.root_of(ids)}

    def notes(self, dead: set[int]) -> list[str]:
        """One line per block: who was kept, why, and how many otherwise-removable classes that cost."""
        out: dict[str, int] = {}
        for ids, why in self.blocks:
            who = ", ".join(dict.fromkeys(self.origins[int(i)] for i in ids))
            n = len(set(self.root_of(ids).tolist()) & dead)
            key = f"channels of {who} kept: {why}"
            out[key] = max(out.get(key, 0), n)
        return [k + (f" ({n} dead kept)" if n else "") for k, n in out.items()]

    def boxed(self, dead: set[int]) -> set[int]:
        """`dead` without the input features inside the box of each cropped input's live features."""
        revive: set[int] = set()
        for tensor, dims in self.boxes:
            roots = self.roots(tensor)
            live = ~np.isin(roots, np.array(sorted(dead), dtype=np.int64))
            if live.any():
                lo, hi = _box(live, dims)
                inside = np.ones(dims, dtype=bool)
                for a, (l, h) in enumerate(zip(lo, hi)):
                    inside &= (np.arange(dims[a]) >= l).reshape([-1 if k == a else 1 for k in range(len(dims))])
                    inside &= (np.arange(dims[a]) < h).reshape([-1 if k == a else 1 for k in range(len(dims))])
                revive.update(roots[inside.reshape(-1)].tolist())
        return dead - revive

    def groups(self) -> list[ChannelGroup]:
        """Connected components of classes, linked through the tensors that hold several of them."""
        link: dict[int, int] = {}

        def top(r: int) -> int:
            while link.setdefault(r, r) != r:
                r = link[r]
            return r

        for t in self.channels:
            rs = [top(r) for r in self.roots(t).tolist()]
            for r in rs:
                link[r] = min(rs)
        by: dict[int, ChannelGroup] = {}
        for r in sorted(link):
            by.setdefault(top(r), ChannelGroup([], [], [], [])).classes.append(r)
        key = {t: top(int(self.roots(t)[0])) for t in self.channels if len(self.channels[t].ids)}
        for t, k in key.items():
            by[k].tensors.append(t)
        for item in self.layers + self.reads:
            if item.tensor in key:
                (by[key[item.tensor]].layers if isinstance(item, Layer) else by[key[item.tensor]].reads).append(item)
        return list(by.values())

    # -- editing -----------------------------------------------------------------------------------------------
    def unique(self, name: str) -> str:
        if not self._names:
            self._names = set(self.graph.tensors()) | {n.name for n in self.graph.nodes}
        base, k = name, 0
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def slice(self, const: gs.Constant, axis: int, keep: np.ndarray) -> None:
        if const.values.shape[axis] == len(keep) and not keep.all():
            const.values = np.compress(keep, const.values, axis=axis)
            self.slices.append((const.name, axis % const.values.ndim, keep))

    def slice_input(self, node: gs.Node, index: int, axis: int, keep: np.ndarray) -> None:
        t = _opt_input(node, index)
        if isinstance(t, gs.Constant) and t.values.ndim:
            self.slice(t, axis, keep)

    def remove(self, dead: set[int]) -> dict[str, np.ndarray]:
        """Fold the constants of dead positions into consumer biases, then slice everything. Returns keep masks."""
        dead_arr = np.array(sorted(dead), dtype=np.int64)
        keep = {t: ~np.isin(self.roots(t), dead_arr) for t in self.channels}
        pending: dict[int, tuple[gs.Node, np.ndarray]] = {}
        for rd in self.reads:
            live = rd.rows.any(axis=1) & ~keep[rd.tensor]
            if not live.any():
                continue
            vals = np.where(live, self.channels[rd.tensor].value, 0.0)
            if rd.fold is None or not np.isfinite(vals).all():
                raise ValueError(f"{_desc(rd.node)}: a removed input channel is neither unread nor a foldable constant")
            node, delta = pending.get(id(rd.node), (rd.node, 0.0))
            pending[id(rd.node)] = (node, delta + rd.fold(vals))
        for e in self.edits:
            if not keep[e.tensor].all():
                e.apply(keep[e.tensor])
        for node, delta in pending.values():
            k = keep.get(node.outputs[0].name)
            BIAS_ADDERS[node.op](self, node, delta if k is None else delta[k])
        return keep


# -- small helpers ---------------------------------------------------------------------------------------------
def _desc(node: gs.Node) -> str:
    return f"{node.op} '{node.name}'"


def _attr(node: gs.Node, name: str, default):
    v = node.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else v


def _opt_input(node: gs.Node, index: int):
    return node.inputs[index] if len(node.inputs) > index and node.inputs[index].name else None


def _const(t) -> np.ndarray | None:
    if t is None:
        return None
    if isinstance(t, gs.Constant):
        return t.values
    if len(t.inputs) == 1 and t.inputs[0].op == "Constant" and isinstance(t.inputs[0].attrs.get("value"), gs.Constant):
        return t.inputs[0].attrs["value"].values
    return None


def _no_padding(node: gs.Node) -> bool:
    return _attr(node, "auto_pad", "NOTSET") in ("NOTSET", "VALID") and not any(_attr(node, "pads", []) or [])


def _per_channel(k: np.ndarray | None, n: int, axis: int = -1) -> np.ndarray:
    """The length-n vector a constant adds per channel on `axis`, or NaNs when it varies along another axis."""
    if k is None:
        return np.zeros(n)
    k = np.asarray(k, dtype=np.float64)
    ax = k.ndim + axis
    size = k.shape[ax] if ax >= 0 else 1
    if k.size != size:
        return np.full(n, NAN)
    return np.broadcast_to(k.reshape(-1), (n,)).copy()


def _extra_outputs_used(node: gs.Node) -> bool:
    return any(o.outputs for o in node.outputs[1:])


def _spread(c: Channels, outer: int, inner: int) -> Channels:
    """Channel k becomes `inner` consecutive features, the whole block repeated `outer` times (Flatten)."""
    return Channels(-1, np.tile(np.repeat(c.ids, inner), outer), np.tile(np.repeat(c.value, inner), outer))


# -- the builder --------------------------------------------------------------------------------------------------
class _Builder:
    def __init__(self, graph: gs.Graph, shapes: Shapes, protected: frozenset[str]) -> None:
        self.cg = ChannelGraph(graph)
        self.shapes = shapes
        self.protected = protected

    def ch(self, t) -> Channels | None:
        return self.cg.channels.get(t.name) if t is not None and t.name else None

    def set(self, t, c: Channels) -> None:
        self.cg.channels[t.name] = c

    def shape(self, t) -> list | None:
        return self.shapes.get(t.name)

    def rank(self, t) -> int | None:
        s = self.shape(t)
        return None if s is None else len(s)

    def block(self, ids: np.ndarray, why: str | None) -> None:
        if why and len(ids):
            self.cg.blocks.append((np.asarray(ids, dtype=np.int64), why))

    def opaque(self, node: gs.Node, why: str) -> None:
        """This node cannot carry or read channels: keep every class reaching it."""
        for t in node.inputs:
            if self.ch(t) is not None:
                self.block(self.ch(t).ids, f"consumer {_desc(node)} {why}")

    def frozen(self, t, user: gs.Node) -> str | None:
        """Why `t` may not be edited for `user`'s sake (None when it may)."""
        if not isinstance(t, gs.Constant):
            return f"'{t.name}' of {_desc(user)} is not an initializer"
        if t.name in self.protected:
            return f"initializer '{t.name}' is protected"
        others = sorted({n.name for n in t.outputs if n is not user})
        return f"initializer '{t.name}' is shared with {', '.join(repr(o) for o in others)}" if others else None

    def produce(self, node: gs.Node, w, rows: np.ndarray, axis: int, bias: np.ndarray, frozen: str | None) -> None:
        value = np.where(rows.any(axis=1), NAN, bias)
        ids = self.cg.new_classes(len(rows), _desc(node))
        self.set(node.outputs[0], Channels(axis, ids, value))
        self.cg.layers.append(Layer(node.name, node.op, w.name, node.outputs[0].name, rows))
        if frozen:
            self.block(ids, frozen)

    def read(self, node: gs.Node, t, axis: int, rows: np.ndarray, fold, frozen: str | None) -> bool:
        c = self.ch(t)
        if c is None:
            return False
        why = frozen or (None if c.axis == axis else f"{_desc(node)} reads '{t.name}' on another axis")
        if why:
            self.block(c.ids, why)
            return False
        self.cg.reads.append(Read(node, t.name, rows, fold))
        return True

    def edit(self, t, fn: Callable[[np.ndarray], None]) -> None:
        self.cg.edits.append(Edit(t.name, fn))

    def slices(self, t, w: gs.Constant, axis: int, *more: Callable[[np.ndarray], None]) -> None:
        """Axis `axis` of weight `w` follows the positions of `t` (plus other edits on the same keep mask)."""
        self.cg.axes.append(WeightAxis(w.name, axis, t.name))
        self.edit(t, lambda keep: [self.cg.slice(w, axis, keep), *(fn(keep) for fn in more)])


# -- rules: weight layers -----------------------------------------------------------------------------------------
def _gemm(b: _Builder, node: gs.Node) -> None:
    a, w, c = node.inputs[0], node.inputs[1], _opt_input(node, 2)
    W, C = _const(w), _const(c)
    if W is None or W.ndim != 2 or _attr(node, "transA", 0) or (c is not None and C is None):
        return b.opaque(node, "has no constant weight and bias (or uses transA)")
    tb, alpha, beta = bool(_attr(node, "transB", 0)), float(_attr(node, "alpha", 1.0)), float(_attr(node, "beta", 1.0))
    wkn = W.T if tb else W  # [K, N] view of the weight (rows stay in the weight's dtype; folds upcast)
    in_ax, out_ax = (1, 0) if tb else (0, 1)
    n = wkn.shape[1]
    bias_frozen = b.frozen(c, node) if c is not None else None
    foldable = c is None or (beta != 0 and not bias_frozen)
    fold = (lambda v: alpha * (v @ wkn.astype(np.float64))) if foldable else None
    if b.read(node, a, -1, wkn, fold, b.frozen(w, node)):
        b.slices(a, w, in_ax)
    sliced_bias = C is not None and C.ndim > 0 and C.shape[-1] == n > 1
    bias = beta * _per_channel(C, n) if C is not None else np.zeros(n)
    b.produce(node, w, wkn.T, -1, bias, b.frozen(w, node) or (bias_frozen if sliced_bias else None))
    b.slices(node.outputs[0], w, out_ax, lambda keep: b.cg.slice_input(node, 2, -1, keep))


def _matmul_weight(w):
    """(constant to slice, [K, N] weight, K axis in it, N axis in it, user of the constant) or None."""
    if isinstance(w, gs.Constant) and w.values.ndim == 2:
        return w, w.values, 0, 1, None
    t = w.inputs[0] if len(w.inputs) == 1 else None
    if t is not None and t.op == "Transpose" and isinstance(t.inputs[0], gs.Constant) and t.inputs[0].values.ndim == 2:
        if list(_attr(t, "perm", [1, 0])) == [1, 0] and len(w.outputs) == 1:
            return t.inputs[0], t.inputs[0].values.T, 1, 0, t
    return None


def _matmul(b: _Builder, node: gs.Node) -> None:
    a, w = node.inputs
    found = _matmul_weight(w)
    if found is None:
        return b.opaque(node, "has no constant 2-D weight (or one behind a non-trivial Transpose)")
    src, W, in_ax, out_ax, via = found
    wkn = W
    frozen = b.frozen(src, via or node)
    if b.read(node, a, -1, wkn, lambda v: v @ wkn.astype(np.float64), frozen):
        b.slices(a, src, in_ax)
    b.produce(node, src, wkn.T, -1, np.zeros(wkn.shape[1]), frozen)
    b.slices(node.outputs[0], src, out_ax)


def _bias(b: _Builder, node: gs.Node, n: int) -> tuple[np.ndarray, str | None]:
    t = _opt_input(node, 2)
    if t is None:
        return np.zeros(n), None
    v = _const(t)
    return (np.full(n, NAN) if v is None else v.astype(np.float64)), b.frozen(t, node)


def _conv(b: _Builder, node: gs.Node) -> None:
    x, w = node.inputs[:2]
    W, g, cx = _const(w), int(_attr(node, "group", 1)), b.ch(node.inputs[0])
    if W is None:
        return b.opaque(node, "has a non-constant weight")
    if g == 1:
        return _conv_dense(b, node, W)
    if cx is not None and W.shape[1] == 1 and len(cx.ids) == g and W.shape[0] % g == 0:
        return _depthwise(b, node, W, cx)
    b.opaque(node, f"is a grouped Conv (group={g}), which has no channel rule")


def _conv_dense(b: _Builder, node: gs.Node, W: np.ndarray) -> None:
    x, w = node.inputs[:2]
    o, i, axis = W.shape[0], W.shape[1], 1 - W.ndim
    bias, bias_frozen = _bias(b, node, o)
    taps = W.reshape(o, i, -1).sum(axis=2, dtype=np.float64)  # a constant input channel meets every tap
    fold = (lambda v: taps @ v) if _no_padding(node) and not bias_frozen else None
    if b.read(node, x, axis, W.swapaxes(0, 1).reshape(i, -1), fold, b.frozen(w, node)):
        b.slices(x, w, 1)
    b.produce(node, w, W.reshape(o, -1), axis, bias, b.frozen(w, node) or bias_frozen)
    b.slices(node.outputs[0], w, 0, lambda keep: b.cg.slice_input(node, 2, 0, keep))


def _depthwise(b: _Builder, node: gs.Node, W: np.ndarray, cx: Channels) -> None:
    """Input channel k feeds only filters k·m … k·m+m-1: they are members of class k, not consumers."""
    x, w = node.inputs[:2]
    if cx.axis != 1 - W.ndim:
        return b.opaque(node, f"reads '{x.name}' on another axis")
    m, rows = W.shape[0] // len(cx.ids), W.reshape(W.shape[0], -1)
    bias, bias_frozen = _bias(b, node, W.shape[0])
    b.block(cx.ids, b.frozen(w, node) or bias_frozen or "")
    taps = rows.sum(axis=1, dtype=np.float64)
    through = np.repeat(cx.value, m) * taps + bias if _no_padding(node) else np.full(len(rows), NAN)
    out = node.outputs[0]
    b.set(out, Channels(cx.axis, np.repeat(cx.ids, m), np.where(rows.any(axis=1), through, bias)))
    b.cg.layers.append(Layer(node.name, node.op, w.name, out.name, rows))
    b.cg.axes.append(WeightAxis(w.name, 0, out.name))

    def edit(keep: np.ndarray) -> None:
        b.cg.slice(w, 0, keep)
        b.cg.slice_input(node, 2, 0, keep)
        node.attrs["group"] = int(keep.sum()) // m

    b.edit(out, edit)


def _conv_transpose(b: _Builder, node: gs.Node) -> None:
    x, w = node.inputs[:2]
    W = _const(w)
    if W is None or int(_attr(node, "group", 1)) != 1:
        return b.opaque(node, "is a grouped or non-constant ConvTranspose")
    i, o, axis = W.shape[0], W.shape[1], 1 - W.ndim
    if b.read(node, x, axis, W.reshape(i, -1), None, b.frozen(w, node)):  # borders see fewer taps: no folding
        b.slices(x, w, 0)
    bias, bias_frozen = _bias(b, node, o)
    b.produce(node, w, W.swapaxes(0, 1).reshape(o, -1), axis, bias, b.frozen(w, node) or bias_frozen)
    b.slices(node.outputs[0], w, 1, lambda keep: b.cg.slice_input(node, 2, 0, keep))


# -- rules: element-wise ----------------------------------------------------------------------------------------
def _erf(v: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(v) if v.size else v


def _clip(v: np.ndarray, node: gs.Node) -> np.ndarray:
    lo, hi = (_opt_input(node, i) for i in (1, 2))
    if (lo is not None and _const(lo) is None) or (hi is not None and _const(hi) is None):
        return np.full_like(v, NAN)
    lo = float(_const(lo)) if lo is not None else float(_attr(node, "min", -np.inf))
    hi = float(_const(hi)) if hi is not None else float(_attr(node, "max", np.inf))
    return np.clip(v, lo, hi)


def _gelu(v: np.ndarray, node: gs.Node) -> np.ndarray:
    if _attr(node, "approximate", "none") == "tanh":
        return 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
    return 0.5 * v * (1 + _erf(v / math.sqrt(2)))


def _selu(v: np.ndarray, n: gs.Node) -> np.ndarray:
    a, g = _attr(n, "alpha", 1.67326319217681884765625), _attr(n, "gamma", 1.05070102214813232421875)
    return g * np.where(v > 0, v, a * np.exp(v) - a)


UNARY: dict[str, Callable[[np.ndarray, gs.Node], np.ndarray]] = {
    "Relu": lambda v, n: np.maximum(v, 0),
    "LeakyRelu": lambda v, n: np.where(v >= 0, v, _attr(n, "alpha", 0.01) * v),
    "Clip": _clip,
    "Sigmoid": lambda v, n: 1 / (1 + np.exp(-v)),
    "Tanh": lambda v, n: np.tanh(v),
    "Erf": lambda v, n: _erf(v),
    "Gelu": _gelu,
    "HardSigmoid": lambda v, n: np.clip(_attr(n, "alpha", 0.2) * v + _attr(n, "beta", 0.5), 0, 1),
    "HardSwish": lambda v, n: v * np.clip(v / 6 + 0.5, 0, 1),
    "Elu": lambda v, n: np.where(v > 0, v, _attr(n, "alpha", 1.0) * np.expm1(v)),
    "Selu": _selu,
    "Softplus": lambda v, n: np.logaddexp(0, v),
    "Softsign": lambda v, n: v / (1 + np.abs(v)),
    "Neg": lambda v, n: -v,
    "Abs": lambda v, n: np.abs(v),
    "Identity": lambda v, n: v,
    "Dropout": lambda v, n: v,  # inference: the identity (training_mode is refused below)
}


def _unary(b: _Builder, node: gs.Node) -> None:
    c = b.ch(node.inputs[0])
    mode = _opt_input(node, 2) if node.op == "Dropout" else None
    training = mode is not None and (_const(mode) is None or bool(np.any(_const(mode))))
    if c is None or _extra_outputs_used(node) or training:
        return b.opaque(node, "uses a second output, training mode or a channel-carrying parameter")
    with np.errstate(all="ignore"):
        b.set(node.outputs[0], Channels(c.axis, c.ids, UNARY[node.op](c.value, node)))


BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
}


def _binary(b: _Builder, node: gs.Node) -> None:
    x, y = node.inputs
    cx, cy, fn = b.ch(x), b.ch(y), BINARY[node.op]
    with np.errstate(all="ignore"):
        if cx is not None and cy is not None:
            return _merge(b, node, [cx, cy], fn(cx.value, cy.value))
        c, k = (cx, y) if cx is not None else (cy, x)
        K = _const(k)
        if K is None:
            return b.opaque(node, f"combines the channels with '{k.name}', which carries none")
        ax = K.ndim + c.axis
        size = K.shape[ax] if ax >= 0 else 1
        if size not in (1, len(c.ids)):
            return b.opaque(node, f"has a constant '{k.name}' {K.shape} that does not broadcast on the channel axis")
        if size > 1:
            b.block(c.ids, b.frozen(k, node))
            b.edit(x if cx is not None else y, lambda keep: b.cg.slice(k, ax, keep))
        kv = _per_channel(K, len(c.ids), c.axis)
        if node.op == "Mul" or (node.op == "Div" and cx is not None):
            with np.errstate(divide="ignore"):
                b.cg.scale(c.ids, kv if node.op == "Mul" else 1.0 / kv)
        b.set(node.outputs[0], Channels(c.axis, c.ids, fn(c.value, kv) if cx is not None else fn(kv, c.value)))


def _merge(b: _Builder, node: gs.Node, chans: list[Channels], value: np.ndarray) -> None:
    """Element-wise between channel-carrying tensors (residual Add, Mul, a Concat across another axis)."""
    first = chans[0]
    if any(c.axis != first.axis or len(c.ids) != len(first.ids) for c in chans):
        return b.opaque(node, "combines tensors whose channels do not line up")
    for c in chans[1:]:
        for i, j in zip(first.ids.tolist(), c.ids.tolist()):
            b.cg.union(i, j)
    b.set(node.outputs[0], Channels(first.axis, first.ids, value))


def _batchnorm(b: _Builder, node: gs.Node) -> None:
    x, params = node.inputs[0], node.inputs[1:5]
    c, r, vals = b.ch(x), b.rank(x), [_const(p) for p in node.inputs[1:5]]
    training = _attr(node, "training_mode", 0)
    if r is None or c.axis != 1 - r or any(v is None for v in vals) or _extra_outputs_used(node) or training:
        return b.opaque(node, "is not an inference BatchNormalization over axis 1 with constant statistics")
    for p in params:
        b.block(c.ids, b.frozen(p, node) if len(c.ids) > 1 else None)
    scale, bias, mean, var = (v.astype(np.float64) for v in vals)
    eps = float(_attr(node, "epsilon", 1e-5))
    b.cg.scale(c.ids, scale / np.sqrt(var + eps))
    b.set(node.outputs[0], Channels(c.axis, c.ids, (c.value - mean) / np.sqrt(var + eps) * scale + bias))
    b.edit(x, lambda keep: [b.cg.slice(p, 0, keep) for p in params])


POOL_KEEPS_CONSTANT: dict[str, Callable[[gs.Node], bool]] = {
    "MaxPool": lambda n: True,  # padding never wins a max
    "GlobalMaxPool": lambda n: True,
    "GlobalAveragePool": lambda n: True,
    "AveragePool": lambda n: not _attr(n, "count_include_pad", 0) or (_no_padding(n) and not _attr(n, "ceil_mode", 0)),
}


def _pool(b: _Builder, node: gs.Node) -> None:
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    if r is None or c.axis != 1 - r or _extra_outputs_used(node):
        return b.opaque(node, "pools over the channel axis or returns indices")
    v = c.value if POOL_KEEPS_CONSTANT[node.op](node) else np.full(len(c.ids), NAN)
    b.set(node.outputs[0], Channels(c.axis, c.ids, v))


# -- rules: layout ----------------------------------------------------------------------------------------------
def _static(dims) -> bool:
    return all(isinstance(d, int) and d >= 0 for d in dims)


def _flatten(b: _Builder, node: gs.Node) -> None:
    x = node.inputs[0]
    c, s = b.ch(x), b.shape(x)
    if s is None:
        return b.opaque(node, "needs the input shape, which shape inference did not give")
    r = len(s)
    axis, ch = _attr(node, "axis", 1) % r if r else 0, r + c.axis
    if ch < axis or not _static(s[axis:ch] + s[ch + 1 :]):
        return b.opaque(node, f"flattens '{x.name}' {s} without static spatial sizes behind the channel axis")
    b.set(node.outputs[0], _spread(c, math.prod(s[axis:ch]), math.prod(s[ch + 1 :])))


def _reshape(b: _Builder, node: gs.Node) -> None:
    """Only the flattening Reshape to [N, features] (torch's x.view(-1, C*H*W)); the shape constant follows."""
    x, k = node.inputs[:2]
    c, s, S = b.ch(x), b.shape(x), _const(k)
    ch = None if s is None else len(s) + c.axis
    if S is None or S.shape != (2,) or ch is None or ch < 1 or not _static(s[1:ch] + s[ch + 1 :]):
        return b.opaque(node, "is not a flattening Reshape with a constant shape and static spatial sizes")
    per = math.prod(s[1:ch]) * math.prod(s[ch + 1 :])
    total = per * len(c.ids)
    allowzero = _attr(node, "allowzero", 0)
    if not ((S[1] == total and S[0] in (-1, 0)) or (S[1] == -1 and S[0] == 0)) or (allowzero and 0 in S):
        return b.opaque(node, f"reshapes to {S.tolist()}, not [N, {total}]")

    def edit(keep: np.ndarray) -> None:
        if S[1] != -1:
            new = np.array([S[0], per * int(keep.sum())], dtype=S.dtype)
            node.inputs[1] = gs.Constant(b.cg.unique(f"{k.name}_pruned"), new)

    b.edit(x, edit)
    b.set(node.outputs[0], _spread(c, math.prod(s[1:ch]), math.prod(s[ch + 1 :])))


def _transpose(b: _Builder, node: gs.Node) -> None:
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    perm = list(_attr(node, "perm", [] if r is None else list(range(r))[::-1]))
    if not perm:
        return b.opaque(node, "needs the input rank")
    r = len(perm)
    b.set(node.outputs[0], Channels(perm.index(r + c.axis) - r, c.ids, c.value))


def _squeeze_axes(b: _Builder, node: gs.Node, rank: int | None) -> list[int] | None:
    t = _opt_input(node, 1)
    axes = _const(t) if t is not None else _attr(node, "axes", None)
    if axes is None and node.op == "Squeeze" and b.shape(node.inputs[0]) is not None:
        axes = [i for i, d in enumerate(b.shape(node.inputs[0])) if d == 1]
    if axes is None or rank is None or (t is not None and _const(t) is None):
        return None
    return sorted(int(a) % rank for a in np.ravel(axes))


def _squeeze(b: _Builder, node: gs.Node) -> None:
    x = node.inputs[0]
    c, r, out_rank = b.ch(x), b.rank(x), b.rank(node.outputs[0])
    axes = _squeeze_axes(b, node, r if node.op == "Squeeze" else out_rank)
    if axes is None or r is None or out_rank is None:
        return b.opaque(node, "has axes or ranks that shape inference did not give")
    ch = r + c.axis
    if node.op == "Squeeze" and ch in axes:
        return b.opaque(node, "squeezes the channel axis")
    if node.op == "Squeeze":
        new = ch - sum(a < ch for a in axes)
    else:
        new = [j for j in range(out_rank) if j not in axes][ch]
    b.set(node.outputs[0], Channels(new - out_rank, c.ids, c.value))


def _concat(b: _Builder, node: gs.Node) -> None:
    r = b.rank(node.outputs[0])
    chans = [b.ch(t) for t in node.inputs]
    if r is None:
        return b.opaque(node, "needs the output rank")
    axis = _attr(node, "axis", 0) % r - r
    if all(c is not None and c.axis != axis for c in chans):  # across another axis (batch, space): one class
        same = np.all([c.value == chans[0].value for c in chans], axis=0)
        return _merge(b, node, chans, np.where(same, chans[0].value, NAN))
    parts = []
    for t, c in zip(node.inputs, chans):
        size = (b.shape(t) or [None] * r)[axis] if c is None else None
        if c is None and not isinstance(size, int):
            return b.opaque(node, f"needs the size of input '{t.name}'")
        if c is None:  # a graph input or a constant: its positions are fixed
            c = Channels(axis, b.cg.new_classes(size, f"Concat input '{t.name}'"), np.full(size, NAN))
            b.block(c.ids, f"it is not produced by a weight layer (Concat {node.name!r})")
        if c.axis != axis:
            return b.opaque(node, "concatenates along an axis that is not every input's channel axis")
        parts.append(c)
    ids, value = np.concatenate([c.ids for c in parts]), np.concatenate([c.value for c in parts])
    b.set(node.outputs[0], Channels(axis, ids, value))


def _split(b: _Builder, node: gs.Node) -> None:
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    if r is None:
        return b.opaque(node, "needs the input rank")
    if _attr(node, "axis", 0) % r - r != c.axis:  # split across another axis: every output holds every class
        return [b.set(o, c) for o in node.outputs]
    given = _opt_input(node, 1)
    sizes = _const(given) if given is not None else _attr(node, "split", None)
    n, p = len(node.outputs), len(c.ids)
    if sizes is None and (given is not None or p % n):
        return b.opaque(node, "has split sizes that are neither constant nor equal")
    sizes = [p // n] * n if sizes is None else [int(s) for s in np.ravel(sizes)]
    bounds = np.cumsum([0] + sizes)
    for o, lo, hi in zip(node.outputs, bounds[:-1], bounds[1:]):
        b.set(o, Channels(c.axis, c.ids[lo:hi], c.value[lo:hi]))

    def edit(keep: np.ndarray) -> None:
        new = np.array([int(keep[lo:hi].sum()) for lo, hi in zip(bounds[:-1], bounds[1:])], dtype=np.int64)
        node.attrs.pop("num_outputs", None)
        if b.cg.graph.opset < 13:
            node.attrs["split"] = new.tolist()
        else:
            const = gs.Constant(b.cg.unique(f"{node.name or 'split'}_sizes"), new)
            while len(node.inputs) > 1:
                node.inputs.pop()
            node.inputs.append(const)

    b.edit(x, edit)


# -- gathered inputs ----------------------------------------------------------------------------------------------
def _flat_view(b: _Builder, x) -> tuple:
    """(tensor whose last axis holds x's features, count, the Gather already taking them or None) or Nones."""
    s = b.shape(x)
    if s is None or len(s) < 2 or not _static(s[1:]):
        return None, 0, None
    t = x
    if len(s) > 2:
        users = x.outputs
        flat = len(users) == 1 and (
            (users[0].op == "Flatten" and _attr(users[0], "axis", 1) == 1)
            or (users[0].op == "Reshape" and _const(users[0].inputs[1]) is not None
                and _const(users[0].inputs[1]).tolist() in ([0, -1], [-1, math.prod(s[1:])], [0, math.prod(s[1:])]))
        )
        if not flat:
            return None, 0, None
        t = users[0].outputs[0]
    users = t.outputs
    g = users[0] if len(users) == 1 and users[0].op == "Gather" else None
    if g is not None and g.inputs[0] is t and _attr(g, "axis", 0) in (1, -1) and isinstance(g.inputs[1], gs.Constant):
        if g.inputs[1].values.ndim == 1 and not b.frozen(g.inputs[1], g):
            return g.outputs[0], len(g.inputs[1].values), g
    return t, math.prod(s[1:]), None


def _seed_inputs(b: _Builder, crop: bool) -> None:
    """Each feature of a flattened graph input becomes a class; removing it gathers or crops the input (exact).

    With `crop`, the kept features are a box over the input's non-batch axes (`ChannelGraph.boxed` revives the
    features inside the box of the live ones), cut by a Slice: onnxruntime's Gather on axis 1 copies one element
    at a time and costs more than the Gemm it shrinks at batch 64, a Slice copies whole rows.
    """
    for x in b.cg.graph.inputs:
        t, n, gather = _flat_view(b, x)
        if t is None or x.name in b.protected or b.ch(t) is not None:
            continue
        ids = b.cg.new_classes(n, f"input '{x.name}'")
        b.set(t, Channels(-1, ids, np.full(n, NAN)))
        b.cg.layers.append(Layer(x.name, "input", "", t.name, np.zeros((n, 0))))
        if gather is not None:
            b.edit(t, lambda keep, idx=gather.inputs[1]: b.cg.slice(idx, 0, keep))
        elif crop:
            dims = tuple(b.shape(x)[1:])
            b.cg.boxes.append((t.name, dims))
            b.edit(t, lambda keep, x=x, dims=dims: _insert_crop(b.cg, x, dims, keep))
        else:
            b.edit(t, lambda keep, t=t: _insert_gather(b.cg, t, keep))


def _box(keep: np.ndarray, dims: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(first, end) per axis of the smallest box holding every kept position of a C-order flattened `dims`."""
    where = np.unravel_index(np.flatnonzero(keep), dims)
    return np.array([w.min() for w in where]), np.array([w.max() + 1 for w in where])


def _insert_crop(cg: ChannelGraph, x: gs.Variable, dims: tuple[int, ...], keep: np.ndarray) -> None:
    """Slice graph input `x` to the box `keep` describes; the Flatten/Reshape after it then yields the kept features."""
    lo, hi = _box(keep, dims)
    if int(np.prod(hi - lo)) != int(keep.sum()):
        raise ValueError(f"the kept features of input '{x.name}' are not a box")
    axes = [a for a in range(len(dims)) if lo[a] > 0 or hi[a] < dims[a]]
    out = gs.Variable(cg.unique(f"{x.name}_cropped"), dtype=x.dtype)
    users = list(x.outputs)
    name = cg.unique(f"{x.name}_crop")
    starts, ends = [int(lo[a]) for a in axes], [int(hi[a]) for a in axes]
    if cg.graph.opset is not None and cg.graph.opset < 10:  # Slice-1: attributes
        node = gs.Node("Slice", name, {"starts": starts, "ends": ends, "axes": [a + 1 for a in axes]}, [x], [out])
    else:
        consts = [gs.Constant(cg.unique(f"{name}_{k}"), np.array(v, dtype=np.int64))
                  for k, v in (("starts", starts), ("ends", ends), ("axes", [a + 1 for a in axes]))]
        node = gs.Node("Slice", name, {}, [x, *consts], [out])
    cg.graph.nodes.append(node)
    for u in users:
        for k, i in enumerate(u.inputs):
            if i is x:
                u.inputs[k] = out
        if u.op == "Reshape":  # an explicit feature count in the shape would be stale: [-1, kept]
            u.inputs[1] = gs.Constant(cg.unique(f"{u.name}_shape"), np.array([-1, int(keep.sum())], dtype=np.int64))


def _insert_gather(cg: ChannelGraph, t: gs.Variable, keep: np.ndarray) -> None:
    idx = gs.Constant(cg.unique(f"{t.name}_kept"), np.flatnonzero(keep).astype(np.int64))
    out = gs.Variable(cg.unique(f"{t.name}_gathered"), dtype=t.dtype)
    users = list(t.outputs)
    cg.graph.nodes.append(gs.Node("Gather", cg.unique(f"{t.name}_gather"), {"axis": 1}, [t, idx], [out]))
    for u in users:
        for k, i in enumerate(u.inputs):
            if i is t:
                u.inputs[k] = out


# -- folded constants become biases ------------------------------------------------------------------------------
def _gemm_bias(cg: ChannelGraph, node: gs.Node, delta: np.ndarray) -> None:
    c, dtype = _opt_input(node, 2), node.inputs[1].dtype
    if c is None:
        while len(node.inputs) > 2:  # an empty optional input
            node.inputs.pop()
        node.inputs.append(gs.Constant(cg.unique(f"{node.name}_bias"), delta.astype(dtype)))
        node.attrs["beta"] = 1.0
    else:
        c.values = (c.values + delta / float(_attr(node, "beta", 1.0))).astype(c.values.dtype)


def _conv_bias(cg: ChannelGraph, node: gs.Node, delta: np.ndarray) -> None:
    c = _opt_input(node, 2)
    if c is None:
        node.inputs.append(gs.Constant(cg.unique(f"{node.name}_bias"), delta.astype(node.inputs[1].dtype)))
    else:
        c.values = (c.values + delta).astype(c.values.dtype)


def _matmul_bias(cg: ChannelGraph, node: gs.Node, delta: np.ndarray) -> None:
    """Add into the bias Add that follows, or insert one (keeping the output's name)."""
    out, n = node.outputs[0], len(delta)
    users = out.outputs
    if len(users) == 1 and users[0].op == "Add" and out not in cg.graph.outputs:
        k = next((i for i in users[0].inputs if i is not out), None)
        if isinstance(k, gs.Constant) and k.values.size == n and k.values.shape[-1] == n and len(k.outputs) == 1:
            k.values = (k.values + delta.reshape(k.values.shape)).astype(k.values.dtype)
            return
    mid = gs.Variable(cg.unique(f"{out.name}_unbiased"), dtype=out.dtype)
    node.outputs[0] = mid
    bias = gs.Constant(cg.unique(f"{node.name}_bias"), delta.astype(_matmul_weight(node.inputs[1])[1].dtype))
    cg.graph.nodes.append(gs.Node("Add", cg.unique(f"{node.name}_bias_add"), {}, [mid, bias], [out]))


BIAS_ADDERS: dict[str, Callable[[ChannelGraph, gs.Node, np.ndarray], None]] = {
    "Gemm": _gemm_bias, "Conv": _conv_bias, "MatMul": _matmul_bias,
}

RULES: dict[str, Callable[[_Builder, gs.Node], None]] = {
    "Gemm": _gemm, "MatMul": _matmul, "Conv": _conv, "ConvTranspose": _conv_transpose,
    **{op: _unary for op in UNARY}, **{op: _binary for op in BINARY},
    "BatchNormalization": _batchnorm, **{op: _pool for op in POOL_KEEPS_CONSTANT},
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose, "Squeeze": _squeeze, "Unsqueeze": _squeeze,
    "Concat": _concat, "Split": _split,
}
PRODUCERS = frozenset({"Gemm", "MatMul", "Conv", "ConvTranspose"})


def _subgraph_names(graph: gs.Graph) -> set[str]:
    """Tensors read inside If/Loop/Scan bodies (outer-scope reads are invisible in node.inputs)."""
    names: set[str] = set()
    for node in graph.nodes:
        for v in node.attrs.values():
            for sub in v if isinstance(v, list) else [v]:
                if isinstance(sub, gs.Graph):
                    names |= {t.name for n in sub.nodes for t in n.inputs} | _subgraph_names(sub)
    return names


def build_channel_groups(
    graph: gs.Graph, shapes: Shapes, *, gather_inputs: bool = False, crop_inputs: bool = False,
    protected: frozenset[str] = frozenset()
) -> ChannelGraph:
    """Walk `graph` (topologically sorted) and record every class, member, consumer and block."""
    b = _Builder(graph, shapes, frozenset(protected))
    if gather_inputs or crop_inputs:
        _seed_inputs(b, crop=crop_inputs)
    for node in graph.nodes:
        mapped = any(b.ch(t) is not None for t in node.inputs)
        if node.name and node.name in b.protected:
            b.opaque(node, "is protected")
        elif (node.domain or "") not in ("", "ai.onnx") or node.op not in RULES:
            b.opaque(node, f"(op {node.op}) has no channel rule")
        elif mapped or node.op in PRODUCERS:
            RULES[node.op](b, node)
    inner, outputs = _subgraph_names(graph), {t.name for t in graph.outputs}
    for name, c in b.cg.channels.items():
        if name in outputs:
            b.block(c.ids, f"tensor '{name}' is a graph output")
        if name in b.protected:
            b.block(c.ids, f"tensor '{name}' is protected")
        if name in inner:
            b.block(c.ids, f"tensor '{name}' is read inside a subgraph")
    return b.cg
