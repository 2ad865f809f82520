"""Rules for element-wise ops, BatchNormalization and pools: channels pass through, constants are carried."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.passes.channel_groups.builder import Builder
from onnxprune.passes.channel_groups.graph import Channels
from onnxprune.passes.channel_groups.util import (
    NAN,
    _attr,
    _const,
    _extra_outputs_used,
    _no_padding,
    _opt_input,
    _per_channel,
)


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


def _unary(b: Builder, node: gs.Node) -> None:
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


def _binary(b: Builder, node: gs.Node) -> None:
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


def _prelu(b: Builder, node: gs.Node) -> None:
    """PRelu(x, slope): channels pass through; a slope with one value per channel is sliced with them (insightface's
    Conv -> BN -> PRelu [C, 1, 1]), a shared one ([1]) is kept; a constant channel stays constant."""
    x, k = node.inputs
    c, K = b.ch(x), _const(k)
    if c is None or K is None:
        return b.opaque(node, f"has a slope '{k.name}' that is not a constant")
    ax = K.ndim + c.axis
    size = K.shape[ax] if ax >= 0 else 1
    if size not in (1, len(c.ids)):
        return b.opaque(node, f"has a slope '{k.name}' {K.shape} that does not broadcast on the channel axis")
    if size > 1:
        b.block(c.ids, b.frozen(k, node))
        b.edit(x, lambda keep: b.cg.slice(k, ax, keep))
    kv = _per_channel(K, len(c.ids), c.axis)
    b.set(node.outputs[0], Channels(c.axis, c.ids, np.where(c.value >= 0, c.value, kv * c.value)))


def _merge(b: Builder, node: gs.Node, chans: list[Channels], value: np.ndarray) -> None:
    """Element-wise between channel-carrying tensors (residual Add, Mul, a Concat across another axis)."""
    first = chans[0]
    if any(c.axis != first.axis or len(c.ids) != len(first.ids) for c in chans):
        return b.opaque(node, "combines tensors whose channels do not line up")
    for c in chans[1:]:
        for i, j in zip(first.ids.tolist(), c.ids.tolist()):
            b.cg.union(i, j)
    b.set(node.outputs[0], Channels(first.axis, first.ids, value))


def _batchnorm(b: Builder, node: gs.Node) -> None:
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


def _pool(b: Builder, node: gs.Node) -> None:
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    if r is None or c.axis != 1 - r or _extra_outputs_used(node):
        return b.opaque(node, "pools over the channel axis or returns indices")
    v = c.value if POOL_KEEPS_CONSTANT[node.op](node) else np.full(len(c.ids), NAN)
    b.set(node.outputs[0], Channels(c.axis, c.ids, v))


