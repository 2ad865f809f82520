"""Layers: MatMul/Gemm/Einsum, convolutions (DeformConv too), normalisation (LRN and MeanVarianceNormalization too),
the Softmax family, Attention, Dropout, pooling (Lp too, and MaxUnpool), window functions, MelWeightMatrix,
NonMaxSuppression and RoiAlign."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from onnx import TensorProto

from onnxprune.passes.shapes import conv_pads

from .core import ONNX_TO_TORCH, NodeContext, Tensor, _axis, _lowest, _opt, _static, _torch_pad, register

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


def _spatial_pads(attrs: dict, in_sizes, kernel, strides, dilations):
    """(begin, end) pads, auto_pad resolved on the input's spatial sizes (passes.shapes.conv_pads)."""
    pads = conv_pads(attrs.get("auto_pad", "NOTSET"), list(in_sizes), kernel, strides, dilations, attrs.get("pads"))
    return pads[:len(kernel)], pads[len(kernel):]


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


@register("DeformConv", since_opset=19)
def deform_conv(inputs, attrs, ctx):
    """A deformable 2-D convolution (torchvision's deform_conv2d, DCNv1 without a mask, DCNv2 with one): each kernel
    tap reads the input at its position plus a learned offset (dy, dx per tap and offset group, [N, og·kh·kw·2, oh,
    ow]), bilinearly, 0 outside the map (a corner outside counts 0), times the mask, then the grouped product with W."""
    x, w, offset = inputs[0], inputs[1], inputs[2]
    b, mask = _opt(inputs, 3), _opt(inputs, 4)
    n, c, height, width = x.shape
    co, _, kh, kw = w.shape
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    top, left = attrs.get("pads", [0, 0, 0, 0])[:2]
    groups, og = int(attrs.get("group", 1)), int(attrs.get("offset_group", 1))
    oh, ow = offset.shape[2], offset.shape[3]
    taps = kh * kw
    off = offset.reshape(n, og, taps, 2, oh, ow)
    ki = torch.arange(kh, device=x.device).repeat_interleave(kw) * dh  # tap k = i * kw + j
    kj = torch.arange(kw, device=x.device).repeat(kh) * dw
    base_y = (torch.arange(oh, device=x.device) * sh - top)[None, :, None] + ki[:, None, None]  # [taps, oh, 1]
    base_x = (torch.arange(ow, device=x.device) * sw - left)[None, None, :] + kj[:, None, None]  # [taps, 1, ow]
    y = base_y.to(x.dtype) + off[:, :, :, 0]  # [n, og, taps, oh, ow]
    xx = base_x.to(x.dtype) + off[:, :, :, 1]
    inside = (y > -1) & (y < height) & (xx > -1) & (xx < width)
    y0, x0 = torch.floor(y), torch.floor(xx)
    ly, lx = y - y0, xx - x0
    y0, x0 = y0.long(), x0.long()
    source = x.reshape(n, og, c // og, height * width)
    sampled = 0
    for yy, xk, weight in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                           (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
        valid = inside & (yy >= 0) & (yy < height) & (xk >= 0) & (xk < width)
        index = (yy.clamp(0, height - 1) * width + xk.clamp(0, width - 1)).reshape(n, og, 1, -1)
        picked = torch.gather(source, 3, index.expand(n, og, c // og, index.shape[-1]))
        sampled = sampled + picked * (weight * valid).reshape(n, og, 1, -1)
    sampled = sampled.reshape(n, og, c // og, taps, oh, ow)
    if mask is not None:
        sampled = sampled * mask.reshape(n, og, 1, taps, oh, ow)
    cols = sampled.reshape(n, groups, (c // groups) * taps, oh * ow)  # [C/g, kh, kw] as W's input axes
    out = torch.einsum("gok,ngkl->ngol", w.reshape(groups, co // groups, -1), cols).reshape(n, co, oh, ow)
    return out if b is None else out + b.reshape(1, -1, 1, 1)


# ConvInteger / MatMulInteger: dynamic quantization's integer products (its weights folded to float behind a
# QuantizeLinear at load, passes/quantized_weights.py), computed in float on the integer grid so retraining passes
# through them (exact while a product's sums stay below 2**24; the Cast to float after them is then a no-op)
def _centred(x: Tensor, zp: Optional[Tensor], axis: int) -> Tensor:
    """x - zero point in float; a zero point per position of `axis` (a weight's per-channel one) broadcast so."""
    x = x if x.is_floating_point() else x.to(torch.float32)
    if zp is None:
        return x
    zp = zp.to(x.dtype)
    if zp.numel() > 1:
        zp = zp.reshape([-1 if k == axis % x.dim() else 1 for k in range(x.dim())])
    return x - zp


@register("ConvInteger", since_opset=10, check=_check_rank(_CONV))
def conv_integer(inputs, attrs, ctx):
    x, w = _centred(inputs[0], _opt(inputs, 2), 1), _centred(inputs[1], _opt(inputs, 3), 0)
    return conv([x, w], attrs, ctx)


@register("MatMulInteger", since_opset=10)
def matmul_integer(inputs, attrs, ctx):
    """A's zero point is one value or one per row (axis -2), B's one value or one per column (axis -1)."""
    return torch.matmul(_centred(inputs[0], _opt(inputs, 2), -2), _centred(inputs[1], _opt(inputs, 3), -1))


@register("DynamicQuantizeMatMul", domain="com.microsoft")
def dynamic_quantize_matmul(inputs, attrs, ctx):
    """onnxruntime's fusion of DynamicQuantizeLinear(A) -> MatMulInteger(B) -> scales (-> bias)."""
    from .elementwise import dynamic_quantize_linear

    q, scale, zp = dynamic_quantize_linear(inputs[:1], {}, ctx)
    y = torch.matmul(q - zp, _centred(inputs[1], _opt(inputs, 3), -1)) * (scale * inputs[2].to(q.dtype))
    bias = _opt(inputs, 4)
    return y if bias is None else y + bias


@register("MatMulIntegerToFloat", domain="com.microsoft")
def matmul_integer_to_float(inputs, attrs, ctx):
    """onnxruntime's fusion of MatMulInteger(A, B) -> Cast -> Mul(a_scale * b_scale) (-> bias)."""
    a, b = _centred(inputs[0], _opt(inputs, 4), -2), _centred(inputs[1], _opt(inputs, 5), -1)
    y = torch.matmul(a, b) * (inputs[2].to(a.dtype) * inputs[3].to(a.dtype))
    bias = _opt(inputs, 6)
    return y if bias is None else y + bias


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


@register("RMSNormalization", since_opset=23)
def rms_norm(inputs, attrs, ctx):
    """x / sqrt(mean(x^2 over axes [axis, rank)) + epsilon) * scale (scale broadcast), computed in float32 for a
    half-precision x (stash_type 1). A Llama-style model by torch dynamo at opset 23 (sweep 20) could only be refit."""
    x, scale = inputs[0], inputs[1]
    axis = _axis(attrs.get("axis", -1), x.dim())
    out_dtype = x.dtype
    if attrs.get("stash_type", 1) == 1 and x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    dims = tuple(range(axis, x.dim()))
    y = x * torch.rsqrt(x.square().mean(dims, keepdim=True) + attrs.get("epsilon", 1e-5))
    return (y * scale.to(y.dtype)).to(out_dtype)


@register("LpNormalization")
def lp_normalization(inputs, attrs, ctx):
    """x / ||x||_p along `axis` (p 1 or 2); a zero norm gives 0, as onnxruntime (its slice is all zeros). A
    retrieval model's L2-normalised embedding: without it such a model was refit, never retrained (sweep 20)."""
    x = inputs[0]
    p = int(attrs.get("p", 2))
    if p not in (1, 2):
        raise ValueError(f"LpNormalization p={p}: ONNX defines p 1 and 2 only")
    norm = torch.linalg.vector_norm(x, p, dim=_axis(attrs.get("axis", -1), x.dim()), keepdim=True)
    return x / torch.where(norm == 0, torch.ones_like(norm), norm)


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


def _group_norm(inputs, attrs, per_channel: bool):
    """Normalise each of `num_groups` groups of consecutive channels over its channels and positions, then
    scale and shift: per group at opset 18 (scale, bias [num_groups], each group's value for all its channels),
    per channel from opset 21 (scale, bias [C]; stash_type 1 computes in float32)."""
    x, scale, bias = inputs[0], inputs[1], inputs[2]
    groups = int(attrs["num_groups"])
    eps = attrs.get("epsilon", 1e-5)
    out_dtype = x.dtype
    if attrs.get("stash_type", 1) == 1 and x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    n, c = x.shape[0], x.shape[1]
    if c % groups:
        raise ValueError(f"GroupNormalization: {c} channels do not split into num_groups={groups}")
    g = x.reshape(n, groups, -1)
    mu = g.mean(-1, keepdim=True)
    y = ((g - mu) * torch.rsqrt((g - mu).square().mean(-1, keepdim=True) + eps)).reshape(x.shape)
    if not per_channel:  # opset 18: one value per group, repeated over its c / groups channels
        scale, bias = scale.repeat_interleave(c // groups), bias.repeat_interleave(c // groups)
    shape = (1, c) + (1,) * (x.dim() - 2)
    return (y * scale.to(y.dtype).reshape(shape) + bias.to(y.dtype).reshape(shape)).to(out_dtype)


@register("GroupNormalization", since_opset=18)
def group_norm_18(inputs, attrs, ctx):
    """torch's dynamo exporter writes nn.GroupNorm as GroupNormalization from opset 18 (the 2 nodes of sweep 23's
    opset-21 net kept it from retraining: "the torch bridge cannot run 2 node(s)")."""
    return _group_norm(inputs, attrs, per_channel=False)


@register("GroupNormalization", since_opset=21)
def group_norm_21(inputs, attrs, ctx):
    return _group_norm(inputs, attrs, per_channel=True)


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
# Losses (opset 12): a training export's loss output (sweep 49's L4: a classifier exported with its
# SoftmaxCrossEntropyLoss could only be refit, never retrained, though --metric left the loss out)
# --------------------------------------------------------------------------------------------------------------

_REDUCTIONS = ("mean", "sum", "none")


def _check_loss(attrs, ctx):
    reduction = attrs.get("reduction", "mean")
    return None if reduction in _REDUCTIONS else f"reduction '{reduction}' is not one of {', '.join(_REDUCTIONS)}"


def _nll(log_prob: Tensor, target: Tensor, weight: Optional[Tensor], attrs) -> Tensor:
    """ONNX's NegativeLogLikelihoodLoss as torch's nll_loss: input [N, C, d1, ...], target [N, d1, ...]; without
    ignore_index every target is a class (the spec's), so torch's default -100 never matches one."""
    return F.nll_loss(log_prob, target.long(), weight=weight, ignore_index=int(attrs.get("ignore_index", -100)),
                      reduction=attrs.get("reduction", "mean"))


@register("NegativeLogLikelihoodLoss", since_opset=12, check=_check_loss)
def negative_log_likelihood_loss(inputs, attrs, ctx):
    return _nll(inputs[0], inputs[1], _opt(inputs, 2), attrs)


@register("SoftmaxCrossEntropyLoss", since_opset=12, check=_check_loss)
def softmax_cross_entropy_loss(inputs, attrs, ctx):
    """loss and, as a second output, log_prob = log_softmax(scores) over the classes (axis 1)."""
    log_prob = torch.log_softmax(inputs[0], 1)
    loss = _nll(log_prob, inputs[1], _opt(inputs, 2), attrs)
    return [loss, log_prob] if ctx.n_outputs > 1 else loss


# --------------------------------------------------------------------------------------------------------------
# Attention (opset 23; 24 adds nonpad_kv_seqlen)
# --------------------------------------------------------------------------------------------------------------


def _check_attention(attrs, ctx):
    mode = attrs.get("qk_matmul_output_mode", 0)
    if mode not in (0, 1, 2, 3):
        return f"Attention qk_matmul_output_mode={mode} is not defined (0, 1, 2 or 3)"
    window = {k: attrs[k] for k in ("left_window_size", "right_window_size") if attrs.get(k, -1) >= 0}
    if window:  # opset 25's sliding window: the 24 implementation would silently attend everywhere
        return f"sliding-window Attention ({', '.join(f'{k}={v}' for k, v in window.items())}) is not supported"
    heads = [k for k in ("q_num_heads", "kv_num_heads") if k in attrs]
    if len(heads) == 1:
        return f"Attention with {heads[0]} alone: 3-D inputs need both q_num_heads and kv_num_heads"
    if heads and attrs["q_num_heads"] % attrs["kv_num_heads"]:
        return (f"Attention q_num_heads={attrs['q_num_heads']} is not a multiple of "
                f"kv_num_heads={attrs['kv_num_heads']}")
    return None


def _additive(allowed: Tensor, like: Tensor) -> Tensor:
    """0 where allowed, -inf elsewhere, in like's dtype."""
    return torch.zeros(allowed.shape, dtype=like.dtype, device=like.device).masked_fill(~allowed, -math.inf)


@register("Attention", since_opset=23, check=_check_attention)
def attention(inputs, attrs, ctx):
    """softmax(softcap(Q K^T * scale) + mask [+ causal]) V over [B, H, S, D] (3-D [B, S, H*D] split by
    q_num_heads/kv_num_heads), KV heads repeated for grouped-query attention, past_key/past_value prepended;
    outputs Y, present_key, present_value, qk_matmul_output (mode 0 before softcap, 1 after, 2 with the mask, 3 the
    probabilities). A fully-masked row gives zeros, as the spec and onnxruntime. torch dynamo writes it for
    scaled_dot_product_attention at opset 23; without it a transformer could only be refit."""
    q, k, v = inputs[:3]
    mask, past_k, past_v, nonpad = (_opt(inputs, i) for i in range(3, 7))
    if (past_k is None) != (past_v is None):
        raise ValueError("past_key and past_value must be given together")
    if nonpad is not None and past_k is not None:
        raise ValueError("nonpad_kv_seqlen marks an external cache; it cannot be given with past_key/past_value "
                         "(give one or the other)")
    three_d = q.dim() == 3
    if three_d:
        if "q_num_heads" not in attrs:
            raise ValueError("3-D Q/K/V need the q_num_heads and kv_num_heads attributes")
        q = q.unflatten(-1, (attrs["q_num_heads"], -1)).transpose(1, 2)
        k = k.unflatten(-1, (attrs["kv_num_heads"], -1)).transpose(1, 2)
        v = v.unflatten(-1, (attrs["kv_num_heads"], -1)).transpose(1, 2)
    if past_k is not None:
        k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
    present_k, present_v = k, v
    n_q, n_kv, s_q, s_kv = q.shape[1], k.shape[1], q.shape[2], k.shape[2]
    if n_q != n_kv:
        k, v = k.repeat_interleave(n_q // n_kv, 1), v.repeat_interleave(n_q // n_kv, 1)
    root = math.sqrt(attrs.get("scale", 1.0 / math.sqrt(q.shape[-1])))  # Q and K each scaled by sqrt(scale)
    scores = torch.matmul(q * root, (k * root).transpose(-1, -2))
    raw, softcap = scores, attrs.get("softcap", 0.0)
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    bias = []  # additive, each broadcast right-aligned to [B, H, S_q, S_kv]
    if mask is not None:
        if mask.shape[-1] < s_kv:  # a short mask's missing keys are masked out
            mask = F.pad(mask, (0, s_kv - mask.shape[-1]), value=False if mask.dtype == torch.bool else -math.inf)
        bias.append(_additive(mask, q) if mask.dtype == torch.bool else mask.to(q.dtype))
    keys = torch.arange(s_kv, device=q.device)
    if attrs.get("is_causal", 0):  # bottom-right: query i sees key j <= i + offset (the keys before the block)
        offset = (past_k.shape[2] if past_k is not None else 0) if nonpad is None else \
            nonpad.reshape(-1, 1, 1, 1) - s_q
        allowed = keys <= torch.arange(s_q, device=q.device).unsqueeze(-1) + offset
        bias.append(_additive(allowed, q))
    if nonpad is not None:
        valid = keys < nonpad.reshape(-1, 1, 1, 1)
        bias.append(_additive(valid, q))
    total = None
    for b in bias:
        total = b if total is None else total + b
    logits = scores if total is None else scores + total
    precision = attrs.get("softmax_precision")
    probs_dtype = ctx.dtype(precision) if precision is not None else logits.dtype
    # a row no key may attend (all -inf bias) gives zero probabilities; softmax it as zeros so neither the values
    # nor the gradient see the NaN of exp(-inf - -inf)
    dead = None if total is None else torch.isneginf(total).all(-1, keepdim=True)
    probs = torch.softmax((logits if dead is None else logits.masked_fill(dead, 0.0)).to(probs_dtype), -1)
    if dead is not None:
        probs = probs.masked_fill(dead, 0.0)
    y = torch.matmul(probs.to(v.dtype), v)
    if three_d:
        y = y.transpose(1, 2).flatten(2)
    mode = attrs.get("qk_matmul_output_mode", 0)
    qk = (raw, scores, logits, probs)[mode].to(q.dtype)
    return [y, present_k, present_v, qk][: ctx.n_outputs]


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


@register("STFT", since_opset=17, static_inputs=(1, 3))
def stft(inputs, attrs, ctx):
    """ONNX STFT (opset 17): signal [B, L, 1] or [B, L] (real) or [B, L, 2] (complex), frame_step, window [frame_length] and
    frame_length both optional -> [B, frames, bins, 2], frames = 1 + (L - frame_length) // frame_step, bins =
    frame_length // 2 + 1 when `onesided` (default) else frame_length. Each frame times the window, then its DFT
    (exp(-2 pi i k n / N), unnormalized, as torch.fft): torch.stft's centring and padding conventions are not the
    ONNX op's, so the frames are cut with unfold. torch legacy and dynamo export `torch.stft(..., center=False)`
    as this op (sweep 28's F: the bridge had none, so only the layer-wise refit could recover it)."""
    signal = inputs[0]
    step = int(_static(inputs, 1, ctx)[0])
    window = _opt(inputs, 2)
    given = _static(inputs, 3, ctx)
    length = int(given[0]) if given else int(window.shape[0])
    if signal.dim() == 2:  # [B, L]: a real signal without its last axis (torch's export; onnxruntime runs it)
        x = signal
    else:
        x = torch.view_as_complex(signal.contiguous()) if signal.shape[-1] == 2 else signal[..., 0]
    frames = x.unfold(1, length, step)  # [B, frames, frame_length]
    if window is not None:
        frames = frames * window
    onesided = attrs.get("onesided", 1) and not x.is_complex()
    spec = torch.fft.rfft(frames, dim=-1) if onesided else torch.fft.fft(frames, dim=-1)
    return torch.view_as_real(spec).to(signal.dtype)


def _dft(inputs, attrs, ctx, axis: int):
    """ONNX DFT on `axis` of input [..., 1] (real) or [..., 2] (complex) -> [..., 2]: dft_length (input 1) pads or
    cuts the signal; `inverse` divides by the length (as torch.fft.ifft); `onesided` keeps the first length // 2 + 1
    bins. torch dynamo exports `torch.fft.rfft` as this op (sweep 28's H)."""
    x = inputs[0]
    c = torch.view_as_complex(x.contiguous()) if x.shape[-1] == 2 else x[..., 0]
    axis = axis if axis >= 0 else x.dim() + axis  # an axis of the input, its last (real/imaginary) one excluded
    given = _static(inputs, 1, ctx)
    n = int(given[0]) if given else int(c.shape[axis])
    if attrs.get("inverse", 0):
        y = torch.fft.ifft(c, n=n, dim=axis)
    elif not c.is_complex() and attrs.get("onesided", 0):
        y = torch.fft.rfft(c, n=n, dim=axis)
    else:
        y = torch.fft.fft(c, n=n, dim=axis)
    if attrs.get("onesided", 0) and y.shape[axis] > n // 2 + 1:
        y = y.narrow(axis, 0, n // 2 + 1)
    return torch.view_as_real(y.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)).to(x.dtype)


@register("DFT", since_opset=17, static_inputs=(1,))
def dft17(inputs, attrs, ctx):
    return _dft(inputs, attrs, ctx, int(attrs.get("axis", 1)))


@register("DFT", since_opset=20, static_inputs=(1, 2))
def dft20(inputs, attrs, ctx):
    given = _static(inputs, 2, ctx)
    return _dft(inputs, attrs, ctx, int(given[0]) if given else -2)


# --------------------------------------------------------------------------------------------------------------
# Classic normalisations and Lp pooling (AlexNet/GoogLeNet-era exports, Caffe2 and MXNet converters)
# --------------------------------------------------------------------------------------------------------------


@register("LRN")
def lrn(inputs, attrs, ctx):
    """x / (bias + alpha / size * sum of x^2 over `size` channels around c)^beta, the window floor((size - 1) / 2)
    channels before c and ceil((size - 1) / 2) after (torch's local_response_norm puts the larger half first, so an
    even size differs: summed here)."""
    x = inputs[0]
    size = int(attrs["size"])
    alpha, beta, bias = attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = F.pad(x.square(), (0, 0) * (x.dim() - 2) + (before, after))
    channels = x.shape[1]
    window = sum(sq[:, i:i + channels] for i in range(size))
    return x / (bias + alpha / size * window).pow(beta)


@register("MeanVarianceNormalization")
def mean_variance_normalization(inputs, attrs, ctx):
    """(x - mean) / sqrt(variance) over `axes` (default [0, 2, 3]), the variance E[x^2] - E[x]^2, as onnxruntime
    computes it (its epsilon, 1e-9, under the root)."""
    x = inputs[0]
    axes = tuple(_axis(a, x.dim()) for a in attrs.get("axes", [0, 2, 3]))
    mean = x.mean(axes, keepdim=True)
    var = x.square().mean(axes, keepdim=True) - mean.square()
    return (x - mean) / torch.sqrt(var + 1e-9)


def _lp(x: Tensor, p: int) -> Tensor:
    return x.abs().pow(p) if p != 2 else x.square()


@register("LpPool", check=_check_rank(_AVG_POOL))
def lp_pool(inputs, attrs, ctx):
    """(sum over the window of |x|^p)^(1/p), zero padding (pads, auto_pad, ceil_mode and dilations as the other
    pools read them)."""
    x = inputs[0]
    p = int(attrs.get("p", 2))
    kernel, strides, dilations, begin, end = _pool_geometry(x, attrs)
    if any(d != 1 for d in dilations):
        raise ValueError("LpPool with dilations is not supported")
    ends = _explicit_end_pads(x, kernel, strides, dilations, begin, end, attrs.get("ceil_mode", 0))
    return _sum_pool(F.pad(_lp(x, p), _torch_pad(begin, ends)), list(kernel), list(strides)).pow(1.0 / p)


@register("GlobalLpPool")
def global_lp_pool(inputs, attrs, ctx):
    x = inputs[0]
    p = int(attrs.get("p", 2))
    return _lp(x, p).sum(tuple(range(2, x.dim())), keepdim=True).pow(1.0 / p)


# --------------------------------------------------------------------------------------------------------------
# Window functions (an audio front end's STFT window, when the exporter did not fold it into a constant)
# --------------------------------------------------------------------------------------------------------------


def _window(coefficients):
    def op(inputs, attrs, ctx):
        size = int(_static(inputs, 0, ctx)[0])
        span = size if attrs.get("periodic", 1) else size - 1
        n = torch.arange(size, dtype=torch.float64)
        phase = 2 * math.pi * n / max(span, 1)
        w = sum(c * torch.cos(k * phase) for k, c in enumerate(coefficients))
        return w.to(ONNX_TO_TORCH[attrs.get("output_datatype", TensorProto.FLOAT)])

    return op


register("HannWindow", since_opset=17, static_inputs=(0,))(_window((0.5, -0.5)))
register("HammingWindow", since_opset=17, static_inputs=(0,))(_window((25 / 46, -21 / 46)))  # the spec's alpha, beta
register("BlackmanWindow", since_opset=17, static_inputs=(0,))(_window((0.42, -0.5, 0.08)))


@register("MelWeightMatrix", since_opset=17, static_inputs=(0, 1, 2, 3, 4))
def mel_weight_matrix(inputs, attrs, ctx):
    """[dft_length // 2 + 1, num_mel_bins] triangular mel filters, as onnx's reference and onnxruntime compute them
    (bin edges floored to whole DFT bins); a constant of its inputs."""
    bins, dft, rate = (int(_static(inputs, i, ctx)[0]) for i in range(3))
    low, high = (float(_static(inputs, i, ctx)[0]) for i in (3, 4))
    lo, hi = (2595 * np.log1p(hz / 700) / np.log(10) for hz in (low, high))
    edges = np.arange(bins + 2) * ((hi - lo) / (bins + 2)) + lo
    edges = (((dft + 1) * (700 * np.expm1(edges / 2595 * np.log(10)))) // rate).astype(int)
    out = np.zeros((dft // 2 + 1, bins))
    for i in range(bins):
        left, centre, right = edges[i:i + 3]
        if centre == left:
            out[centre, i] = 1
        else:
            out[left:centre + 1, i] = (np.arange(left, centre + 1) - left) / (centre - left)
        if right > centre:
            out[centre:right, i] = (right - np.arange(centre, right)) / (right - centre)
    return torch.as_tensor(out).to(ONNX_TO_TORCH[attrs.get("output_datatype", TensorProto.FLOAT)])


# --------------------------------------------------------------------------------------------------------------
# Detector post-processing (no gradient: indices), so that a model exported with it still trains before it
# --------------------------------------------------------------------------------------------------------------


def _corners(b: Tensor, center: int) -> Tensor:
    """[..., 4] boxes as (y1, x1, y2, x2) with y1 <= y2, x1 <= x2 (center_point_box 1: x, y, w, h)."""
    if center:
        x, y, w, h = b.unbind(-1)
        return torch.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], -1)
    y1, x1, y2, x2 = b.unbind(-1)
    return torch.stack([torch.minimum(y1, y2), torch.minimum(x1, x2), torch.maximum(y1, y2), torch.maximum(x1, x2)], -1)


def _iou(box: Tensor, others: Tensor) -> Tensor:
    lo, hi = torch.maximum(box[:2], others[:, :2]), torch.minimum(box[2:], others[:, 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    area = (box[2:] - box[:2]).prod()
    areas = (others[:, 2:] - others[:, :2]).prod(-1)
    union = area + areas - inter
    return torch.where((area > 0) & (areas > 0) & (union > 0), inter / union, torch.zeros_like(inter))


@register("NonMaxSuppression", since_opset=10)
def non_max_suppression(inputs, attrs, ctx):
    """[selected, 3] (batch, class, box) in onnxruntime's order: per batch, per class, greedily by score (stable
    among equal scores), a box suppressed when its IoU with a kept one is over iou_threshold; boxes at or below
    score_threshold never taken; at most max_output_boxes_per_class (0 or absent: none)."""
    boxes, scores = inputs[0].detach(), inputs[1].detach()
    limit, iou_t, score_t = (_opt(inputs, i) for i in (2, 3, 4))
    limit = int(limit.reshape(-1)[0]) if limit is not None and limit.numel() else 0
    iou_t = float(iou_t.reshape(-1)[0]) if iou_t is not None and iou_t.numel() else 0.0
    selected = []
    if limit > 0:
        corners = _corners(boxes.float(), int(attrs.get("center_point_box", 0)))
        for b in range(scores.shape[0]):
            for c in range(scores.shape[1]):
                s = scores[b, c].float()
                candidates = torch.arange(s.shape[0], device=s.device)
                if score_t is not None and score_t.numel():
                    candidates = candidates[s > float(score_t.reshape(-1)[0])]
                order = candidates[torch.argsort(-s[candidates], stable=True)]
                kept = 0
                while order.numel() and kept < limit:
                    i = order[0]
                    selected.append((b, c, int(i)))
                    kept += 1
                    rest = order[1:]
                    order = rest[_iou(corners[b, i], corners[b, rest]) <= iou_t]
    return torch.tensor(selected, dtype=torch.int64, device=boxes.device).reshape(-1, 3)


def _roi_axis(start: Tensor, size: Tensor, bins: int, grid: int, extent: int):
    """One axis of RoiAlign's sampling points for rois sharing a grid: (low, high, weight of low, weight of high),
    each [R, bins * grid], as onnxruntime's kernel computes them (a point past -1 or the extent weighs 0; below 0 it
    is 0; at or past the last pixel it is the last pixel)."""
    step = size / bins
    k = torch.arange(bins * grid, device=start.device, dtype=start.dtype)
    pos = start[:, None] + (k // grid)[None] * step[:, None] + ((k % grid)[None] + 0.5) * (step / grid)[:, None]
    valid = (pos >= -1.0) & (pos <= extent)
    pos = pos.clamp(min=0)
    low = pos.floor().long()
    last = low >= extent - 1
    low = torch.where(last, torch.full_like(low, extent - 1), low)
    high = torch.where(last, low, low + 1)
    frac = torch.where(last, torch.zeros_like(pos), pos - low.to(pos.dtype))
    return low, high, (1 - frac) * valid, frac * valid


@register("RoiAlign", since_opset=10)
def roi_align(inputs, attrs, ctx):
    """Bilinear samples of each roi's bins from its image's feature map, averaged or (onnxruntime's max) the
    largest weighted corner; `half_pixel` (opset 16's default) shifts by half a pixel, `output_half_pixel` (opset
    10's only mode) keeps each roi at least one pixel wide. A sampling_ratio of 0 takes ceil(roi size / bins) points a
    bin per roi: rois of one grid are sampled together. Gradients reach the feature map."""
    x, rois, batch = inputs[0], inputs[1].to(inputs[0].dtype), inputs[2].long()
    oh, ow = int(attrs.get("output_height", 1)), int(attrs.get("output_width", 1))
    ratio, scale = int(attrs.get("sampling_ratio", 0)), float(attrs.get("spatial_scale", 1.0))
    mode = attrs.get("mode", "avg")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    default = "half_pixel" if ctx.opset >= 16 else "output_half_pixel"
    coords = attrs.get("coordinate_transformation_mode", default)
    half = (coords.decode() if isinstance(coords, bytes) else coords) == "half_pixel"
    _, channels, height, width = x.shape
    box = rois * scale - (0.5 if half else 0.0)
    heights, widths = box[:, 3] - box[:, 1], box[:, 2] - box[:, 0]
    if not half:
        heights, widths = heights.clamp(min=1.0), widths.clamp(min=1.0)
    out = x.new_zeros((rois.shape[0], channels, oh, ow))
    if ratio > 0:
        grids = torch.full((rois.shape[0], 2), ratio, dtype=torch.long)
    else:
        grids = torch.stack([torch.ceil(heights / oh), torch.ceil(widths / ow)], 1).detach().long().cpu()
    for gh, gw in {tuple(g) for g in grids.tolist()}:
        pick = ((grids[:, 0] == gh) & (grids[:, 1] == gw)).nonzero().reshape(-1).to(x.device)
        if gh <= 0 or gw <= 0:  # an empty roi: no sample, 0 as onnxruntime
            continue
        ylo, yhi, wylo, wyhi = _roi_axis(box[pick, 1], heights[pick], oh, gh, height)
        xlo, xhi, wxlo, wxhi = _roi_axis(box[pick, 0], widths[pick], ow, gw, width)
        img = batch[pick][:, None, None]
        corners = [x[img, :, yy[:, :, None], xx[:, None, :]] * (wy[:, :, None] * wx[:, None, :])[..., None]
                   for yy, wy in ((ylo, wylo), (yhi, wyhi)) for xx, wx in ((xlo, wxlo), (xhi, wxhi))]
        # [R, oh * gh, ow * gw, C] -> [R, C, oh, gh, ow, gw]
        if mode == "max":
            value = torch.stack(corners).amax(0)
        else:
            value = sum(corners)
        value = value.permute(0, 3, 1, 2).reshape(len(pick), channels, oh, gh, ow, gw)
        value = value.amax((3, 5)) if mode == "max" else value.mean((3, 5))
        out = out.index_copy(0, pick, value)
    return out


@register("MaxUnpool", static_inputs=(2,))
def max_unpool(inputs, attrs, ctx):
    """Y[I[i]] = X[i] over the flat output, as onnxruntime: I are MaxPool's indices (flat over N, C and the spatial
    axes); the output's spatial size is `output_shape` when given, else (in - 1) * stride + kernel - pads (SegNet's
    decoder: torch writes nn.MaxUnpool2d as this op)."""
    x, idx = inputs[0], inputs[1]
    given = _static(inputs, 2, ctx)
    if given is not None:
        shape = [int(d) for d in given]
    else:
        kernel = list(attrs["kernel_shape"])
        nd = len(kernel)
        strides, pads = attrs.get("strides", [1] * nd), attrs.get("pads", [0] * (2 * nd))
        shape = list(x.shape[:2]) + [(n - 1) * s + k - pads[i] - pads[i + nd]
                                     for i, (n, s, k) in enumerate(zip(x.shape[2:], strides, kernel))]
    flat = torch.zeros(math.prod(shape), dtype=x.dtype, device=x.device)
    return flat.scatter(0, idx.reshape(-1).to(torch.int64), x.reshape(-1)).reshape(shape)


@register("RotaryEmbedding", since_opset=23)
def rotary_embedding(inputs, attrs, ctx):
    """Rotates the first rotary_embedding_dim (default: all) of each head's features by the cos/sin caches (indexed
    by position_ids when given), halves or interleaved pairs; input [B, heads, S, D] or [B, S, heads * D] with
    num_heads (the spec's reference, onnx.reference's rotary_embedding)."""
    x, cos, sin, positions = inputs[0], inputs[1], inputs[2], _opt(inputs, 3)
    shape = x.shape
    if x.dim() == 4:
        x = x.transpose(1, 2)  # [B, S, heads, D]
    else:
        heads = int(attrs.get("num_heads", 0))
        if not heads:
            raise ValueError("RotaryEmbedding of a 3-D input needs num_heads")
        x = x.reshape(shape[0], shape[1], heads, shape[2] // heads)
    dim = int(attrs.get("rotary_embedding_dim", 0)) or x.shape[-1]
    rotate, keep = x[..., :dim], x[..., dim:]
    if positions is not None:
        cos, sin = cos[positions.long()], sin[positions.long()]
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    if attrs.get("interleaved", 0):
        x1, x2 = rotate[..., 0::2], rotate[..., 1::2]
    else:
        x1, x2 = rotate.chunk(2, dim=-1)
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    rotated = (torch.stack([real, imag], -1).reshape(rotate.shape) if attrs.get("interleaved", 0)
               else torch.cat([real, imag], -1))
    y = torch.cat([rotated, keep], -1)
    return y.reshape(shape) if len(shape) == 3 else y.transpose(1, 2)


@register("AffineGrid", since_opset=20, static_inputs=(1,))
def affine_grid(inputs, attrs, ctx):
    """A sampling grid [N, H, W, 2] ([N, D, H, W, 3]) from theta [N, 2, 3] ([N, 3, 4]) for GridSample (a spatial
    transformer: torch writes F.affine_grid as this op)."""
    theta, size = inputs[0], [int(d) for d in _static(inputs, 1, ctx)]
    return F.affine_grid(theta, size, align_corners=bool(attrs.get("align_corners", 0)))


@register("Col2Im", since_opset=18, static_inputs=(1, 2))
def col2im(inputs, attrs, ctx):
    """F.fold of [N, C * prod(block), L] into [N, C, *image_shape] (torch writes F.fold as this op)."""
    x = inputs[0]
    image, block = [int(d) for d in _static(inputs, 1, ctx)], [int(d) for d in _static(inputs, 2, ctx)]
    nd = len(image)
    if nd != 2:
        raise ValueError(f"Col2Im of {nd} spatial dims is not supported (2 only, as torch's fold)")
    pads = attrs.get("pads", [0] * 2 * nd)
    if pads[:nd] != pads[nd:]:
        raise ValueError("Col2Im with pads that differ at the two ends is not supported")
    return F.fold(x, image, block, dilation=attrs.get("dilations", [1] * nd), padding=pads[:nd],
                  stride=attrs.get("strides", [1] * nd))
