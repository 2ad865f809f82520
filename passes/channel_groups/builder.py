"""The walk's state: channel maps per tensor, and how rules record members, readers, edits and blocks."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.passes.channel_groups.graph import (
    ChannelGraph,
    Channels,
    Edit,
    Layer,
    Read,
    Shapes,
    WeightAxis,
)
from onnxprune.passes.channel_groups.util import NAN, _desc
from onnxprune.plain import listed


class Builder:
    def __init__(self, graph: gs.Graph, shapes: Shapes, protected: frozenset[str]) -> None:
        self.cg = ChannelGraph(graph)
        self.shapes = shapes
        self.protected = protected
        # (initializer, axis) -> (class ids of the first tensor slicing it, reader nodes that tied it): a weight
        # several alike layers read (a Siamese net's towers) is sliced once, so their positions are one class each
        self.ties: dict[tuple[str, int], tuple[np.ndarray, set[int]]] = {}
        self._main: set[int] | None = None  # ids of the main graph's nodes
        # (tensor, Reshape/Expand node): the node's target shape holds the tensor's channel count (check_counts)
        self.counts: list[tuple[str, gs.Node]] = []

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
        if not others:
            return None
        # an unrolled RNN shares it 60 times
        return f"initializer '{t.name}' is shared with {listed(repr(o) for o in others)}"

    def shared(self, t, user: gs.Node, kin: frozenset[str] = frozenset()) -> str | None:
        """`frozen`, except that an initializer every reader of which is a node like `user` (same op and attributes,
        reading it at the same input) may be edited: the caller ties each axis it slices (`tie`), so every reader's
        positions there are one class and one keep mask serves them all. A reader that does not tie blocks
        (`check_ties`). `kin`: ops that read a per-channel constant element-wise, each at any input; when `user` is
        one, readers of those ops count as alike too (sweep 42: a Snake activation's alpha, x + sin(a x)^2 / a, read
        by a Mul and a Div; a JumpReLU's threshold, read by a comparison and a Sub)."""
        why = self.frozen(t, user)
        if why is None or not isinstance(t, gs.Constant) or t.name in self.protected:
            return why
        readers = list({id(n): n for n in t.outputs}.values())
        if self._main is None:
            self._main = {id(n) for n in self.cg.graph.nodes}
        at = [i for i, x in enumerate(user.inputs) if x is t]
        for n in readers:
            if id(n) not in self._main:
                return why
            if user.op in kin and n.op in kin and (n.domain or "") in ("", "ai.onnx"):
                continue
            if n.op != user.op or (n.domain or "") != (user.domain or "") or \
                    [i for i, x in enumerate(n.inputs) if x is t] != at or not _same_attrs(n, user):
                return why
        return None

    def tie(self, const, axis: int, t, user: gs.Node, kin: frozenset[str] = frozenset()) -> None:
        """Axis `axis` of initializer `const` follows the positions of tensor `t` for `user`: tie them to the
        positions of the first tensor that slices the same axis (a weight shared by alike readers; `kin`: `shared`)."""
        c = self.ch(t)
        if not isinstance(const, gs.Constant) or c is None or not const.values.ndim or self.shared(const, user, kin):
            return  # a frozen constant blocks already (say it once)
        key = (const.name, axis % const.values.ndim)
        first, users = self.ties.setdefault(key, (c.ids, set()))
        users.add(id(user))
        if first is c.ids:
            return
        if len(first) != len(c.ids):
            self.block(np.concatenate([first, c.ids]), f"initializer '{const.name}' is shared by readers whose "
                                                        f"channels do not line up")
            return
        for i, j in zip(first.tolist(), c.ids.tolist()):
            self.cg.union(i, j)

    def check_ties(self) -> None:
        """A shared initializer sliced for some readers must be sliced for all: block when a reader did not tie."""
        consts = {t.name: t for t in self.cg.graph.tensors().values() if isinstance(t, gs.Constant)}
        for (name, axis), (ids, users) in self.ties.items():
            readers = {id(n) for n in consts[name].outputs} if name in consts else set()
            if readers - users:
                self.block(ids, f"initializer '{name}' is shared with a reader whose input there carries no channels "
                                "followed")

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


def _same_attrs(a: gs.Node, b: gs.Node) -> bool:
    """The same attributes (a value that does not compare plainly, a tensor attribute, is not the same)."""
    try:
        return a.attrs.keys() == b.attrs.keys() and all(bool(a.attrs[k] == b.attrs[k]) for k in a.attrs)
    except (ValueError, TypeError):
        return False
