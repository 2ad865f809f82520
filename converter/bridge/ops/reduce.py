"""Reductions, arg-reductions and TopK."""

from __future__ import annotations

import torch

from .core import Tensor, _axis, _static, register

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
