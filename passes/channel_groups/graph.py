"""The data: classes, what holds them, what reads them, and the union-find that merges them; `remove`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.passes.channel_groups.util import _box, _desc, _opt_input

Shapes = dict[str, list]  # tensor name -> dims (int, or None where unknown); from onnx shape inference



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
    """Axis `axis` of initializer `weight` is indexed by the positions of `tensor` (for neuron masks): `repeat`
    times over, in blocks (a recurrent weight's gates: LSTM's W rows are [i; o; f; c], each over the hidden units);
    `incoming` says whether the weight produces the positions (None: it does when it is their layer's weight)."""

    weight: str
    axis: int
    tensor: str
    repeat: int = 1
    incoming: bool | None = None


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

    def notes(self, dead: set[int], costly: bool = False) -> list[str]:
        """One line per block: who was kept, why, and how many otherwise-removable classes that cost; `costly`: only
        the blocks that kept a dead class (a block that kept none changed nothing: "channels of input 'attention_mask'
        kept: consumer Shape …" was four of the encoder's eight notes)."""
        out: dict[str, int] = {}
        for ids, why in self.blocks:
            who = ", ".join(dict.fromkeys(self.origins[int(i)] for i in ids))
            n = len(set(self.root_of(ids).tolist()) & dead)
            key = f"channels of {who} kept: {why}"
            out[key] = max(out.get(key, 0), n)
        return [k + (f" ({n} dead kept)" if n else "") for k, n in out.items() if n or not costly]

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
        from onnxprune.passes.channel_groups.biases import (
            BIAS_ADDERS,  # the bias adders edit graphs: they import this module
        )

        dead_arr = np.array(sorted(dead), dtype=np.int64)
        keep = {t: ~np.isin(self.roots(t), dead_arr) for t in self.channels}
        pending: dict[int, tuple[gs.Node, np.ndarray]] = {}
        for rd in self.reads:
            live = rd.rows.any(axis=1) & ~keep[rd.tensor] & (self.channels[rd.tensor].value != 0)  # 0 adds nothing
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


