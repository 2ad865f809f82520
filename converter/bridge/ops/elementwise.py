"""Element-wise ops: unary maths and activations, binary arithmetic and comparisons, variadic Sum/Max/Min/Mean."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .core import Tensor, _axis, _opt, register

# --------------------------------------------------------------------------------------------------------------
# Elementwise: unary, binary, variadic, comparisons
# --------------------------------------------------------------------------------------------------------------

_UNARY = {
    "Abs": torch.abs, "Neg": torch.neg, "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal, "Relu": F.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh,
    "Erf": torch.erf, "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round, "Sign": torch.sign,
    "Sin": torch.sin, "Cos": torch.cos, "Tan": torch.tan, "Asin": torch.asin, "Acos": torch.acos,
    "Atan": torch.atan, "Sinh": torch.sinh, "Cosh": torch.cosh, "Asinh": torch.asinh, "Acosh": torch.acosh,
    "Atanh": torch.atanh, "Softsign": F.softsign, "Softplus": F.softplus, "Mish": F.mish,
    "HardSwish": F.hardswish, "Not": torch.logical_not, "IsNaN": torch.isnan, "Identity": lambda x: x,
}


def _unary(fn):
    def op(inputs, attrs, ctx):
        return fn(inputs[0])

    return op


for _name, _fn in _UNARY.items():
    register(_name)(_unary(_fn))


def _div(a: Tensor, b: Tensor) -> Tensor:
    if a.dtype.is_floating_point or b.dtype.is_floating_point:
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # C-style integer division, as onnxruntime


def _pow(a: Tensor, b: Tensor) -> Tensor:
    y = torch.pow(a, b)
    return y if y.dtype == a.dtype else y.to(a.dtype)  # ONNX: the result has the base's type


_BINARY = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div, "Pow": _pow,
    "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt, "LessOrEqual": torch.le, "GreaterOrEqual": torch.ge,
    "And": torch.logical_and, "Or": torch.logical_or, "Xor": torch.logical_xor,
}


def _legacy_broadcast(b: Tensor, a: Tensor, attrs: dict) -> Tensor:
    """Opset < 7 'broadcast'/'axis': b's dims line up with a's starting at axis."""
    if attrs.get("broadcast", 0) and "axis" in attrs:
        axis = _axis(attrs["axis"], a.dim())
        return b.reshape(tuple(b.shape) + (1,) * (a.dim() - axis - b.dim()))
    return b


def _binary(fn):
    def op(inputs, attrs, ctx):
        a, b = inputs[0], inputs[1]
        return fn(a, _legacy_broadcast(b, a, attrs))

    return op


for _name, _fn in _BINARY.items():
    register(_name)(_binary(_fn))


@register("Mod")
def mod(inputs, attrs, ctx):
    a, b = inputs
    return torch.fmod(a, b) if attrs.get("fmod", 0) else torch.remainder(a, b)


@register("PRelu")
def prelu(inputs, attrs, ctx):
    x, slope = inputs
    return torch.where(x < 0, x * slope, x)


@register("LeakyRelu")
def leaky_relu(inputs, attrs, ctx):
    return F.leaky_relu(inputs[0], attrs.get("alpha", 0.01))


@register("Elu")
def elu(inputs, attrs, ctx):
    return F.elu(inputs[0], attrs.get("alpha", 1.0))


@register("Selu")
def selu(inputs, attrs, ctx):
    x = inputs[0]
    alpha = attrs.get("alpha", 1.67326319217681884765625)
    gamma = attrs.get("gamma", 1.05070102214813232421875)
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


@register("Celu")
def celu(inputs, attrs, ctx):
    return F.celu(inputs[0], attrs.get("alpha", 1.0))


@register("ThresholdedRelu")
def thresholded_relu(inputs, attrs, ctx):
    x = inputs[0]
    return torch.where(x > attrs.get("alpha", 1.0), x, torch.zeros_like(x))


@register("HardSigmoid")
def hard_sigmoid(inputs, attrs, ctx):
    x = inputs[0]
    return torch.clamp(attrs.get("alpha", 0.2) * x + attrs.get("beta", 0.5), 0.0, 1.0)


@register("Shrink")
def shrink(inputs, attrs, ctx):
    x = inputs[0]
    bias, lambd = attrs.get("bias", 0.0), attrs.get("lambd", 0.5)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


def _gelu(inputs, attrs, ctx):
    return F.gelu(inputs[0], approximate=attrs.get("approximate", "none"))


register("Gelu", since_opset=20)(_gelu)
register("Gelu", domain="com.microsoft")(_gelu)


@register("IsInf")
def is_inf(inputs, attrs, ctx):
    x = inputs[0]
    pos, neg = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    if pos and neg:
        return torch.isinf(x)
    if pos:
        return torch.isposinf(x)
    return torch.isneginf(x) if neg else torch.zeros_like(x, dtype=torch.bool)


def _clip_bounds(lo, hi, x: Tensor):
    if lo is not None and hi is not None and lo > hi:
        return None  # torch.clamp sets everything to hi, as ONNX; hardtanh would refuse
    if not x.dtype.is_floating_point:
        return None
    return (float("-inf") if lo is None else lo, float("inf") if hi is None else hi)


@register("Clip")
def clip_v1(inputs, attrs, ctx):
    x = inputs[0]
    lo, hi = attrs.get("min"), attrs.get("max")
    bounds = _clip_bounds(lo, hi, x)
    return F.hardtanh(x, *bounds) if bounds else torch.clamp(x, lo, hi)


@register("Clip", since_opset=11, static_inputs=(1, 2))
def clip(inputs, attrs, ctx):
    """Constant bounds use F.hardtanh (cheap backward); tensor bounds use torch.clamp."""
    x = inputs[0]
    lo_t, hi_t = _opt(inputs, 1), _opt(inputs, 2)
    lo_static = (1 in ctx.static) or lo_t is None
    hi_static = (2 in ctx.static) or hi_t is None
    if lo_static and hi_static:
        lo = ctx.static[1][0] if 1 in ctx.static else None
        hi = ctx.static[2][0] if 2 in ctx.static else None
        bounds = _clip_bounds(lo, hi, x)
        return F.hardtanh(x, *bounds) if bounds else torch.clamp(x, lo, hi)
    return torch.clamp(x, lo_t, hi_t)


def _variadic(fn):
    def op(inputs, attrs, ctx):
        return functools.reduce(fn, inputs)

    return op


register("Sum")(_variadic(torch.add))
register("Max")(_variadic(torch.maximum))
register("Min")(_variadic(torch.minimum))


@register("Mean")
def mean(inputs, attrs, ctx):
    return functools.reduce(torch.add, inputs) / len(inputs)


# --------------------------------------------------------------------------------------------------------------
# QuantizeLinear / DequantizeLinear: a QDQ model's activation pairs (its weights are folded to float at load,
# passes/quantized_weights.py), fake-quantized so retraining passes through them
# --------------------------------------------------------------------------------------------------------------

_INT_RANGE = {torch.uint8: (0, 255), torch.int8: (-128, 127), torch.int16: (-32768, 32767),
              torch.int32: (-2**31, 2**31 - 1), getattr(torch, "uint16", torch.int16): (0, 65535)}


def _along(p: Tensor, x: Tensor, attrs: dict) -> Tensor:
    """A scale or zero point shaped to broadcast against x: one for the tensor, or per position of `axis`."""
    if p.numel() == 1:
        return p.reshape(())
    axis = _axis(attrs.get("axis", 1), x.dim())
    return p.reshape([-1 if k == axis else 1 for k in range(x.dim())])


def _saturate(q: Tensor, lo: float, hi: float) -> Tensor:
    """q clamped to [lo, hi], the integer type's range, with the gradient passed on the closed interval and stopped
    past it, as torch's fake_quantize ops do: a value that rounds onto the grid's first or last step was not clipped.
    Not torch.clamp's gradient, which gives 0 at a bound since torch 2.14 (1 before): the batch's largest and smallest
    values, which DynamicQuantizeLinear puts on 255 and 0, lost theirs there."""
    return torch.where((q >= lo) & (q <= hi), q, torch.clamp(q.detach(), lo, hi))


def _check_qdq(attrs, ctx):
    if attrs.get("block_size"):
        return "block-wise quantization (block_size) is not supported"
    return None


@register("QuantizeLinear", since_opset=10, check=_check_qdq)
def quantize_linear(inputs, attrs, ctx):
    """The integer grid's values, held in the input's float type: rounded half to even (as onnxruntime) with the
    gradient passed straight through, and clamped to the zero point's type (uint8 without one), where the gradient
    stops. Only a DequantizeLinear reads them in a QDQ model."""
    x, scale, zp = inputs[0], inputs[1], _opt(inputs, 2)
    lo, hi = _INT_RANGE.get(zp.dtype if zp is not None else torch.uint8, (None, None))
    if lo is None:
        raise TypeError(f"QuantizeLinear '{ctx.name}': quantizing to {zp.dtype} is not supported")
    v = x / _along(scale.to(x.dtype), x, attrs)
    q = v + (torch.round(v) - v).detach()
    if zp is not None:
        q = q + _along(zp, x, attrs).to(x.dtype)
    return _saturate(q, lo, hi)


@register("DequantizeLinear", since_opset=10, check=_check_qdq)
def dequantize_linear(inputs, attrs, ctx):
    q, scale, zp = inputs[0], inputs[1], _opt(inputs, 2)
    q = q if q.dtype.is_floating_point else q.to(scale.dtype)
    if zp is not None:
        q = q - _along(zp, q, attrs).to(q.dtype)
    return (q * _along(scale, q, attrs)).to(scale.dtype)


@register("DynamicQuantizeLinear", since_opset=11)
def dynamic_quantize_linear(inputs, attrs, ctx):
    """(y, y_scale, y_zero_point) as ONNX defines them: the range [min(0, x), max(0, x)] over 255 steps, the zero
    point rounded and saturated to uint8; y on that grid, held in float, rounded half to even with the gradient
    passed straight through (the scale and zero point, the batch's own, are constants to it)."""
    x = inputs[0]
    lo = torch.clamp(x.detach().min(), max=0.0)
    hi = torch.clamp(x.detach().max(), min=0.0)
    scale = (hi - lo) / 255.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all zeros: every value at the zero point 0
    zp = torch.clamp(torch.round(-lo / scale), 0, 255)
    v = x / scale
    return [_saturate(v + (torch.round(v) - v).detach() + zp, 0, 255), scale.to(x.dtype), zp.to(x.dtype)]


@register("Scaler", domain="ai.onnx.ml")
def scaler(inputs, attrs, ctx):
    """scikit-learn's StandardScaler as skl2onnx writes it: (x - offset) * scale, per feature (one value broadcasts),
    float out. Without it every skl2onnx pipeline's retraining fell back to the layer-wise refit."""
    x = inputs[0].to(torch.float32)
    offset = torch.as_tensor(list(attrs.get("offset", [0.0])), dtype=torch.float32, device=x.device)
    scale = torch.as_tensor(list(attrs.get("scale", [1.0])), dtype=torch.float32, device=x.device)
    return (x - offset) * scale


# --------------------------------------------------------------------------------------------------------------
# Bitwise (integer tensors: masks and hashing in exported preprocessing)
# --------------------------------------------------------------------------------------------------------------

for _name, _fn in {"BitwiseAnd": torch.bitwise_and, "BitwiseOr": torch.bitwise_or,
                   "BitwiseXor": torch.bitwise_xor}.items():
    register(_name, since_opset=18)(_binary(_fn))


@register("BitwiseNot", since_opset=18)
def bitwise_not(inputs, attrs, ctx):
    return torch.bitwise_not(inputs[0])


_UNSIGNED_BITS = {torch.uint8: 8, torch.uint16: 16, torch.uint32: 32, torch.uint64: 64}


@register("BitShift", since_opset=11)
def bit_shift(inputs, attrs, ctx):
    """Unsigned integers shifted by `direction`; bits shifted past the type's width are gone (masked, as
    onnxruntime's unsigned arithmetic)."""
    x, by = inputs[0], inputs[1]
    wide, by = x.to(torch.int64), by.to(torch.int64)  # torch shifts few unsigned types itself
    if attrs["direction"] == "LEFT":
        y = torch.bitwise_left_shift(wide, by)
        bits = _UNSIGNED_BITS.get(x.dtype, 64)
        return (y & ((1 << bits) - 1) if bits < 64 else y).to(x.dtype)
    return torch.bitwise_right_shift(wide, by).to(x.dtype)


@register("Swish", since_opset=24)
def swish(inputs, attrs, ctx):
    x = inputs[0]
    return x * torch.sigmoid(attrs.get("alpha", 1.0) * x)


@register("Det")
def det(inputs, attrs, ctx):
    return torch.linalg.det(inputs[0])
