"""Resize / Upsample: separable 1-D resampling along each resized axis, in ONNX coordinates (antialiased linear and
cubic, Resize-18's `antialias=1`, as a constant [out, in] matrix per axis); GridSample."""

from __future__ import annotations

import numpy as np
import torch

from .core import Tensor, _axis, _static, register

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


def _antialias_taps(ratio: np.ndarray, scale: float, mode: str, a: float) -> np.ndarray:
    """ONNX's antialiased kernel (Resize-18 `antialias=1`, linear or cubic): the kernel stretched by 1/scale when
    downsampling, sampled at the input positions around each output's source coordinate (`ratio` = its
    fractional part, 1 at an integer), normalized: weights [out, taps]."""
    s = min(scale, 1.0)
    if mode == "cubic":
        start = int(np.floor(-2 / s) + 1)
        d = np.abs(s * (np.arange(start, 2 - start)[None, :] - ratio[:, None]))
        w = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                     np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))
    else:
        start = int(np.floor(-1 / s) + 1)
        w = np.clip(1 - np.abs(s * (np.arange(start, 2 - start)[None, :] - ratio[:, None])), 0, 1)
    return w / w.sum(-1, keepdims=True)


def _antialias_matrix(xo: Tensor, in_len: int, scale: float, attrs: dict) -> np.ndarray:
    """The [out, in] matrix of an antialiased linear/cubic resize along one axis, as onnxruntime computes it (the
    taps nearest the source coordinate, edge-padded; `exclude_outside` drops the padded ones and renormalizes)."""
    x = xo.double().numpy()
    fl = np.floor(x)
    ratio = np.where(x == fl, 1.0, x - fl)
    w = _antialias_taps(ratio, scale, attrs.get("mode"), attrs.get("cubic_coeff_a", -0.75))
    n = w.shape[1]
    pad = int(np.ceil(n / 2))
    p = np.floor(x + pad)
    frac = x + pad - p
    if n % 2 == 0:
        offset = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        offset = np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    idx = (p + offset).astype(np.int64)[:, None] + np.arange(n)[None, :] - pad
    if attrs.get("exclude_outside", 0):
        w = np.where((idx < 0) | (idx >= in_len), 0.0, w)
        w = w / np.where(w.sum(-1, keepdims=True) == 0, 1.0, w.sum(-1, keepdims=True))
    m = np.zeros((len(x), in_len))
    np.add.at(m, (np.repeat(np.arange(len(x)), n), np.clip(idx, 0, in_len - 1).ravel()), w.ravel())
    return m


def _along(w: Tensor, axis: int, rank: int, dtype) -> Tensor:
    return w.to(dtype).reshape([-1] + [1] * (rank - axis - 1))


def _resample_axis(x: Tensor, axis: int, out_len: int, scale: float, attrs: dict, roi, legacy: bool) -> Tensor:
    in_len = x.shape[axis]
    mode = attrs.get("mode", "nearest")
    coord = "asymmetric" if legacy else attrs.get("coordinate_transformation_mode", "half_pixel")
    xo = _source_coords(out_len, in_len, scale, coord, roi)
    rank, dev = x.dim(), x.device
    if mode in ("linear", "cubic") and attrs.get("antialias", 0):
        m = torch.tensor(_antialias_matrix(xo, in_len, scale, attrs), dtype=x.dtype, device=dev)
        y = torch.matmul(x.movedim(axis, -1), m.T).movedim(-1, axis)
    elif mode == "nearest":
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
# GridSample: torch's grid_sample, whose coordinates, modes and padding are ONNX's
# --------------------------------------------------------------------------------------------------------------

_GRID_MODES = {"bilinear": "bilinear", "linear": "bilinear", "nearest": "nearest", "bicubic": "bicubic",
               "cubic": "bicubic"}  # opset 16's names, then opset 20's


def _check_grid_sample(attrs, ctx):
    mode = attrs.get("mode", "bilinear")
    if mode not in _GRID_MODES:
        return f"GridSample mode '{mode}' is not supported"
    if attrs.get("padding_mode", "zeros") not in ("zeros", "border", "reflection"):
        return f"GridSample padding_mode '{attrs['padding_mode']}' is not supported"
    return None


@register("GridSample", since_opset=16, check=_check_grid_sample)
def grid_sample(inputs, attrs, ctx):
    """X [N, C, H, W] (or [N, C, D, H, W] from opset 20) sampled at grid [N, ..., 2 or 3] of (x, y[, z]) in [-1, 1]."""
    x, grid = inputs[0], inputs[1]
    mode = _GRID_MODES[attrs.get("mode", "bilinear")]
    if x.dim() not in (4, 5) or (x.dim() == 5 and mode == "bicubic"):
        raise NotImplementedError(f"GridSample of a {x.dim()}-D input in mode '{mode}' is not supported")
    return torch.nn.functional.grid_sample(x, grid.to(x.dtype), mode=mode,
                                           padding_mode=attrs.get("padding_mode", "zeros"),
                                           align_corners=bool(attrs.get("align_corners", 0)))
