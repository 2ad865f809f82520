"""Small helpers the rules share."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

NAN = float("nan")

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


def _box(keep: np.ndarray, dims: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(first, end) per axis of the smallest box holding every kept position of a C-order flattened `dims`."""
    where = np.unravel_index(np.flatnonzero(keep), dims)
    return np.array([w.min() for w in where]), np.array([w.max() + 1 for w in where])
