"""Input features as classes: removing them gathers the input, or crops it to a box with a Slice."""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.passes.channel_groups.builder import Builder
from onnxprune.passes.channel_groups.graph import ChannelGraph, Channels, Layer
from onnxprune.passes.channel_groups.rules_layout import _static
from onnxprune.passes.channel_groups.util import NAN, _attr, _box, _const


def _flat_view(b: Builder, x) -> tuple:
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


def _seed_inputs(b: Builder, crop: bool) -> None:
    """Each feature of a flattened graph input becomes a class; removing it gathers or crops the input (exact).

    With `crop`, the kept features are a box over the input's non-batch axes (`ChannelGraph.boxed` revives the
    features inside the box of the live ones), cut by a Slice: onnxruntime's Gather on axis 1 copies one element
    at a time and costs more than the Gemm it shrinks at batch 64, a Slice copies whole rows.
    """
    for x in b.cg.graph.inputs:
        t, n, gather = _flat_view(b, x)
        if t is None or x.name in b.protected or b.ch(t) is not None or not t.outputs:
            continue  # an input nothing reads (an exporter's unused input) has nothing to gather or crop
        if any(u.op == "Slice" for u in t.outputs):
            continue  # cropped already (by an earlier round, or by its exporter): the Slice is not cut again
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


def _insert_crop(cg: ChannelGraph, x: gs.Variable, dims: tuple[int, ...], keep: np.ndarray) -> None:
    """Slice graph input `x` to the box `keep` describes; the Flatten/Reshape after it then yields the kept features."""
    lo, hi = _box(keep, dims)
    if int(np.prod(hi - lo)) != int(keep.sum()):
        raise ValueError(f"the kept features of input '{x.name}' are not a box")
    axes = [a for a in range(len(dims)) if lo[a] > 0 or hi[a] < dims[a]]
    name = cg.unique(f"{x.name}_crop")
    starts, ends = [int(lo[a]) for a in axes], [int(hi[a]) for a in axes]
    if cg.graph.opset is not None and cg.graph.opset < 10:  # Slice-1: attributes
        attrs, extra = {"starts": starts, "ends": ends, "axes": [a + 1 for a in axes]}, []
    else:
        attrs, extra = {}, [gs.Constant(cg.unique(f"{name}_{k}"), np.array(v, dtype=np.int64))
                            for k, v in (("starts", starts), ("ends", ends), ("axes", [a + 1 for a in axes]))]
    for u in _insert_after(cg, x, "Slice", name, cg.unique(f"{x.name}_cropped"), attrs, extra):
        if u.op == "Reshape":  # an explicit feature count in the shape would be stale: [-1, kept]
            u.inputs[1] = gs.Constant(cg.unique(f"{u.name}_shape"), np.array([-1, int(keep.sum())], dtype=np.int64))


def _insert_gather(cg: ChannelGraph, t: gs.Variable, keep: np.ndarray) -> None:
    idx = gs.Constant(cg.unique(f"{t.name}_kept"), np.flatnonzero(keep).astype(np.int64))
    _insert_after(cg, t, "Gather", cg.unique(f"{t.name}_gather"), cg.unique(f"{t.name}_gathered"), {"axis": 1}, [idx])


def _insert_after(cg: ChannelGraph, t: gs.Variable, op: str, name: str, out_name: str, attrs: dict,
                  extra: list) -> list[gs.Node]:
    """Put node `op`(t, *extra) between `t` and every node that read it; returns those nodes."""
    users = list(t.outputs)
    out = gs.Variable(out_name, dtype=t.dtype)
    cg.graph.nodes.append(gs.Node(op, name, attrs, [t, *extra], [out]))
    for u in users:
        for k, i in enumerate(u.inputs):
            if i is t:
                u.inputs[k] = out
    return users
