"""Sequences of tensors: a sequence value is a Python list of tensors (an op returns it as its one output, `(seq,)`).

A graph input of type seq(tensor) arrives as its elements stacked on axis 0 (the data's layout, calibration/
value_types.py) and the module unbinds it into that list (module.OnnxModule._feeds). Positions may be negative, as
the spec allows; gradients flow through every op (lists hold the tensors themselves).
"""

from __future__ import annotations

import torch

from .core import _axis, _opt, register


def _position(p, length: int, *, insert: bool = False) -> int:
    p = int(p.reshape(-1)[0].item()) if isinstance(p, torch.Tensor) else int(p)
    p = p + length if p < 0 else p
    if not 0 <= p <= (length if insert else length - 1):
        raise ValueError(f"position {p} is outside a sequence of {length} tensor(s)")
    return p


@register("SequenceConstruct", since_opset=11)
def sequence_construct(inputs, attrs, ctx):
    return (list(inputs),)


@register("SequenceEmpty", since_opset=11)
def sequence_empty(inputs, attrs, ctx):
    return ([],)


@register("SequenceAt", since_opset=11)
def sequence_at(inputs, attrs, ctx):
    seq = inputs[0]
    return seq[_position(inputs[1], len(seq))]


@register("SequenceLength", since_opset=11)
def sequence_length(inputs, attrs, ctx):
    return torch.tensor(len(inputs[0]), dtype=torch.int64)


@register("SequenceInsert", since_opset=11)
def sequence_insert(inputs, attrs, ctx):
    seq, tensor, where = list(inputs[0]), inputs[1], _opt(inputs, 2)
    seq.insert(len(seq) if where is None else _position(where, len(seq), insert=True), tensor)
    return (seq,)


@register("SequenceErase", since_opset=11)
def sequence_erase(inputs, attrs, ctx):
    seq, where = list(inputs[0]), _opt(inputs, 1)
    del seq[len(seq) - 1 if where is None else _position(where, len(seq))]
    return (seq,)


@register("ConcatFromSequence", since_opset=11)
def concat_from_sequence(inputs, attrs, ctx):
    seq = inputs[0]
    if attrs.get("new_axis", 0):
        return torch.stack(seq, dim=_axis(attrs["axis"], seq[0].dim() + 1))
    return torch.cat(seq, dim=_axis(attrs["axis"], seq[0].dim()))


@register("SplitToSequence", since_opset=11)
def split_to_sequence(inputs, attrs, ctx):
    x, split = inputs[0], _opt(inputs, 1)
    axis = _axis(attrs.get("axis", 0), x.dim())
    if split is None:
        parts = torch.split(x, 1, dim=axis)
        if not attrs.get("keepdims", 1):
            parts = [p.squeeze(axis) for p in parts]
        return (list(parts),)
    sizes = split.reshape(-1).tolist() if split.dim() else int(split.item())
    return (list(torch.split(x, sizes, dim=axis)),)
