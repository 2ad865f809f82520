"""Rules for element-wise ops (comparisons and Where among them), BatchNormalization, InstanceNormalization, PRelu,
pools and Resize: channels pass through, constants are carried."""

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
    _desc,
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


def _celu(v: np.ndarray, n: gs.Node) -> np.ndarray:
    a = _attr(n, "alpha", 1.0)
    return np.maximum(v, 0) + np.minimum(0, a * np.expm1(v / a))


def _finite(v: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(v), v, NAN)


UNARY: dict[str, Callable[[np.ndarray, gs.Node], np.ndarray]] = {
    "Relu": lambda v, n: np.maximum(v, 0),
    "LeakyRelu": lambda v, n: np.where(v >= 0, v, _attr(n, "alpha", 0.01) * v),
    "Clip": _clip,
    "Sigmoid": lambda v, n: 1 / (1 + np.exp(-v)),
    "Tanh": lambda v, n: np.tanh(v),
    "Erf": lambda v, n: _erf(v),
    "Gelu": _gelu,
    # sweep 43: onnxruntime's com.microsoft QuickGelu, x sigmoid(alpha x) (its optimizer fuses CLIP's x * sigmoid(1.702
    # x) into it), "consumer QuickGelu ... (op QuickGelu) has no channel rule"
    "QuickGelu": lambda v, n: v / (1 + np.exp(-_attr(n, "alpha", 1.702) * v)),
    "HardSigmoid": lambda v, n: np.clip(_attr(n, "alpha", 0.2) * v + _attr(n, "beta", 0.5), 0, 1),
    "HardSwish": lambda v, n: v * np.clip(v / 6 + 0.5, 0, 1),
    "Elu": lambda v, n: np.where(v > 0, v, _attr(n, "alpha", 1.0) * np.expm1(v)),
    "Selu": _selu,
    "Celu": _celu,  # sweep 37: torch's nn.CELU, "consumer Celu ... has no channel rule"
    "Softplus": lambda v, n: np.logaddexp(0, v),
    "Mish": lambda v, n: v * np.tanh(np.logaddexp(0, v)),  # sweep 23: "consumer Mish ... has no channel rule"
    "Softsign": lambda v, n: v / (1 + np.abs(v)),
    "Sin": lambda v, n: np.sin(v),  # sweep 35: SIREN's sin(30 Wx), "consumer Sin ... has no channel rule"
    "Cos": lambda v, n: np.cos(v),  # Fourier features' cos beside it: cos(0) = 1, a constant folded on
    # sweep 42: torch.asinh/sinh/cosh (dynamo), "consumer Asinh ... (op Asinh) has no channel rule"; and Atan. Not
    # Tan, Asin, Acos, Acosh, Atanh: near a pole or a domain's edge a folded float64 value is not float32's
    "Atan": lambda v, n: np.arctan(v),
    "Sinh": lambda v, n: _finite(np.sinh(v)),
    "Cosh": lambda v, n: _finite(np.cosh(v)),
    "Asinh": lambda v, n: np.arcsinh(v),
    "Neg": lambda v, n: -v,
    "Abs": lambda v, n: np.abs(v),
    "Sign": lambda v, n: np.sign(v),  # sweep 36: LISTA's soft threshold sign(u) relu(|u| - th)
    # sweep 41: torch.remainder(h, 1.0) is h - Floor(h / 1) * 1, "consumer Floor ... has no channel rule"; ONNX's Round
    # rounds halves to even, as numpy's does
    "Floor": lambda v, n: np.floor(v),
    "Ceil": lambda v, n: np.ceil(v),
    "Round": lambda v, n: np.round(v),
    # sweep 36: an x-vector's stats pooling sqrt(var + eps), "consumer Sqrt ... has no channel rule"; a constant
    # channel maps to its image, NaN (not folded) where that is not finite: sqrt(-1), log(0), 1/0
    "Sqrt": lambda v, n: _finite(np.sqrt(v)),
    "Exp": lambda v, n: _finite(np.exp(v)),
    "Log": lambda v, n: _finite(np.log(v)),
    "Reciprocal": lambda v, n: _finite(1 / v),
    "Not": lambda v, n: np.where(np.isnan(v), NAN, (v == 0) * 1.0),  # sweep 37: tf.where's else branch
    # sweep 42: torch.xlogy (dynamo: Where(IsNaN(y), y, x log y)) and keras.ops' guards (sweep 41): "consumer IsNaN
    # ... has no channel rule"; a constant channel is never NaN (NaN here: it varies), inf only where it holds one
    "IsNaN": lambda v, n: np.where(np.isnan(v), NAN, 0.0),
    "IsInf": lambda v, n: np.where(np.isnan(v), NAN, ((v == np.inf) & bool(_attr(n, "detect_positive", 1))
                                                      | (v == -np.inf) & bool(_attr(n, "detect_negative", 1))) * 1.0),
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


# Min/Max of two tensors, element-wise like BINARY, no factor on the channels. Sweep 37: Keras' ReLU(max_value=6)
# is clip_by_value, which tf2onnx writes as Min(x, 6) -> Max(., 0): "consumer Min ... (op Min) has no channel rule".
EXTREMA: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"Min": np.minimum, "Max": np.maximum}


def _binary(b: Builder, node: gs.Node) -> None:
    if len(node.inputs) != 2:  # Min/Max take any number
        return b.opaque(node, f"has {len(node.inputs)} operands")
    x, y = node.inputs
    cx, cy, fn = b.ch(x), b.ch(y), {**BINARY, **EXTREMA}[node.op]
    with np.errstate(all="ignore"):
        if cx is not None and cy is not None:
            if _broadcast_factor(b, node, x, cx, cy) or _broadcast_factor(b, node, y, cy, cx):
                return None
            return _merge(b, node, [cx, cy], lambda: _product(cx.value, cy.value) if node.op == "Mul"
                          else _quotient(cx.value, cy.value) if node.op == "Div" else fn(cx.value, cy.value))
        c, k = (cx, y) if cx is not None else (cy, x)
        K = _const(k)
        scales = node.op == "Mul" or (node.op == "Div" and cx is not None)  # one factor on every channel
        if K is None and scales and _gate(b, x if cx is not None else y, c, k):
            b.set(node.outputs[0], Channels(c.axis, c.ids, np.where(c.value == 0, 0.0, NAN)))
            return None
        if K is None and scales:
            from onnxprune.passes.channel_groups.rules_layout import expanded_gate  # it imports this module

            if expanded_gate(b, node, x if cx is not None else y, c, k):
                b.set(node.outputs[0], Channels(c.axis, c.ids, np.where(c.value == 0, 0.0, NAN)))
                return None
        if K is None:
            return b.opaque(node, f"combines the channels with '{k.name}', which carries none the analysis follows")
        kv = _channel_constant(b, node, x if cx is not None else y, c, k, K, "a constant")
        if kv is None:
            return None
        value = fn(c.value, kv) if cx is not None else fn(kv, c.value)
        if node.op == "Mul" or (node.op == "Div" and cx is not None):
            with np.errstate(divide="ignore"):
                b.cg.scale(c.ids, kv if node.op == "Mul" else 1.0 / kv)
            # a channel that is 0 stays 0 times (or over) a finite constant, also one that varies along another axis
            # (kv NaN): a BatchEnsemble's per-member scale s [members, units] (sweep 48 kept its dead units)
            if np.isfinite(K).all() and (node.op == "Mul" or (K != 0).all()):
                value = np.where(c.value == 0, 0.0, value)
        b.set(node.outputs[0], Channels(c.axis, c.ids, value))


COMPARE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Greater": np.greater, "Less": np.less, "GreaterOrEqual": np.greater_equal, "LessOrEqual": np.less_equal,
    "Equal": np.equal,
    # sweep 37: torch legacy's Hardshrink, Where(Or(x > l, x < -l), x, 0): "consumer Or ... has no channel rule"
    "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
}


def _truth(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A comparison per channel as 1.0 / 0.0, NaN (it varies) where either side does."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(x) | np.isnan(y), NAN, fn(x, y) * 1.0)


def _compare(b: Builder, node: gs.Node) -> None:
    """x > k (Less, Equal, ...; And, Or, Xor of two masks), k a constant (one value or one per channel) or a tensor
    carrying the same channels: element-wise, the channels pass as a mask, a constant channel maps to its truth.
    Keras' `ReLU(threshold=...)` and tf.where, which tf2onnx writes as Greater -> Cast -> Mul, and torch's
    `where(h > 0, h, 0.1 * h)` (Greater -> Where). Sweep 37: "consumer Greater ... (op Greater) has no channel rule"
    kept every dead Dense unit."""
    x, y = node.inputs
    cx, cy, fn = b.ch(x), b.ch(y), COMPARE[node.op]
    if cx is not None and cy is not None:
        return _merge(b, node, [cx, cy], lambda: _truth(fn, cx.value, cy.value))
    c, k = (cx, y) if cx is not None else (cy, x)
    K = _const(k)
    if K is None:
        return b.opaque(node, f"compares the channels with '{k.name}', which carries none the analysis follows")
    kv = _channel_constant(b, node, x if cx is not None else y, c, k, K, "a constant")
    if kv is not None:
        b.set(node.outputs[0], Channels(c.axis, c.ids, _truth(fn, c.value, kv) if cx is not None
                                        else _truth(fn, kv, c.value)))


def _where(b: Builder, node: gs.Node) -> None:
    """Where(cond, x, y), element-wise: the operands that carry channels must line up, the others are constants
    (one value or one per channel, sliced with them). A constant channel takes x's or y's value as its condition
    is 1 or 0; where the condition varies, the one value both sides hold, else NaN. A condition that carries no
    channels and is no constant may still select for all channels alike, as `_gate` multiplies them: size 1 on
    their axis or no such axis (sweep 45: a top-1 gate, Where(Equal(ArgMax, e) [N, 1], expert, 0)); it varies."""
    chans = [b.ch(t) for t in node.inputs]
    first = next((c for c in chans if c is not None), None)
    if first is None:
        return b.opaque(node, "selects between tensors that carry no channels")
    carrier = next(u for u, cu in zip(node.inputs, chans) if cu is first)
    values = []
    for n, (t, c) in enumerate(zip(node.inputs, chans)):
        if c is not None:
            values.append(c.value)
            continue
        K = _const(t)
        if K is None and n == 0 and _gate(b, carrier, first, t):
            values.append(np.full(np.shape(first.value), NAN))
            continue
        if K is None:
            return b.opaque(node, f"selects with '{t.name}', which carries no channels")
        kv = _channel_constant(b, node, carrier, first, t, K, "a constant")
        if kv is None:
            return None
        values.append(np.asarray(kv, dtype=np.float64))

    def value() -> np.ndarray:
        cond, yes, no = values
        with np.errstate(invalid="ignore"):
            known = np.where(cond != 0, yes, no)
            return np.where(np.isnan(cond), np.where(yes == no, yes, NAN), known)

    _merge(b, node, [c for c in chans if c is not None], value)


def _broadcast_factor(b: Builder, node: gs.Node, x, c: Channels, f: Channels) -> bool:
    """Mul of `x`'s channels by a tensor of one channel on the same axis (or Div of them by it), which broadcasts
    over all of them: one factor shared by every channel, as `_gate` takes a tensor that carries none. Partial
    convolution's coverage ratio, a Conv of the hole mask by a ones kernel (one channel), times the image branch's
    16 (sweep 48: "combines tensors whose channels do not line up" kept its dead units). A channel that is 0 stays 0;
    the factor's own channel is read by this node, so it stays (blocked, said if it is dead)."""
    divides = node.op == "Div" and node.inputs[0] is x
    if not (node.op == "Mul" or divides) or len(f.ids) != 1 or len(c.ids) < 2 or f.axis != c.axis:
        return False
    b.block(f.ids, f"{_desc(node)} multiplies every channel of '{x.name}' by it")
    b.set(node.outputs[0], Channels(c.axis, c.ids, np.where(c.value == 0, 0.0, NAN)))
    return True


def _gate(b: Builder, x, c: Channels, k) -> bool:
    """Whether `k`, a tensor that carries no channels and is no constant, multiplies (or divides) `x`'s channels by
    one factor shared by all of them: its size on their axis is 1 or it has no such axis (a padding mask [N, 1, T] or
    [N, T, 1] over a sequence's features, CBAM's spatial attention [N, 1, H, W], a norm [N, 1]). A channel that is 0
    stays 0 and can go without touching `k` (0 / k: k is a norm clamped above 0, or the model divides by zero
    anyway); any other value varies with `k`. Sweep 36: "Mul ... combines the channels with '/Unsqueeze_output_0',
    which carries none"."""
    xs, ks = b.shape(x), b.shape(k)
    if xs is None or ks is None or len(ks) > len(xs):
        return False
    ax = len(ks) + c.axis
    return ax < 0 or ks[ax] == 1


def _quotient(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Div of two channel-carrying tensors, per channel: 0 where the numerator is 0 whatever the denominator holds
    (as `_gate` takes 0 / k: the model divides by zero anyway where k is 0), else x / y. Sweep 46: an attention-free
    transformer's (exp(w) @ (exp(k) * v)) / (exp(w) @ exp(k)) kept a dead value unit, its zero over a varying sum."""
    with np.errstate(all="ignore"):
        return np.where(x == 0, 0.0, x / y)


def _product(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mul of two channel-carrying tensors, per channel: 0 where either factor is 0 whatever the other holds (NaN:
    it varies; a finite activation times 0), else x * y. Sweep 34's L1: WaveNet's gated unit tanh(a) * sigmoid(b),
    a and b two halves of one Conv: a dead `a` row makes tanh(a) 0 and the product 0, yet 0 * NaN kept every channel
    whose `b` half still reads the input."""
    return np.where((x == 0) | (y == 0), 0.0, x * y)


def _pow(b: Builder, node: gs.Node) -> None:
    """Pow(x, e) with e one constant (x**3 of GPT-2/T5's tanh GELU, x**2 of a hand-written norm): element-wise, the
    channels pass through and a constant channel maps to its power (NaN, not folded, where that is not finite).
    Sweep 25: "consumer Pow ... has no channel rule" kept every neuron of T5's gated-gelu FFN. An exponent computed
    from constants alone is one constant too (sweep 47's GeM pooling, x^(1/p) with a learned p: "raises to a power
    that is not one constant")."""
    x, e = node.inputs[0], node.inputs[1]
    c, E = b.ch(x), _const(e)
    if E is None and b.ch(e) is None:  # computed from constants alone: GeM pooling's (mean x^p)^(1/p) (sweep 47)
        from onnxprune.passes.channel_groups.rules_layout import _folded  # it imports this module

        E = _folded(e)
    if c is None or b.ch(e) is not None or E is None or E.size != 1:
        return b.opaque(node, "raises to a power that is not one constant")
    with np.errstate(all="ignore"):
        v = np.power(c.value, float(E.reshape(-1)[0]))
    b.set(node.outputs[0], Channels(c.axis, c.ids, np.where(np.isfinite(v), v, NAN)))


def _channel_constant(b: Builder, node: gs.Node, x, c: Channels, k, K: np.ndarray, what: str) -> np.ndarray | None:
    """A constant operand K of `node` beside the channels c of tensor x: its entries on the channel axis (when it has
    one per channel) are sliced with the channels (blocked when K may not be edited); returns its value per channel
    (NaN where it also varies along another axis), or None (the node made opaque) when it does not broadcast."""
    ax = K.ndim + c.axis
    size = K.shape[ax] if ax >= 0 else 1
    if size not in (1, len(c.ids)):
        b.opaque(node, f"has {what} '{k.name}' {K.shape} that does not broadcast on the channel axis")
        return None
    if size > 1:
        # alike readers (the bias Add of each tower of a Siamese net; a Snake's alpha read by Mul and Div): tied
        b.block(c.ids, b.shared(k, node, CONSTANT_READERS))
        b.tie(k, ax, x, node, CONSTANT_READERS)
        b.edit(x, lambda keep: b.cg.slice(k, ax, keep))
    return _per_channel(K, len(c.ids), c.axis)


# the ops whose rule reads a per-channel constant operand through `_channel_constant`: one such constant several of
# them read (of any of these ops, at any input) is sliced once for all, their channels tied (`Builder.shared`)
CONSTANT_READERS = frozenset({*BINARY, *EXTREMA, *COMPARE, "Where", "PRelu"})


def _merge(b: Builder, node: gs.Node, chans: list[Channels], value: np.ndarray | Callable[[], np.ndarray]) -> None:
    """Element-wise between channel-carrying tensors (residual Add, Mul, a Concat across another axis). `value` may
    be a function, called once the channels are known to line up (sweep 29's MLP-Mixer: a residual Add of 64 feature
    channels on the last axis and a token-mixing layer's 16 on another raised "operands could not be broadcast")."""
    first = chans[0]
    if any(c.axis != first.axis or len(c.ids) != len(first.ids) for c in chans):
        return b.opaque(node, "combines tensors whose channels do not line up")
    if callable(value):
        value = value()
    for c in chans[1:]:
        for i, j in zip(first.ids.tolist(), c.ids.tolist()):
            b.cg.union(i, j)
    b.set(node.outputs[0], Channels(first.axis, first.ids, value))


def _qdq(b: Builder, node: gs.Node) -> None:
    """QuantizeLinear / DequantizeLinear of an activation with one scale and zero point for the whole tensor (a
    QDQ model's pairs between layers): channels pass through; a constant channel maps to its (de)quantized value."""
    c, scale, zero = b.ch(node.inputs[0]), _const(_opt_input(node, 1)), _opt_input(node, 2)
    zp = _const(zero) if zero is not None else None
    if c is None or scale is None or scale.size != 1 or (zero is not None and (zp is None or zp.size != 1)):
        return b.opaque(node, "quantizes per channel, or with a scale that is not a constant")
    s, z = float(scale.reshape(-1)[0]), float(zp.reshape(-1)[0]) if zp is not None else 0.0
    with np.errstate(all="ignore"):
        if node.op == "DequantizeLinear":
            value = (c.value - z) * s
        else:
            dtype = zp.dtype if zp is not None else np.dtype(np.uint8)
            if not np.issubdtype(dtype, np.integer):
                return b.opaque(node, f"quantizes to {dtype}")
            info = np.iinfo(dtype)
            value = np.clip(np.rint(c.value / s) + z, info.min, info.max)
    b.set(node.outputs[0], Channels(c.axis, c.ids, value))


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


def _instance_norm(b: Builder, node: gs.Node) -> None:
    """InstanceNormalization(x, scale, B) normalizes each channel over its own positions (a style-transfer,
    denoising or image-to-image net's norm): channels stay apart and scale and B go with them. A channel that is
    constant over its positions (a dead Conv row's bias, a zero) has no variance: it comes out as B[c], whatever
    the constant was. Sweep 22's denoiser: every Conv before one kept its channels ("no channel rule")."""
    x, params = node.inputs[0], node.inputs[1:3]
    c, r, vals = b.ch(x), b.rank(x), [_const(p) for p in node.inputs[1:3]]
    if r is None or r < 3 or c.axis != 1 - r or len(params) != 2 or any(v is None or v.size != len(c.ids)
                                                                        for v in vals):
        return b.opaque(node, "is not over axis 1 with a constant scale and bias per channel")
    for p in params:
        b.block(c.ids, b.frozen(p, node) if len(c.ids) > 1 else None)
    bias = vals[1].astype(np.float64).reshape(-1)
    b.set(node.outputs[0], Channels(c.axis, c.ids, np.where(np.isfinite(c.value), bias, NAN)))
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


def _roi_align(b: Builder, node: gs.Node) -> None:
    """RoiAlign(x [N, C, H, W], rois, batch_indices) -> [R, C, h, w], a two-stage detector's box head after its
    backbone: each roi's bins sample its image's channels apart. A sample outside the map weighs 0, so a zero channel
    stays 0 and any other constant does not stay that constant."""
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    if r != 4 or c.axis != -3:
        return b.opaque(node, "samples a tensor whose channel axis is not axis 1 of 4")
    b.set(node.outputs[0], Channels(c.axis, c.ids, np.where(c.value == 0, 0.0, NAN)))


# a reduction over other axes than the channel axis keeps each channel apart (torch's x.mean((2, 3)), Keras's
# GlobalAveragePooling2D through tf2onnx); a constant channel stays that constant under these ops (a sum scales it)
REDUCE_KEEPS_CONSTANT = ("ReduceMean", "ReduceMax", "ReduceMin")
# sums of a function of each entry that is 0 at 0: a constant channel v over n entries becomes f(v, n); over the
# channel axis, a channel that is 0 everywhere adds nothing, so it may go (F.normalize's norm: ReduceL2 over the
# features, then x / ‖x‖)
REDUCE_SUMS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "ReduceSum": lambda v, n: v * n,
    "ReduceL1": lambda v, n: np.abs(v) * n,
    "ReduceL2": lambda v, n: np.abs(v) * math.sqrt(n),
    "ReduceSumSquare": lambda v, n: v * v * n,
}
REDUCE_OPS = REDUCE_KEEPS_CONSTANT + tuple(REDUCE_SUMS)


def _reduce_axes(node: gs.Node, rank: int) -> list[int] | None:
    """The axes a Reduce* node reduces (attribute before ReduceSum 13 / the others 18, else the second input), or
    None when they are not constants; no axes reduces them all, or none with noop_with_empty_axes."""
    t = _opt_input(node, 1)
    if t is not None:
        axes = _const(t)
        if axes is None:
            return None
    else:
        axes = _attr(node, "axes", None)
    if axes is None or len(np.ravel(axes)) == 0:
        return [] if _attr(node, "noop_with_empty_axes", 0) else list(range(rank))
    return sorted({int(a) % rank for a in np.ravel(axes)})


def _reduce(b: Builder, node: gs.Node) -> None:
    """Reduce{Mean,Max,Min,Sum,L1,L2,SumSquare} over axes other than the channel axis: each output channel is its
    input channel's reduction (keepdims=0 moves the channel axis left by the reduced axes before it). A sum over the
    channel axis (REDUCE_SUMS) reads every channel, as a weight layer whose rows are all 1 would: a channel that is
    0 adds nothing and may go, any other stays (a constant one too: nothing here folds it); the output carries no
    channels. Mean, Max and Min over the channels keep them: a removed channel, even 0, changes the count or the
    extremum."""
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    axes = _reduce_axes(node, r) if r is not None else None
    if axes is None:
        return b.opaque(node, "reduces axes that are not constants, or of an unknown rank")
    ch = r + c.axis
    if ch in axes:
        if node.op not in REDUCE_SUMS:
            return b.opaque(node, "reduces over the channel axis (a removed channel, even 0, changes a mean, a maximum "
                                  "or a minimum)")
        b.read(node, x, c.axis, np.ones((len(c.ids), 1), dtype=np.float32), None, None)
        return None
    keep = _attr(node, "keepdims", 1)
    out_rank = r if keep else r - len(axes)
    new = ch if keep else ch - sum(a < ch for a in axes)
    if node.op in REDUCE_KEEPS_CONSTANT:
        value = c.value
    else:  # a sum of f(entry) maps a constant v to f(v, the number of entries it adds up)
        s = b.shape(x)
        count = math.prod(s[a] for a in axes) if s is not None and all(isinstance(s[a], int) for a in axes) else None
        with np.errstate(all="ignore"):
            value = REDUCE_SUMS[node.op](c.value, count) if count is not None else np.full(len(c.ids), NAN)
    b.set(node.outputs[0], Channels(new - out_rank, c.ids, value))


# RMS norms, ONNX's (opset 23) and onnxruntime's in the ai.onnx domain (its transformer optimizer writes it): the
# `_normalization` rule without a mean (sweep 43: "SimplifiedLayerNormalization ... has no channel rule")
RMS_NORMS = frozenset({"RMSNormalization", "SimplifiedLayerNormalization"})


def _normalization(b: Builder, node: gs.Node) -> None:
    """LayerNormalization over the channel axis (ConvNeXt's, a transformer's) computes every output from all
    channels' mean and variance, so removing a channel, dead or not, changes the others: kept, with the reason
    (GroupNormalization: `_group_norm`). Over axes after the channel axis only (nn.LayerNorm([H, W]) of a map, sweep
    39's L3) each channel is normalized over its own positions, apart: channels pass. A constant channel becomes
    the bias there ((v - v) / sqrt(eps) * scale + bias), a constant only where the bias is one value (or absent: 0).
    An RMS norm (`RMS_NORMS`) over axes after the channels keeps a zero channel 0, and folds no other constant."""
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    if c is None or r is None or r + c.axis >= _attr(node, "axis", -1) % r:
        stats = "root mean square" if node.op in RMS_NORMS else "mean and variance"
        return b.opaque(node, f"normalizes across the channels (every output reads all channels' {stats}): removing "
                              "one would change the others")
    if _extra_outputs_used(node):
        return b.opaque(node, "uses its mean or inverse standard deviation outputs")
    if node.op in RMS_NORMS:  # sweep 43: x / sqrt(mean(x^2) + eps) * scale of each channel's own positions: 0 stays 0
        scale = _opt_input(node, 1)
        if scale is not None and (_const(scale) is None or b.ch(scale) is not None):
            return b.opaque(node, "normalizes each channel with a scale that is not a constant")
        return b.set(node.outputs[0], Channels(c.axis, c.ids, np.where(c.value == 0, 0.0, NAN)))
    scale, bias = _opt_input(node, 1), _opt_input(node, 2)
    S, B = _const(scale) if scale is not None else None, _const(bias) if bias is not None else np.zeros(1)
    if scale is not None and (S is None or b.ch(scale) is not None) or bias is not None and B is None:
        return b.opaque(node, "normalizes each channel with a scale or bias that is not a constant")
    flat = np.ravel(B)
    shared = float(flat[0]) if flat.size and np.all(flat == flat[0]) else NAN
    b.set(node.outputs[0], Channels(c.axis, c.ids, np.where(np.isfinite(c.value), shared, NAN)))


def _softmax(b: Builder, node: gs.Node) -> None:
    """Softmax, LogSoftmax, Hardmax over axes other than the channel axis (a spatial softmax over a map's positions,
    attention over keys) keep each channel apart, as a reduction does; over the channel axis (torch's nn.Softmax2d,
    sweep 38) every output reads all channels, so removing one, constant or not, changes the others (said so; it was
    "has no channel rule"). Before opset 13 the op normalizes every axis from `axis` on (default 1) as one. A
    channel constant over the normalized positions is 1/n under Softmax (log of that under LogSoftmax); Hardmax's
    first position wins, so no constant."""
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    if r is None:
        return b.opaque(node, "needs the input rank, which shape inference did not give")
    opset = b.cg.graph.opset
    old = opset is not None and opset < 13
    axis = int(_attr(node, "axis", 1 if old else -1)) % r
    axes = list(range(axis, r)) if old else [axis]
    if r + c.axis in axes:
        return b.opaque(node, "normalizes across the channels (every output reads all channels): removing one, "
                              "constant or not, would change the others")
    shape = b.shape(x)
    static = shape is not None and all(isinstance(shape[a], int) for a in axes)
    n = math.prod(shape[a] for a in axes) if static else None
    value = np.full(len(c.ids), NAN)
    if n and node.op != "Hardmax":
        share = 1.0 / n if node.op == "Softmax" else -math.log(n)
        value = np.where(np.isnan(c.value), NAN, share)
    b.set(node.outputs[0], Channels(c.axis, c.ids, value))


def _topk(b: Builder, node: gs.Node) -> None:
    """TopK along an axis other than the channel axis (a text CNN's k-max pooling over time, a median as the middle of
    a sort: sweep 43, "consumer TopK ... (op TopK) has no channel rule") takes each channel's k largest apart from the
    others: its values carry the channels, a constant channel's k values that constant. Its indices say where, not
    what: read (or an output), the node keeps its channels. Along the channel axis every output reads all channels."""
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    if r is None:
        return b.opaque(node, "needs the input rank, which shape inference did not give")
    if int(_attr(node, "axis", -1)) % r == r + c.axis:
        return b.opaque(node, "selects across the channels (each output reads all channels): removing one, constant "
                              "or not, would change the others")
    outputs = {t.name for t in b.cg.graph.outputs}
    if any(o.outputs or o.name in outputs for o in node.outputs[1:]):
        return b.opaque(node, "uses its indices output, which no rule follows")
    b.set(node.outputs[0], Channels(c.axis, c.ids, c.value))


def _prelu(b: Builder, node: gs.Node) -> None:
    """PRelu(x, slope): the slope's entries on the channel axis go with their channels (MTCNN, ArcFace: [1, C, 1, 1]
    or [C, 1, 1]; a scalar slope is shared by all). A constant channel v stays constant: v, or slope·v below 0."""
    x, s = node.inputs[:2]
    c, S = b.ch(x), _const(s)
    if c is None or b.ch(s) is not None or S is None:
        return b.opaque(node, "has a slope that is not a constant")
    slope = _channel_constant(b, node, x, c, s, S, "a slope")  # NaN where it also varies along another axis
    if slope is None:
        return None
    with np.errstate(all="ignore"):
        value = np.where(c.value >= 0, c.value, slope * c.value)
    b.set(node.outputs[0], Channels(c.axis, c.ids, value))


def _resize_factors(node: gs.Node):
    """(scales, sizes, axes) of a Resize (opset 10: X, scales; 11+: X, roi, scales, sizes; 18+: `axes`) or an
    Upsample (scales as attribute or input); an entry is None when absent, False when not a constant."""
    if node.op == "Upsample":
        scales = node.attrs.get("scales")
        if scales is None:  # opset 9: an input, which must be a constant
            scales = _const(_opt_input(node, 1))
        return (False if scales is None else np.asarray(scales, dtype=np.float64)), None, None
    if len(node.inputs) == 2:  # opset 10
        k = _const(node.inputs[1])
        return (False if k is None else np.asarray(k, np.float64)), None, None
    found = []
    for i in (2, 3):
        t = _opt_input(node, i)
        k = None if t is None else _const(t)
        found.append(None if t is None or (k is not None and k.size == 0) else (False if k is None else k))
    axes = node.attrs.get("axes")
    return found[0], found[1], None if axes is None else list(axes)


def _resize(b: Builder, node: gs.Node) -> None:
    """Resize / Upsample that leaves the channel axis alone (scale 1, or not among `axes`): channel k stays channel
    k (an FPN neck's upsampling between Convs). With `sizes` naming the channel count, that entry follows the kept
    channels. Interpolating a constant map gives the constant (nearest, linear, cubic: weights summing to 1), except
    where tf_crop_and_resize extrapolates."""
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    if c is None or r is None:
        return b.opaque(node, "needs the input rank, which shape inference did not give")
    ch = r + c.axis
    scales, sizes, axes = _resize_factors(node)
    if scales is False or sizes is False:
        return b.opaque(node, "has scales or sizes that are not constants")
    if _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch" and sizes is not None:
        return b.opaque(node, "keeps an aspect ratio over sizes")
    axes = [a % r for a in axes] if axes is not None else list(range(r))
    if ch in axes:
        pos = axes.index(ch)
        if sizes is not None:
            t = node.inputs[3]
            if len(sizes) != len(axes) or int(sizes[pos]) != len(c.ids):
                return b.opaque(node, "resizes the channel axis")
            b.block(c.ids, b.frozen(t, node))
            b.edit(x, lambda keep: _set_entry(t, pos, int(keep.sum())))
        elif scales is not None and (len(scales) != len(axes) or float(scales[pos]) != 1.0):
            return b.opaque(node, "resizes the channel axis")
    crop = _attr(node, "coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize"
    b.set(node.outputs[0], Channels(c.axis, c.ids, np.full(len(c.ids), NAN) if crop else c.value))


def _set_entry(t: gs.Constant, pos: int, value: int) -> None:
    values = np.array(t.values)
    values[pos] = value
    t.values = values.astype(t.values.dtype)


def _group_values(value: np.ndarray, groups: int, eps: float, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The constant each channel holds after a group normalization (scale, bias per channel), NaN unless every
    channel of its group holds a known constant: the group's statistics are then those constants' (the same at every
    position and sample), so each output is scale·(v - mean)/sqrt(var + eps) + bias: bias where the group is one
    constant (a dead group of zeros: 0/sqrt(eps) = 0)."""
    v = value.reshape(groups, -1)
    with np.errstate(all="ignore"):
        mean = v.mean(axis=1, keepdims=True)
        var = np.square(v - mean).mean(axis=1, keepdims=True)
        out = (scale.reshape(groups, -1) * (v - mean) / np.sqrt(var + eps) + bias.reshape(groups, -1))
    return np.where(np.isfinite(v).all(axis=1, keepdims=True), out, NAN).reshape(-1)


def _group_norm(b: Builder, node: gs.Node) -> None:
    """GroupNormalization over axis 1: each output channel reads the mean and variance of its group (C/G consecutive
    channels) only, so a whole group can go and the others compute what they did; one channel of a group cannot (it
    changes its group's statistics). The channels of a group are one class; num_groups follows the kept groups, and
    scale and bias go with them (per channel from opset 21, per group at 18-20). A group of known constants comes
    out as constants (`_group_values`; a dead group of zeros as its bias), which readers fold as they do a
    BatchNorm's. Sweep 23: every channel before a GroupNorm was kept ("normalizes across the channels")."""
    x, params = node.inputs[0], [_opt_input(node, 1), _opt_input(node, 2)]
    c, r, vals = b.ch(x), b.rank(x), [_const(p) for p in params]
    groups, n = int(_attr(node, "num_groups", 0)), len(c.ids) if c is not None else 0
    if r is None or r < 3 or c.axis != 1 - r or groups < 1 or n % groups or any(v is None for v in vals) or \
            any(v.size not in (n, groups) for v in vals) or _extra_outputs_used(node):
        return b.opaque(node, "normalizes across the channels of a group, and is not over axis 1 with whole groups "
                              "and a constant scale and bias: removing a channel would change the others")
    k = n // groups
    for p in params:
        b.block(c.ids, b.frozen(p, node) if groups > 1 else None)
    for row in c.ids.reshape(groups, k).tolist():
        for j in row[1:]:
            b.cg.union(row[0], j)
    scale, bias = (np.repeat(v.astype(np.float64).reshape(-1), k) if v.size != n else
                   v.astype(np.float64).reshape(-1) for v in vals)
    eps = float(_attr(node, "epsilon", 1e-5))
    b.set(node.outputs[0], Channels(c.axis, c.ids, _group_values(c.value, groups, eps, scale, bias)))

    def edit(keep: np.ndarray) -> None:
        for p, v in zip(params, vals):
            b.cg.slice(p, 0, keep if v.size == n else keep[::k])
        node.attrs["num_groups"] = int(keep.sum()) // k

    b.edit(x, edit)
