"""ONNX ops as tiny torch functions, looked up by (domain, op_type, opset).

Each op is ``fn(inputs, attrs, ctx) -> Tensor | list[Tensor]``:
  * ``inputs``: the node's inputs in ONNX order, ``None`` for an omitted optional input ("" name);
    trailing omitted inputs may be missing from the list, so read them with ``_opt``;
  * ``attrs``: the node's attributes, parsed once at build time into ints, floats, str, lists and numpy
    arrays; parameter names and defaults are the ONNX spec's, written where they are read;
  * ``ctx``: a ``NodeContext`` (node name, opset, number of outputs, build-time constant inputs, run state).

An op that needs an input as plain numbers (Reshape's shape, Slice's starts, a Clip bound, ...) declares it
with ``static_inputs``. When that input is a constant, the module reads it once at build time into
``ctx.static``; otherwise the op takes it from the run-time tensor with ``.tolist()``, so int tensors computed
by Shape/Gather/Concat chains work. Shape arithmetic itself stays in int64 tensors.

Registering an op type again with a higher ``since_opset`` overrides it from that opset on: the lookup takes
the highest ``since_opset <= model opset``, as the ONNX spec does when semantics change (Softmax axis at 13,
Squeeze/Unsqueeze/ReduceSum axes as inputs at 13, the other reductions at 18, Split at 13, Clip bounds as
inputs at 11, Pad at 11, Resize at 11, Dropout ratio as input at 12, ...).

``check(attrs, ctx) -> str | None`` may reject attribute values we do not implement; the module reports those
nodes together with the unknown ops. ``fold=True`` lets the module evaluate a node once at build time when
all its inputs are constants (Constant).

Where the spec leaves room, the reference is onnxruntime (what the pruned model is deployed on): Slice's
INT64_MAX end with a negative step runs to the start, ConvTranspose auto_pad/output_shape pads follow its split,
Resize copies the input when no axis changes size and computes coordinates in its float32/float64 mix.
Known gaps: control flow (If/Loop/Scan), sequences/optionals/strings, quantized ops, AveragePool dilations,
Resize antialias, RNN activations with alpha/beta, ScatterND reductions other than add; TopK ``sorted=0`` still
sorts; Resize nearest can pick the other pixel when the source coordinate lies within ~1e-6 of a rounding tie.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, numpy_helper

Tensor = torch.Tensor
OpResult = Union[Tensor, Sequence[Tensor]]
OpFn = Callable[[list, dict, "NodeContext"], OpResult]

DEFAULT_DOMAIN = ""
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})

# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpDef:
    domain: str
    op_type: str
    since_opset: int
    fn: OpFn
    static_inputs: tuple = ()
    check: Optional[Callable[[dict, "NodeContext"], Optional[str]]] = None
    fold: bool = False


_REGISTRY: dict[tuple[str, str], list[OpDef]] = {}


def normalize_domain(domain: str) -> str:
    return DEFAULT_DOMAIN if domain in ("", "ai.onnx") else domain


def register(op_type: str, since_opset: int = 1, domain: str = DEFAULT_DOMAIN, static_inputs: Sequence[int] = (),
             check=None, fold: bool = False):
    """Decorator: ``fn`` implements ``op_type`` from ``since_opset`` on (until a later registration)."""

    def deco(fn: OpFn) -> OpFn:
        key = (normalize_domain(domain), op_type)
        defs = [d for d in _REGISTRY.get(key, []) if d.since_opset != since_opset]
        defs.append(OpDef(key[0], op_type, since_opset, fn, tuple(static_inputs), check, fold))
        _REGISTRY[key] = sorted(defs, key=lambda d: d.since_opset)
        return fn

    return deco


def lookup(domain: str, op_type: str, opset: int) -> Optional[OpDef]:
    """The implementation in force at ``opset`` for (domain, op_type), or None."""
    found = None
    for d in _REGISTRY.get((normalize_domain(domain), op_type), ()):
        if d.since_opset <= opset:
            found = d
    return found


def supported_ops() -> list[tuple[str, str, int]]:
    """Every registered (domain, op_type, since_opset), sorted."""
    return sorted((d.domain, d.op_type, d.since_opset) for defs in _REGISTRY.values() for d in defs)


# --------------------------------------------------------------------------------------------------------------
# Node context, attribute parsing, dtypes
# --------------------------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """What changes between calls, shared by all nodes of one module."""

    training: bool = False
    dropout_ratios: dict = field(default_factory=dict)


@dataclass
class NodeContext:
    name: str
    op_type: str
    domain: str
    opset: int
    n_outputs: int
    static: dict = field(default_factory=dict)  # input index -> flat python list, for constant static_inputs
    float_dtype: Optional[torch.dtype] = None  # compute dtype override for every ONNX float type
    run: RunState = field(default_factory=RunState)

    def dtype(self, onnx_type: int) -> torch.dtype:
        """Torch dtype for an ONNX element type, honouring the module's float dtype override."""
        if onnx_type not in ONNX_TO_TORCH:
            raise TypeError(f"{self.op_type} '{self.name}': ONNX element type "
                            f"{TensorProto.DataType.Name(onnx_type)} has no torch equivalent")
        dt = ONNX_TO_TORCH[onnx_type]
        return self.float_dtype if self.float_dtype is not None and dt.is_floating_point else dt


ONNX_TO_TORCH = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64, TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16, TensorProto.INT8: torch.int8, TensorProto.INT16: torch.int16,
    TensorProto.INT32: torch.int32, TensorProto.INT64: torch.int64, TensorProto.UINT8: torch.uint8,
    TensorProto.UINT16: torch.uint16, TensorProto.UINT32: torch.uint32, TensorProto.UINT64: torch.uint64,
    TensorProto.BOOL: torch.bool,
}
TORCH_TO_ONNX = {v: k for k, v in ONNX_TO_TORCH.items()}


def numpy_to_torch(arr: np.ndarray) -> Tensor:
    """A torch copy of ``arr``; bfloat16 (ml_dtypes) goes through its uint16 bits."""
    arr = np.asarray(arr)
    if arr.dtype.name == "bfloat16":
        return torch.from_numpy(np.array(arr.view(np.uint16), copy=True)).view(torch.bfloat16)
    return torch.from_numpy(np.array(arr, copy=True))


def tensor_raw_bytes(t: Tensor) -> bytes:
    """Little-endian element bytes of a CPU tensor, as ONNX raw_data stores them."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    arr = t.numpy()
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def sparse_to_dense(sp: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sp.values)
    indices = numpy_helper.to_array(sp.indices).astype(np.int64)
    dense = np.zeros(tuple(sp.dims), dtype=values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense


def _parse_attr(a: onnx.AttributeProto):
    A = onnx.AttributeProto
    if a.type == A.FLOAT:
        return float(np.float32(a.f))
    if a.type == A.INT:
        return int(a.i)
    if a.type == A.STRING:
        return a.s.decode("utf-8", errors="replace")
    if a.type == A.TENSOR:
        return numpy_helper.to_array(a.t)
    if a.type == A.SPARSE_TENSOR:
        return sparse_to_dense(a.sparse_tensor)
    if a.type == A.FLOATS:
        return [float(np.float32(v)) for v in a.floats]
    if a.type == A.INTS:
        return [int(v) for v in a.ints]
    if a.type == A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if a.type == A.TENSORS:
        return [numpy_helper.to_array(t) for t in a.tensors]
    raise ValueError(f"attribute '{a.name}' of type {A.AttributeType.Name(a.type)} is not supported")


def parse_attributes(node: onnx.NodeProto) -> dict:
    """Node attributes as python values. Graph attributes (control flow) raise ValueError."""
    return {a.name: _parse_attr(a) for a in node.attribute}


# --------------------------------------------------------------------------------------------------------------
# Small helpers shared by the ops
# --------------------------------------------------------------------------------------------------------------


def _opt(inputs: list, i: int) -> Optional[Tensor]:
    return inputs[i] if i < len(inputs) else None


def _static(inputs: list, i: int, ctx: NodeContext) -> Optional[list]:
    """Input ``i`` as a flat python list: the build-time constant if any, else the run-time tensor."""
    if i in ctx.static:
        return ctx.static[i]
    t = _opt(inputs, i)
    return None if t is None else t.reshape(-1).tolist()


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _as_list(out: OpResult) -> list:
    return [out] if isinstance(out, Tensor) else list(out)


def _torch_pad(begin: Sequence[int], end: Sequence[int]) -> list[int]:
    """ONNX per-axis (begins, ends) of the last len(begin) axes -> F.pad's last-axis-first order."""
    out: list[int] = []
    for b, e in zip(reversed(list(begin)), reversed(list(end))):
        out += [int(b), int(e)]
    return out


def _lowest(dtype: torch.dtype) -> float:
    return float("-inf") if dtype.is_floating_point else torch.iinfo(dtype).min


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
# Linear algebra
# --------------------------------------------------------------------------------------------------------------


@register("MatMul")
def matmul(inputs, attrs, ctx):
    return torch.matmul(inputs[0], inputs[1])


@register("Gemm")
def gemm(inputs, attrs, ctx):
    """Y = alpha * A' B' + beta * C, C broadcast to (M, N)."""
    a, b, c = inputs[0], inputs[1], _opt(inputs, 2)
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0):
        b = b.t()
    if c is None or beta == 0.0:
        y = a @ b
        return y if alpha == 1.0 else alpha * y
    return torch.addmm(c, a, b, beta=beta, alpha=alpha)


@register("Einsum")
def einsum(inputs, attrs, ctx):
    return torch.einsum(attrs["equation"].replace(" ", ""), *inputs)


# --------------------------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------------------------

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _same_pads(auto_pad: str, in_sizes, kernel, strides, dilations):
    """SAME_UPPER puts the odd pad at the end, SAME_LOWER at the beginning; output = ceil(in / stride)."""
    begin, end = [], []
    for n, k, s, d in zip(in_sizes, kernel, strides, dilations):
        total = max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n)
        small, big = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else big)
        end.append(big if auto_pad == "SAME_UPPER" else small)
    return begin, end


def _spatial_pads(attrs: dict, in_sizes, kernel, strides, dilations):
    nd = len(kernel)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(auto_pad, in_sizes, kernel, strides, dilations)
    if auto_pad == "VALID":
        return [0] * nd, [0] * nd
    pads = attrs.get("pads", [0] * (2 * nd))
    return list(pads[:nd]), list(pads[nd:])


def _check_rank(kinds):
    def check(attrs, ctx):
        if "kernel_shape" in attrs and len(attrs["kernel_shape"]) not in kinds:
            return f"{len(attrs['kernel_shape'])}-D kernels are not supported (only {sorted(kinds)}-D)"
        return None

    return check


@register("Conv", check=_check_rank(_CONV))
def conv(inputs, attrs, ctx):
    x, w, b = inputs[0], inputs[1], _opt(inputs, 2)
    nd = w.dim() - 2
    kernel = list(w.shape[2:])
    strides = attrs.get("strides", [1] * nd)
    dilations = attrs.get("dilations", [1] * nd)
    begin, end = _spatial_pads(attrs, x.shape[2:], kernel, strides, dilations)
    if begin != end:
        x = F.pad(x, _torch_pad(begin, end))
        begin = [0] * nd
    return _CONV[nd](x, w, b, strides, begin, dilations, attrs.get("group", 1))


def _conv_transpose_pads(attrs, in_sizes, kernel, strides, dilations, out_pad):
    """(pad_head, pad_tail) per axis, as onnxruntime computes them (output_shape / auto_pad / pads)."""
    nd = len(kernel)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    out_shape = attrs.get("output_shape")
    if out_shape is None and auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        if auto_pad == "VALID":
            return [0] * nd, [0] * nd
        pads = attrs.get("pads", [0] * (2 * nd))
        return list(pads[:nd]), list(pads[nd:])
    out_shape = list(out_shape)[-nd:] if out_shape is not None else None
    head, tail = [], []
    for i in range(nd):
        full = (in_sizes[i] - 1) * strides[i] + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1
        target = out_shape[i] if out_shape is not None else in_sizes[i] * strides[i]
        total = max(0, full - target)
        if auto_pad == "SAME_UPPER":
            head.append(total // 2)
            tail.append(total - total // 2)
        else:
            head.append(total - total // 2)
            tail.append(total // 2)
    return head, tail


@register("ConvTranspose", check=_check_rank(_CONV_T))
def conv_transpose(inputs, attrs, ctx):
    x, w, b = inputs[0], inputs[1], _opt(inputs, 2)
    nd = w.dim() - 2
    kernel = list(w.shape[2:])
    strides = attrs.get("strides", [1] * nd)
    dilations = attrs.get("dilations", [1] * nd)
    out_pad = attrs.get("output_padding", [0] * nd)
    group = attrs.get("group", 1)
    head, tail = _conv_transpose_pads(attrs, x.shape[2:], kernel, strides, dilations, out_pad)
    if head == tail:
        return _CONV_T[nd](x, w, b, strides, head, out_pad, group, dilations)
    y = _CONV_T[nd](x, w, b, strides, 0, out_pad, group, dilations)
    crop = tuple(slice(h, y.shape[2 + i] - t) for i, (h, t) in enumerate(zip(head, tail)))
    return y[(slice(None), slice(None)) + crop]


# --------------------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------------------


def _check_bn(attrs, ctx):
    if attrs.get("spatial", 1) != 1:
        return "BatchNormalization with spatial=0 is not supported"
    return None


@register("BatchNormalization", check=_check_bn)
def batch_norm(inputs, attrs, ctx):
    """Inference mode always: the running statistics stay frozen, even in module.train() (fine-tuning).

    Extra outputs (training_mode=1 or old opsets) return the unchanged statistics.
    """
    x, scale, bias, mean, var = inputs[:5]
    eps = attrs.get("epsilon", 1e-5)
    if mean.requires_grad or var.requires_grad:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        inv = torch.rsqrt(var.reshape(shape) + eps)
        y = (x - mean.reshape(shape)) * inv * scale.reshape(shape) + bias.reshape(shape)
    else:
        y = F.batch_norm(x, mean, var, scale, bias, training=False, momentum=0.0, eps=eps)
    return [y, mean, var, mean, var][: ctx.n_outputs]


@register("InstanceNormalization")
def instance_norm(inputs, attrs, ctx):
    x, scale, bias = inputs
    return F.instance_norm(x, weight=scale, bias=bias, eps=attrs.get("epsilon", 1e-5))


@register("LayerNormalization", since_opset=17)
def layer_norm(inputs, attrs, ctx):
    """Normalise over axes [axis, rank); optional outputs Mean and InvStdDev (kept dims)."""
    x, scale, bias = inputs[0], inputs[1], _opt(inputs, 2)
    axis = _axis(attrs.get("axis", -1), x.dim())
    eps = attrs.get("epsilon", 1e-5)
    out_dtype = x.dtype
    if attrs.get("stash_type", 1) == 1 and x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    norm_shape = tuple(x.shape[axis:])
    if ctx.n_outputs == 1 and tuple(scale.shape) == norm_shape and (bias is None or bias.shape == scale.shape):
        return F.layer_norm(x, norm_shape, scale.to(x.dtype), None if bias is None else bias.to(x.dtype),
                            eps).to(out_dtype)
    dims = tuple(range(axis, x.dim()))
    mu = x.mean(dims, keepdim=True)
    inv = torch.rsqrt((x - mu).square().mean(dims, keepdim=True) + eps)
    y = (x - mu) * inv * scale
    if bias is not None:
        y = y + bias
    return [y.to(out_dtype), mu, inv][: ctx.n_outputs]


# --------------------------------------------------------------------------------------------------------------
# Softmax family
# --------------------------------------------------------------------------------------------------------------


def _hardmax(x: Tensor, dim: int) -> Tensor:
    return F.one_hot(torch.argmax(x, dim), x.shape[dim]).movedim(-1, dim).to(x.dtype)


_SOFTMAX = {"Softmax": torch.softmax, "LogSoftmax": torch.log_softmax, "Hardmax": _hardmax}


def _softmax_coerced(fn):
    """Opset < 13: flatten to 2-D at axis (default 1), apply on dim 1, restore the shape."""

    def op(inputs, attrs, ctx):
        x = inputs[0]
        axis = _axis(attrs.get("axis", 1), x.dim())
        rows = math.prod(x.shape[:axis])
        return fn(x.reshape(rows, math.prod(x.shape[axis:])), 1).reshape(x.shape)

    return op


def _softmax_axis(fn):
    """Opset >= 13: along one axis (default -1)."""

    def op(inputs, attrs, ctx):
        return fn(inputs[0], attrs.get("axis", -1))

    return op


for _name, _fn in _SOFTMAX.items():
    register(_name)(_softmax_coerced(_fn))
    register(_name, since_opset=13)(_softmax_axis(_fn))


# --------------------------------------------------------------------------------------------------------------
# Shapes and indexing
# --------------------------------------------------------------------------------------------------------------


def _reshape(x: Tensor, shape: list, allowzero: int) -> Tensor:
    if not allowzero:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@register("Reshape")
def reshape_v1(inputs, attrs, ctx):
    return _reshape(inputs[0], attrs["shape"], 0)


@register("Reshape", since_opset=5, static_inputs=(1,))
def reshape(inputs, attrs, ctx):
    return _reshape(inputs[0], _static(inputs, 1, ctx), attrs.get("allowzero", 0))


@register("Flatten")
def flatten(inputs, attrs, ctx):
    x = inputs[0]
    axis = _axis(attrs.get("axis", 1), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@register("Transpose")
def transpose(inputs, attrs, ctx):
    x = inputs[0]
    return x.permute(attrs.get("perm", list(range(x.dim() - 1, -1, -1))))


def _squeeze(x: Tensor, axes) -> Tensor:
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(_axis(a, x.dim()) for a in axes)) if axes else x


def _unsqueeze(x: Tensor, axes) -> Tensor:
    rank = x.dim() + len(axes)
    shape = list(x.shape)
    for a in sorted(_axis(a, rank) for a in axes):
        shape.insert(a, 1)
    return x.reshape(shape)


@register("Squeeze")
def squeeze_v1(inputs, attrs, ctx):
    return _squeeze(inputs[0], attrs.get("axes"))


@register("Squeeze", since_opset=13, static_inputs=(1,))
def squeeze(inputs, attrs, ctx):
    return _squeeze(inputs[0], _static(inputs, 1, ctx))


@register("Unsqueeze")
def unsqueeze_v1(inputs, attrs, ctx):
    return _unsqueeze(inputs[0], attrs["axes"])


@register("Unsqueeze", since_opset=13, static_inputs=(1,))
def unsqueeze(inputs, attrs, ctx):
    return _unsqueeze(inputs[0], _static(inputs, 1, ctx))


@register("Concat")
def concat(inputs, attrs, ctx):
    return torch.cat([t for t in inputs if t is not None], dim=attrs.get("axis", 0))


def _split(x: Tensor, axis: int, split, n: int) -> list:
    if not split:
        dim = x.shape[axis]
        size = -(-dim // n)  # opset 18 num_outputs: ceil-sized chunks, the last one smaller
        split = [size] * (n - 1) + [dim - size * (n - 1)]
    return list(torch.split(x, list(split), dim=axis))


@register("Split", static_inputs=(1,))
def split_v1(inputs, attrs, ctx):
    """Opset 1-12: sizes from the 'split' attribute (or input 1 at opset 1), else equal parts."""
    sizes = _static(inputs, 1, ctx) if _opt(inputs, 1) is not None or 1 in ctx.static else attrs.get("split")
    return _split(inputs[0], attrs.get("axis", 0), sizes, ctx.n_outputs)


@register("Split", since_opset=13, static_inputs=(1,))
def split(inputs, attrs, ctx):
    """Opset 13+: sizes from input 1; else equal parts (18: num_outputs, last part may be smaller)."""
    return _split(inputs[0], attrs.get("axis", 0), _static(inputs, 1, ctx), ctx.n_outputs)


_INT64_MAX = 2**63 - 1


def _slice(x: Tensor, starts, ends, axes, steps) -> Tensor:
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.dim()
    backwards = []
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = _axis(a, x.dim())
        n = x.shape[a]
        s = s + n if s < 0 else s
        e = e + n if e < 0 else e
        if st > 0:
            index[a] = slice(min(max(s, 0), n), min(max(e, 0), n), st)
        else:
            e = -1 if e == _INT64_MAX else min(max(e, -1), n - 1)  # onnxruntime: INT64_MAX = "to the start"
            backwards.append((a, min(max(s, 0), n - 1), e, st))
    y = x[tuple(index)]
    for a, s, e, st in backwards:
        y = y.index_select(a, torch.tensor(range(s, e, st), dtype=torch.int64, device=x.device))
    return y


@register("Slice")
def slice_v1(inputs, attrs, ctx):
    return _slice(inputs[0], attrs["starts"], attrs["ends"], attrs.get("axes"), None)


@register("Slice", since_opset=10, static_inputs=(1, 2, 3, 4))
def slice_(inputs, attrs, ctx):
    return _slice(inputs[0], _static(inputs, 1, ctx), _static(inputs, 2, ctx), _static(inputs, 3, ctx),
                  _static(inputs, 4, ctx))


def _wrap_indices(idx: Tensor, size: int) -> Tensor:
    idx = idx.long()
    return torch.where(idx < 0, idx + size, idx)


@register("Gather")
def gather(inputs, attrs, ctx):
    """out = data.shape[:axis] + indices.shape + data.shape[axis+1:] (Embedding is Gather on axis 0)."""
    data, idx = inputs
    axis = _axis(attrs.get("axis", 0), data.dim())
    idx = _wrap_indices(idx, data.shape[axis])
    out = data.index_select(axis, idx.reshape(-1))
    return out.reshape(tuple(data.shape[:axis]) + tuple(idx.shape) + tuple(data.shape[axis + 1:]))


@register("GatherElements")
def gather_elements(inputs, attrs, ctx):
    data, idx = inputs
    axis = _axis(attrs.get("axis", 0), data.dim())
    return torch.gather(data, axis, _wrap_indices(idx, data.shape[axis]))


@register("GatherND")
def gather_nd(inputs, attrs, ctx):
    data, idx = inputs
    b = attrs.get("batch_dims", 0)
    k = idx.shape[-1]
    batch = tuple(data.shape[:b])
    nb = math.prod(batch)
    d = data.reshape((nb,) + tuple(data.shape[b:]))
    i = idx.long().reshape(nb, -1, k)
    sizes = torch.tensor(d.shape[1:1 + k], device=idx.device)
    i = torch.where(i < 0, i + sizes, i)
    rows = torch.arange(nb, device=idx.device).reshape(nb, 1)
    out = d[(rows,) + tuple(i[..., j] for j in range(k))]
    return out.reshape(batch + tuple(idx.shape[b:-1]) + tuple(data.shape[b + k:]))


def _check_reduction(allowed):
    def check(attrs, ctx):
        r = attrs.get("reduction", "none")
        return None if r in allowed else f"reduction '{r}' is not supported (only {sorted(allowed)})"

    return check


_SCATTER_REDUCE = {"mul": "prod", "max": "amax", "min": "amin"}


@register("ScatterElements", check=_check_reduction({"none", "add", "mul", "max", "min"}))
def scatter_elements(inputs, attrs, ctx):
    data, idx, updates = inputs
    axis = _axis(attrs.get("axis", 0), data.dim())
    idx = _wrap_indices(idx, data.shape[axis])
    r = attrs.get("reduction", "none")
    if r == "none":
        return torch.scatter(data, axis, idx, updates)
    if r == "add":
        return torch.scatter_add(data, axis, idx, updates)
    return torch.scatter_reduce(data, axis, idx, updates, _SCATTER_REDUCE[r], include_self=True)


@register("ScatterND", check=_check_reduction({"none", "add"}))
def scatter_nd(inputs, attrs, ctx):
    data, idx, updates = inputs
    k = idx.shape[-1]
    sizes = torch.tensor(data.shape[:k], device=idx.device)
    idx = idx.long()
    idx = torch.where(idx < 0, idx + sizes, idx)
    key = tuple(idx[..., j] for j in range(k))
    return data.index_put(key, updates, accumulate=attrs.get("reduction", "none") == "add")


@register("Expand", static_inputs=(1,))
def expand(inputs, attrs, ctx):
    """Bidirectional broadcast of x with the requested shape."""
    x = inputs[0]
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(_static(inputs, 1, ctx))))


@register("Tile", static_inputs=(1,))
def tile(inputs, attrs, ctx):
    return inputs[0].repeat(_static(inputs, 1, ctx))


@register("Shape")
def shape(inputs, attrs, ctx):
    x = inputs[0]
    dims = list(x.shape)[attrs.get("start", 0):attrs.get("end", x.dim())]
    return torch.tensor(dims, dtype=torch.int64, device=x.device)


@register("Size")
def size(inputs, attrs, ctx):
    x = inputs[0]
    return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


def _torch_dtype_of(arr: np.ndarray, ctx: NodeContext) -> torch.dtype:
    return ctx.dtype(onnx.helper.np_dtype_to_tensor_dtype(arr.dtype))


@register("ConstantOfShape", static_inputs=(0,), fold=True)
def constant_of_shape(inputs, attrs, ctx):
    value = attrs.get("value", np.zeros(1, dtype=np.float32))
    dims = _static(inputs, 0, ctx)
    device = inputs[0].device if inputs and inputs[0] is not None else None
    return torch.full(dims, value.reshape(-1)[0].item(), dtype=_torch_dtype_of(value, ctx), device=device)


_CONSTANT_KINDS = {
    "value": lambda v: v,
    "sparse_value": lambda v: v,
    "value_float": lambda v: np.array(v, dtype=np.float32),
    "value_floats": lambda v: np.array(v, dtype=np.float32),
    "value_int": lambda v: np.array(v, dtype=np.int64),
    "value_ints": lambda v: np.array(v, dtype=np.int64),
}


def _check_constant(attrs, ctx):
    kinds = [k for k in attrs if k in _CONSTANT_KINDS]
    if len(kinds) != 1:
        return f"Constant needs exactly one of {sorted(_CONSTANT_KINDS)} (string constants are not supported)"
    return None


@register("Constant", check=_check_constant, fold=True)
def constant(inputs, attrs, ctx):
    kind = next(k for k in attrs if k in _CONSTANT_KINDS)
    arr = np.asarray(_CONSTANT_KINDS[kind](attrs[kind]))
    t = numpy_to_torch(arr)
    return t.to(ctx.float_dtype) if ctx.float_dtype is not None and t.is_floating_point() else t


@register("Range")
def range_(inputs, attrs, ctx):
    start, limit, delta = inputs
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device)


@register("Where")
def where(inputs, attrs, ctx):
    return torch.where(inputs[0], inputs[1], inputs[2])


def _check_cast(attrs, ctx):
    to = attrs.get("to")
    if to not in ONNX_TO_TORCH:
        name = TensorProto.DataType.Name(to) if to in TensorProto.DataType.values() else to
        return f"Cast to {name} is not supported"
    return None


@register("Cast", check=_check_cast)
def cast(inputs, attrs, ctx):
    return inputs[0].to(ctx.dtype(attrs["to"]))


@register("CastLike")
def cast_like(inputs, attrs, ctx):
    return inputs[0].to(inputs[1].dtype)


@register("NonZero")
def non_zero(inputs, attrs, ctx):
    return torch.nonzero(inputs[0]).t().contiguous()


@register("Trilu", static_inputs=(1,))
def trilu(inputs, attrs, ctx):
    k = _static(inputs, 1, ctx)
    k = int(k[0]) if k else 0
    return torch.triu(inputs[0], k) if attrs.get("upper", 1) else torch.tril(inputs[0], k)


@register("CumSum", static_inputs=(1,))
def cumsum(inputs, attrs, ctx):
    x = inputs[0]
    axis = _axis(int(_static(inputs, 1, ctx)[0]), x.dim())
    reverse = attrs.get("reverse", 0)
    y = torch.cumsum(x.flip(axis) if reverse else x, axis)
    if attrs.get("exclusive", 0):
        zero = torch.zeros_like(y.narrow(axis, 0, 1))
        y = torch.cat([zero, y.narrow(axis, 0, y.shape[axis] - 1)], axis)
    return y.flip(axis) if reverse else y


@register("OneHot", static_inputs=(1,))
def one_hot(inputs, attrs, ctx):
    """Out-of-range indices give an all-'off' row; negative indices count from depth."""
    idx, values = inputs[0], inputs[2]
    depth = int(_static(inputs, 1, ctx)[0])
    idx = _wrap_indices(idx, depth)
    axis = _axis(attrs.get("axis", -1), idx.dim() + 1)
    classes = torch.arange(depth, device=idx.device).reshape([-1] + [1] * (idx.dim() - axis))
    hot = idx.unsqueeze(axis) == classes
    return torch.where(hot, values[1], values[0])


@register("DepthToSpace")
def depth_to_space(inputs, attrs, ctx):
    x = inputs[0]
    bs = attrs["blocksize"]
    n, c, h, w = x.shape
    if attrs.get("mode", "DCR") == "DCR":
        y = x.reshape(n, bs, bs, c // bs ** 2, h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // bs ** 2, bs, bs, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // bs ** 2, h * bs, w * bs)


@register("SpaceToDepth")
def space_to_depth(inputs, attrs, ctx):
    x = inputs[0]
    bs = attrs["blocksize"]
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * bs * bs, h // bs, w // bs)


# --------------------------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------------------------


def _dropout(x: Tensor, own_ratio: Optional[float], ctx: NodeContext) -> list:
    """Identity in eval; in train mode drop at ctx.run.dropout_ratios[node] (the module's, rescalable)."""
    p = ctx.run.dropout_ratios.get(ctx.name)
    p = own_ratio if p is None else p
    if not ctx.run.training or not p:
        return [x, torch.ones_like(x, dtype=torch.bool)][: ctx.n_outputs]
    if ctx.n_outputs == 1:
        return [F.dropout(x, p, training=True)]
    keep = torch.rand_like(x, dtype=torch.float32) >= p
    return [x * keep / (1.0 - p) if p < 1 else torch.zeros_like(x), keep]


@register("Dropout")
def dropout_v1(inputs, attrs, ctx):
    return _dropout(inputs[0], attrs.get("ratio", 0.5), ctx)


@register("Dropout", since_opset=12, static_inputs=(1,))
def dropout(inputs, attrs, ctx):
    """The ratio is input 1 (default 0.5); input 2 (training_mode) is ignored: module.train() decides."""
    ratio = _static(inputs, 1, ctx)
    return _dropout(inputs[0], 0.5 if ratio is None else float(ratio[0]), ctx)


def default_dropout_ratio(attrs: dict, ctx: NodeContext, has_ratio_input: bool) -> Optional[float]:
    """A Dropout node's own ratio when known at build time (None when it is a run-time tensor)."""
    if ctx.opset < 12:
        return attrs.get("ratio", 0.5)
    if 1 in ctx.static:
        return float(ctx.static[1][0])
    return None if has_ratio_input else 0.5


# --------------------------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------------------------


def _pool_out_sizes(in_sizes, kernel, strides, dilations, begin, end, ceil_mode):
    """ONNX output sizes; with ceil_mode a window starting past the input + head pad is dropped."""
    out = []
    for n, k, s, d, b, e in zip(in_sizes, kernel, strides, dilations, begin, end):
        span = n + b + e - ((k - 1) * d + 1)
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= n + b:
            o -= 1
        out.append(o)
    return out


def _pool_geometry(x: Tensor, attrs: dict):
    kernel = list(attrs["kernel_shape"])
    nd = len(kernel)
    strides = attrs.get("strides", [1] * nd)
    dilations = attrs.get("dilations", [1] * nd)
    begin, end = _spatial_pads(attrs, x.shape[2:], kernel, strides, dilations)
    return kernel, strides, dilations, begin, end


def _fast_pool(kernel, begin, end, attrs) -> bool:
    """torch's own padding gives ONNX results: symmetric pads of at most half the kernel, floor mode."""
    return begin == end and not attrs.get("ceil_mode", 0) and all(p <= k // 2 for p, k in zip(begin, kernel))


def _explicit_end_pads(x: Tensor, kernel, strides, dilations, begin, end, ceil_mode):
    """End pads that make floor-mode pooling over the padded input produce the ONNX output size."""
    out = _pool_out_sizes(x.shape[2:], kernel, strides, dilations, begin, end, ceil_mode)
    return [(o - 1) * s + (k - 1) * d + 1 - n - b
            for o, s, k, d, n, b in zip(out, strides, kernel, dilations, x.shape[2:], begin)]


_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _onnx_indices(idx: Tensor, x: Tensor, padded_sizes, begin, storage_order: int) -> Tensor:
    """torch per-plane indices (into the padded input when padded) -> ONNX flat indices into x."""
    coords = []
    rest = idx
    for n in reversed(padded_sizes):
        coords.append(rest % n)
        rest = rest // n
    coords = [c - b for c, b in zip(reversed(coords), begin)]
    sizes = list(x.shape[2:])
    order = range(len(sizes)) if storage_order == 0 else reversed(range(len(sizes)))
    flat = torch.zeros_like(idx)
    for i in order:
        flat = flat * sizes[i] + coords[i]
    plane = math.prod(sizes)
    nc = torch.arange(x.shape[0] * x.shape[1], device=x.device).reshape(x.shape[0], x.shape[1], *[1] * len(sizes))
    return flat + nc * plane


@register("MaxPool", check=_check_rank(_MAX_POOL))
def max_pool(inputs, attrs, ctx):
    x = inputs[0]
    kernel, strides, dilations, begin, end = _pool_geometry(x, attrs)
    nd = len(kernel)
    want_idx = ctx.n_outputs > 1
    if _fast_pool(kernel, begin, end, attrs):
        xp, padding = x, begin
    else:
        ends = _explicit_end_pads(x, kernel, strides, dilations, begin, end, attrs.get("ceil_mode", 0))
        xp, padding = F.pad(x, _torch_pad(begin, ends), value=_lowest(x.dtype)), [0] * nd
    out = _MAX_POOL[nd](xp, kernel, strides, padding, dilations, ceil_mode=False, return_indices=want_idx)
    if not want_idx:
        return out
    y, idx = out
    shift = [0] * nd if xp is x else begin
    return [y, _onnx_indices(idx, x, list(xp.shape[2:]), shift, attrs.get("storage_order", 0))]


def _check_avg_pool(attrs, ctx):
    if any(d != 1 for d in attrs.get("dilations", [])):
        return "AveragePool with dilations is not supported"
    return _check_rank(_AVG_POOL)(attrs, ctx)


def _sum_pool(x: Tensor, kernel, strides) -> Tensor:
    """Window sums (no padding, floor mode); 1-D runs as 2-D with a unit axis."""
    if len(kernel) == 1:
        return _sum_pool(x.unsqueeze(-1), kernel + [1], strides + [1]).squeeze(-1)
    pool = F.avg_pool2d if len(kernel) == 2 else F.avg_pool3d
    return pool(x, kernel, strides, 0, False, True, 1)


@register("AveragePool", check=_check_avg_pool)
def average_pool(inputs, attrs, ctx):
    """Divisor = window cells inside the input (count_include_pad=0) or inside input + pads (=1)."""
    x = inputs[0]
    kernel, strides, dilations, begin, end = _pool_geometry(x, attrs)
    nd = len(kernel)
    include_pad = bool(attrs.get("count_include_pad", 0))
    if _fast_pool(kernel, begin, end, attrs):
        return _AVG_POOL[nd](x, kernel, strides, begin, False, include_pad)
    ends = _explicit_end_pads(x, kernel, strides, dilations, begin, end, attrs.get("ceil_mode", 0))
    sums = _sum_pool(F.pad(x, _torch_pad(begin, ends)), kernel, strides)
    ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    if include_pad:
        mask = F.pad(F.pad(ones, _torch_pad(begin, end), value=1.0),
                     _torch_pad([0] * nd, [e2 - e for e2, e in zip(ends, end)]))
    else:
        mask = F.pad(ones, _torch_pad(begin, ends))
    return sums / _sum_pool(mask, kernel, strides)


@register("GlobalAveragePool")
def global_average_pool(inputs, attrs, ctx):
    x = inputs[0]
    return x.mean(tuple(range(2, x.dim())), keepdim=True)


@register("GlobalMaxPool")
def global_max_pool(inputs, attrs, ctx):
    x = inputs[0]
    return x.amax(tuple(range(2, x.dim())), keepdim=True)


# --------------------------------------------------------------------------------------------------------------
# Pad
# --------------------------------------------------------------------------------------------------------------


def _pad_index(n: int, b: int, e: int, mode: str, device) -> Tensor:
    i = torch.arange(-b, n + e, device=device)
    if mode == "edge":
        return i.clamp(0, n - 1)
    if mode == "wrap":
        return i.remainder(n)
    i = i.abs()  # reflect, without repeating the edge
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def _pad(x: Tensor, pads, mode: str, value, axes=None) -> Tensor:
    rank = x.dim()
    axes = list(range(rank)) if axes is None else [_axis(a, rank) for a in axes]
    begin, end = [0] * rank, [0] * rank
    for j, a in enumerate(axes):
        begin[a], end[a] = int(pads[j]), int(pads[j + len(axes)])
    if mode == "constant":
        return F.pad(x, _torch_pad(begin, end), value=value)
    for a in range(rank):
        if begin[a] or end[a]:
            x = x.index_select(a, _pad_index(x.shape[a], begin[a], end[a], mode, x.device))
    return x


def _check_pad(attrs, ctx):
    mode = attrs.get("mode", "constant")
    ok = {"constant", "reflect", "edge", "wrap"}
    return None if mode in ok else f"Pad mode '{mode}' is not supported (only {sorted(ok)})"


@register("Pad", since_opset=2, check=_check_pad)
def pad_v2(inputs, attrs, ctx):
    return _pad(inputs[0], attrs["pads"], attrs.get("mode", "constant"), attrs.get("value", 0.0))


@register("Pad", since_opset=11, static_inputs=(1, 2, 3), check=_check_pad)
def pad(inputs, attrs, ctx):
    value = _static(inputs, 2, ctx)
    return _pad(inputs[0], _static(inputs, 1, ctx), attrs.get("mode", "constant"), value[0] if value else 0,
                _static(inputs, 3, ctx))


# --------------------------------------------------------------------------------------------------------------
# Resize / Upsample: separable 1-D resampling along each resized axis, in ONNX coordinates
# --------------------------------------------------------------------------------------------------------------


def _source_coords(out_len: int, in_len: int, scale: float, mode: str, roi) -> Tensor:
    """Input coordinate of each output index, in float32 arithmetic as onnxruntime (ties decide nearest)."""
    o = torch.arange(out_len, dtype=torch.float32)
    s, n, m = np.float32(scale), np.float32(in_len), np.float32(out_len)
    if mode == "half_pixel":
        return (o + 0.5) / s - 0.5
    if mode == "half_pixel_symmetric":  # onnxruntime: float offset, the rest in double
        offset = n / np.float32(2) * (np.float32(1) - m / (s * n))
        return (float(offset) + (o.double() + 0.5) / float(s) - 0.5).float()
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / s - 0.5 if out_len > 1 else torch.zeros_like(o)
    if mode == "align_corners":
        return o * (n - 1) / (m - 1) if out_len > 1 else torch.zeros_like(o)
    if mode == "asymmetric":
        return o / s
    if mode == "tf_half_pixel_for_nn":
        return (o + 0.5) / s
    start, end = np.float32(roi[0]), np.float32(roi[1])
    if out_len > 1:
        return start * (n - 1) + o * (end - start) * (n - 1) / (m - 1)
    return torch.full_like(o, 0.5 * float(start + end) * float(n - 1))


def _nearest_index(xo: Tensor, mode: str, downsample: bool) -> Tensor:
    fl = torch.floor(xo)
    frac = xo - fl
    if mode == "round_prefer_floor":
        idx = torch.where(frac > 0.5, fl + 1, fl)
    elif mode == "round_prefer_ceil":
        idx = torch.where(frac >= 0.5, fl + 1, fl)
    elif mode == "floor":
        idx = fl
    elif mode == "ceil":
        idx = torch.ceil(xo)
    else:  # opset < 11 ('simple'): truncate when upsampling, ceil when downsampling, as onnxruntime
        idx = torch.ceil(xo) if downsample else torch.trunc(xo)
    return idx.long()


def _cubic_coeffs(t: Tensor, a: float) -> Tensor:
    """Keys cubic weights of the 4 neighbours floor-1 .. floor+2 for fractional offsets t, shape (n, 4)."""
    d = torch.stack([t + 1, t, 1 - t, 2 - t], -1)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, far)


def _along(w: Tensor, axis: int, rank: int, dtype) -> Tensor:
    return w.to(dtype).reshape([-1] + [1] * (rank - axis - 1))


def _resample_axis(x: Tensor, axis: int, out_len: int, scale: float, attrs: dict, roi, legacy: bool) -> Tensor:
    in_len = x.shape[axis]
    mode = attrs.get("mode", "nearest")
    coord = "asymmetric" if legacy else attrs.get("coordinate_transformation_mode", "half_pixel")
    xo = _source_coords(out_len, in_len, scale, coord, roi)
    rank, dev = x.dim(), x.device
    if mode == "nearest":
        nm = "simple" if legacy else attrs.get("nearest_mode", "round_prefer_floor")
        idx = _nearest_index(xo, nm, scale < 1).clamp(0, in_len - 1)
        y = x.index_select(axis, idx.to(dev))
    elif mode == "linear":
        xc = xo.clamp(0, in_len - 1)
        i0 = torch.floor(xc).long()
        i1 = (i0 + 1).clamp(max=in_len - 1)
        w1 = _along(xc - i0, axis, rank, x.dtype).to(dev)
        y = x.index_select(axis, i0.to(dev)) * (1 - w1) + x.index_select(axis, i1.to(dev)) * w1
    else:  # cubic
        fl = torch.floor(xo)
        coeffs = _cubic_coeffs(xo - fl, attrs.get("cubic_coeff_a", -0.75))
        pos = fl.long().unsqueeze(-1) + torch.arange(-1, 3)
        if attrs.get("exclude_outside", 0):
            coeffs = torch.where((pos >= 0) & (pos <= in_len - 1), coeffs, torch.zeros_like(coeffs))
            coeffs = coeffs / coeffs.sum(-1, keepdim=True)
        pos = pos.clamp(0, in_len - 1)
        y = sum(x.index_select(axis, pos[:, j].to(dev)) * _along(coeffs[:, j], axis, rank, x.dtype).to(dev)
                for j in range(4))
    if coord == "tf_crop_and_resize":
        outside = _along((xo < 0) | (xo > in_len - 1), axis, rank, torch.bool).to(dev)
        y = torch.where(outside, torch.tensor(attrs.get("extrapolation_value", 0.0), dtype=y.dtype, device=dev), y)
    return y


def _resize(x: Tensor, roi, scales, sizes, attrs: dict, legacy: bool) -> Tensor:
    rank = x.dim()
    axes = [_axis(a, rank) for a in attrs.get("axes", range(rank))]
    in_sizes = [x.shape[a] for a in axes]
    if sizes:
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        ratios = [np.float32(o) / np.float32(n) for o, n in zip(sizes, in_sizes)]
        if policy != "stretch":
            common = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [common] * len(axes)
            sizes = [int(np.floor(np.float32(common) * np.float32(n) + np.float32(0.5))) for n in in_sizes]
        scales = ratios
    else:
        sizes = [int(np.floor(np.float32(n) * np.float32(s))) for n, s in zip(in_sizes, scales)]
    if sizes == in_sizes:
        return x  # onnxruntime copies when no axis changes size, whatever the scales or roi say
    roi = list(roi) if roi else [0.0] * len(axes) + [1.0] * len(axes)
    if len(roi) == 2 * rank and len(axes) != rank:
        roi = [roi[a] for a in axes] + [roi[rank + a] for a in axes]
    coord = attrs.get("coordinate_transformation_mode", "half_pixel")
    for j, a in enumerate(axes):
        if sizes[j] == in_sizes[j] and scales[j] == 1 and (legacy or coord != "tf_crop_and_resize"):
            continue
        x = _resample_axis(x, a, sizes[j], float(scales[j]), attrs, (roi[j], roi[j + len(axes)]), legacy)
    return x


def _check_resize(attrs, ctx):
    mode = attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        return f"Resize mode '{mode}' is not supported"
    if attrs.get("antialias", 0):
        return "Resize with antialias=1 is not supported"
    return None


@register("Resize", since_opset=10, static_inputs=(1,), check=_check_resize)
def resize_v10(inputs, attrs, ctx):
    """Opset 10: scales only; Upsample semantics (asymmetric coordinates, truncating nearest)."""
    return _resize(inputs[0], None, _static(inputs, 1, ctx), None, attrs, legacy=True)


@register("Resize", since_opset=11, static_inputs=(1, 2, 3), check=_check_resize)
def resize(inputs, attrs, ctx):
    """Opset 11+: X, roi, scales, sizes; an empty scales/sizes/roi counts as absent."""
    return _resize(inputs[0], _static(inputs, 1, ctx), _static(inputs, 2, ctx), _static(inputs, 3, ctx),
                   attrs, legacy=False)


@register("Upsample", since_opset=7, check=_check_resize)
def upsample_v7(inputs, attrs, ctx):
    return _resize(inputs[0], None, attrs["scales"], None, attrs, legacy=True)


@register("Upsample", since_opset=9, static_inputs=(1,), check=_check_resize)
def upsample(inputs, attrs, ctx):
    return _resize(inputs[0], None, _static(inputs, 1, ctx), None, attrs, legacy=True)


# --------------------------------------------------------------------------------------------------------------
# Reductions, arg-reductions, TopK
# --------------------------------------------------------------------------------------------------------------


def _prod(x: Tensor, dims, keepdim: bool) -> Tensor:
    for d in sorted(dims, reverse=True):
        x = torch.prod(x, d, keepdim=keepdim)
    return x


_REDUCERS = {
    "ReduceSum": lambda x, d, k: torch.sum(x, d, keepdim=k),
    "ReduceMean": lambda x, d, k: torch.mean(x, d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, d, keepdim=k),
    "ReduceProd": _prod,
    "ReduceL1": lambda x, d, k: torch.sum(x.abs(), d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.linalg.vector_norm(x, 2, d, keepdim=k),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x.square(), d, keepdim=k),
    "ReduceLogSum": lambda x, d, k: torch.log(torch.sum(x, d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, d, keepdim=k),
}
_AXES_AS_INPUT = {"ReduceSum": 13}  # the other reductions take axes as an input from opset 18


def _reduce(fn, x: Tensor, axes, attrs: dict) -> Tensor:
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return x
        axes = range(x.dim())
    dims = tuple(sorted({_axis(a, x.dim()) for a in axes}))
    if not dims:
        return x
    return fn(x, dims, bool(attrs.get("keepdims", 1)))


def _reduce_attr(fn):
    def op(inputs, attrs, ctx):
        return _reduce(fn, inputs[0], attrs.get("axes"), attrs)

    return op


def _reduce_input(fn):
    def op(inputs, attrs, ctx):
        return _reduce(fn, inputs[0], _static(inputs, 1, ctx), attrs)

    return op


for _name, _fn in _REDUCERS.items():
    register(_name)(_reduce_attr(_fn))
    register(_name, since_opset=_AXES_AS_INPUT.get(_name, 18), static_inputs=(1,))(_reduce_input(_fn))


def _arg(fn):
    def op(inputs, attrs, ctx):
        x = inputs[0]
        axis = _axis(attrs.get("axis", 0), x.dim())
        keep = bool(attrs.get("keepdims", 1))
        if attrs.get("select_last_index", 0):
            return x.shape[axis] - 1 - fn(x.flip(axis), axis, keepdim=keep)
        return fn(x, axis, keepdim=keep)

    return op


register("ArgMax")(_arg(torch.argmax))
register("ArgMin")(_arg(torch.argmin))


def _topk(x: Tensor, k: int, axis: int, largest: bool) -> list:
    """Stable sort, so equal values keep the lower index first (the ONNX tie rule)."""
    values, idx = torch.sort(x, dim=axis, descending=largest, stable=True)
    return [values.narrow(axis, 0, k), idx.narrow(axis, 0, k)]


@register("TopK")
def topk_v1(inputs, attrs, ctx):
    x = inputs[0]
    return _topk(x, attrs["k"], _axis(attrs.get("axis", -1), x.dim()), True)


@register("TopK", since_opset=10, static_inputs=(1,))
def topk(inputs, attrs, ctx):
    x = inputs[0]
    k = int(_static(inputs, 1, ctx)[0])
    return _topk(x, k, _axis(attrs.get("axis", -1), x.dim()), bool(attrs.get("largest", 1)))


# --------------------------------------------------------------------------------------------------------------
# Recurrent: LSTM, GRU, RNN. Weights stay in ONNX layout; gates are sliced from them on the fly,
# so gradients reach the ONNX-layout parameters.
# --------------------------------------------------------------------------------------------------------------

_RNN_ACTIVATIONS = {
    "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Relu": torch.relu, "Softsign": F.softsign,
    "Softplus": F.softplus,
}
_RNN_DEFAULTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def _check_rnn(attrs, ctx):
    unknown = [a for a in attrs.get("activations", []) if a not in _RNN_ACTIVATIONS]
    if unknown:
        return f"activations {unknown} are not supported (only {sorted(_RNN_ACTIVATIONS)})"
    if attrs.get("activation_alpha") or attrs.get("activation_beta"):
        return "activation_alpha/activation_beta are not supported"
    return None


def _rnn_activations(attrs: dict, op_type: str, n_dir: int) -> list:
    names = attrs.get("activations") or _RNN_DEFAULTS[op_type] * n_dir
    k = len(_RNN_DEFAULTS[op_type])
    if len(names) == k:
        names = names * n_dir
    return [[_RNN_ACTIVATIONS[n] for n in names[d * k:(d + 1) * k]] for d in range(n_dir)]


def _recurrence(step, xw: Tensor, state: tuple, seq_lens: Optional[Tensor], reverse: bool):
    """Run state = step(xw[t], state) over time; returns (h per step [T, B, H], final state).

    With sequence_lens, steps past a sequence's length keep its state and output zeros.
    """
    T = xw.shape[0]
    ys = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        new = step(xw[t], state)
        if seq_lens is not None:
            valid = (seq_lens > t).unsqueeze(-1)
            new = tuple(torch.where(valid, n, s) for n, s in zip(new, state))
            ys[t] = torch.where(valid, new[0], torch.zeros_like(new[0]))
        else:
            ys[t] = new[0]
        state = new
    return torch.stack(ys), state


def _rnn_run(inputs, attrs, ctx, n_gates: int, make_step, n_states: int):
    """Shared driver: layout, directions, initial states, outputs Y, Y_h(, Y_c)."""
    x, w, r = inputs[0], inputs[1], inputs[2]
    b, seq_lens = _opt(inputs, 3), _opt(inputs, 4)
    init = [_opt(inputs, 5), _opt(inputs, 6) if n_states == 2 else None][:n_states]
    batch_first = attrs.get("layout", 0) == 1
    if batch_first:
        x = x.transpose(0, 1)
        init = [None if s is None else s.transpose(0, 1) for s in init]
    direction = attrs.get("direction", "forward")
    n_dir = 2 if direction == "bidirectional" else 1
    hidden = r.shape[-1]
    acts = _rnn_activations(attrs, ctx.op_type, n_dir)
    zeros = x.new_zeros((n_dir, x.shape[1], hidden))
    init = [zeros if s is None else s for s in init]
    ys, finals = [], []
    for d in range(n_dir):
        wb, rb = (None, None) if b is None else (b[d, :n_gates * hidden], b[d, n_gates * hidden:])
        xw = torch.matmul(x, w[d].t())
        step, xw = make_step(d, r[d], wb, rb, xw, acts[d], hidden)
        reverse = direction == "reverse" or d == 1
        y, state = _recurrence(step, xw, tuple(s[d] for s in init), seq_lens, reverse)
        ys.append(y)
        finals.append(state)
    y = torch.stack(ys, 1)  # [T, n_dir, B, H]
    states = [torch.stack([f[i] for f in finals]) for i in range(n_states)]
    if batch_first:
        y = y.permute(2, 0, 1, 3)
        states = [s.transpose(0, 1) for s in states]
    return [y] + states


def _clip(g: Tensor, clip: Optional[float]) -> Tensor:
    return g if clip is None else g.clamp(-clip, clip)


@register("LSTM", check=_check_rnn)
def lstm(inputs, attrs, ctx):
    """Gates i, o, f, c (ONNX order); optional peepholes P = [Pi, Po, Pf], clip, input_forget."""
    p = _opt(inputs, 7)
    clip, couple = attrs.get("clip"), attrs.get("input_forget", 0)

    def make_step(d, r, wb, rb, xw, acts, hidden):
        f_act, g_act, h_act = acts
        if wb is not None:
            xw = xw + wb + rb
        pi, po, pf = (None, None, None) if p is None else p[d].split(hidden)
        rt = r.t()

        def step(xw_t, state):
            h, c = state
            i, o, f, cc = (xw_t + h @ rt).split(hidden, -1)
            if pi is not None:
                i, f = i + pi * c, f + pf * c
            i = f_act(_clip(i, clip))
            f = 1 - i if couple else f_act(_clip(f, clip))
            c = f * c + i * g_act(_clip(cc, clip))
            if po is not None:
                o = o + po * c
            return f_act(_clip(o, clip)) * h_act(c), c

        return step, xw

    return _rnn_run(inputs, attrs, ctx, 4, make_step, 2)


@register("GRU", check=_check_rnn)
def gru(inputs, attrs, ctx):
    """Gates z, r, h (ONNX order); linear_before_reset chooses where the reset gate applies."""
    clip, lbr = attrs.get("clip"), attrs.get("linear_before_reset", 0)

    def make_step(d, r, wb, rb, xw, acts, hidden):
        f_act, g_act = acts
        if wb is not None:
            xw = xw + wb + torch.cat([rb[:2 * hidden], torch.zeros_like(rb[2 * hidden:])])
        rb_h = None if rb is None else rb[2 * hidden:]
        r_zr, r_h = r[:2 * hidden].t(), r[2 * hidden:].t()

        def step(xw_t, state):
            (h,) = state
            x_z, x_r, x_h = xw_t.split(hidden, -1)
            h_z, h_r = (h @ r_zr).split(hidden, -1)
            z = f_act(_clip(x_z + h_z, clip))
            rg = f_act(_clip(x_r + h_r, clip))
            if lbr:
                hh = h @ r_h if rb_h is None else h @ r_h + rb_h
                cand = x_h + rg * hh
            else:
                hh = (rg * h) @ r_h
                cand = x_h + (hh if rb_h is None else hh + rb_h)
            return ((1 - z) * g_act(_clip(cand, clip)) + z * h,)

        return step, xw

    return _rnn_run(inputs, attrs, ctx, 3, make_step, 1)


@register("RNN", check=_check_rnn)
def rnn(inputs, attrs, ctx):
    clip = attrs.get("clip")

    def make_step(d, r, wb, rb, xw, acts, hidden):
        (f_act,) = acts
        if wb is not None:
            xw = xw + wb + rb
        rt = r.t()
        return (lambda xw_t, state: (f_act(_clip(xw_t + state[0] @ rt, clip)),)), xw

    return _rnn_run(inputs, attrs, ctx, 1, make_step, 1)
