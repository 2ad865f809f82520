"""Ops that move data: reshapes, transposes, concat/split/slice, gathers and scatters, constants, casts, Pad."""

from __future__ import annotations

import math

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto

from .core import NodeContext, ONNX_TO_TORCH, Tensor, _axis, _opt, _static, _torch_pad, numpy_to_torch, register

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


@register("CenterCropPad", since_opset=18, static_inputs=(1,))
def center_crop_pad(inputs, attrs, ctx):
    """Crop each named axis to its target size around the centre, or zero-pad it there (the extra one of an odd
    difference at the end), as onnx's reference."""
    x = inputs[0]
    shape = [int(v) for v in _static(inputs, 1, ctx)]
    axes = [_axis(int(a), x.dim()) for a in attrs.get("axes", range(x.dim()))]
    for axis, size in zip(axes, shape):
        dim = x.shape[axis]
        if size < dim:
            x = x.narrow(axis, (dim - size) // 2, size)
        elif size > dim:
            before = (size - dim) // 2
            pads = [0, 0] * (x.dim() - 1 - axis) + [before, size - dim - before]
            x = torch.nn.functional.pad(x, pads)
    return x


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


@register("ReverseSequence")
def reverse_sequence(inputs, attrs, ctx):
    """Each batch entry b's first sequence_lens[b] steps along time_axis reversed, the rest as they were (tf2onnx's
    Keras Bidirectional RNN reverses its input and the backward pass's output with it; sweep 24)."""
    x, lens = inputs
    t_axis, b_axis = attrs.get("time_axis", 0), attrs.get("batch_axis", 1)
    steps = torch.arange(x.shape[t_axis], device=x.device)
    lens = lens.long().to(x.device)
    t, n = (steps[:, None], lens[None, :]) if t_axis < b_axis else (steps[None, :], lens[:, None])
    idx = torch.where(t < n, n - 1 - t, t)  # [T, B] (time first) or [B, T]
    shape = [1] * x.dim()
    shape[t_axis], shape[b_axis] = x.shape[t_axis], x.shape[b_axis]
    idx = idx.reshape(shape).expand(x.shape)
    return torch.gather(x, t_axis, idx)


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


@register("EyeLike")
def eye_like(inputs, attrs, ctx):
    """A 2-D tensor of the input's shape with ones on diagonal k, of `dtype` (default the input's)."""
    x = inputs[0]
    dtype = ONNX_TO_TORCH[attrs["dtype"]] if "dtype" in attrs else x.dtype
    rows, cols = x.shape
    k = int(attrs.get("k", 0))
    eye = torch.zeros((rows, cols), dtype=dtype, device=x.device)
    idx = torch.arange(max(0, -k), min(rows, cols - k), device=x.device)
    eye[idx, idx + k] = 1
    return eye


@register("Compress")
def compress(inputs, attrs, ctx):
    """The slices along `axis` (the flattened input without one) where `condition` is true; a condition shorter
    than the axis selects among its first entries."""
    x, condition = inputs[0], inputs[1].reshape(-1).bool()
    if "axis" not in attrs:
        x, axis = x.reshape(-1), 0
    else:
        axis = _axis(attrs["axis"], x.dim())
    keep = torch.nonzero(condition[: x.shape[axis]]).reshape(-1)
    return torch.index_select(x, axis, keep)


@register("Unique")
def unique(inputs, attrs, ctx):
    """Y, indices (first occurrences), inverse_indices, counts, sorted (default) or in order of first occurrence,
    over the flattened input or along `axis` (no gradient: a selection), as numpy's np.unique computes them."""
    x = inputs[0]
    arr = x.detach().cpu().numpy()
    axis = attrs.get("axis")
    if axis is not None:
        axis = _axis(axis, arr.ndim)
    values, first, inverse, counts = np.unique(arr if axis is not None else arr.reshape(-1), return_index=True,
                                               return_inverse=True, return_counts=True, axis=axis)
    inverse = inverse.reshape(-1)
    if not attrs.get("sorted", 1):  # in order of first occurrence
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        values = np.take(values, order, axis=axis if axis is not None else 0)
        first, counts, inverse = first[order], counts[order], rank[inverse]
    out = [torch.from_numpy(np.ascontiguousarray(values)).to(x.device)]
    out += [torch.from_numpy(a.astype(np.int64)).to(x.device) for a in (first, inverse, counts)]
    return out[: ctx.n_outputs]
