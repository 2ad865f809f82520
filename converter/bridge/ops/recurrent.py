"""Recurrent ops: LSTM, GRU, RNN, weights kept in their ONNX layout."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .core import Tensor, _opt, register

# --------------------------------------------------------------------------------------------------------------
# Recurrent: LSTM, GRU, RNN. Weights stay in ONNX layout; gates are sliced from them on the fly,
# so gradients reach the ONNX-layout parameters.
# --------------------------------------------------------------------------------------------------------------

_RNN_ACTIVATIONS = {
    "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Relu": torch.relu, "Softsign": F.softsign,
    "Softplus": F.softplus,
}
_RNN_DEFAULTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"],
                 "DynamicQuantizeLSTM": ["Sigmoid", "Tanh", "Tanh"]}


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


def _dequantized(q: Tensor, scale: Tensor, zp: Optional[Tensor]) -> Tensor:
    """DynamicQuantizeLSTM's W or R [dirs, rows, 4H] as float in ONNX's LSTM layout [dirs, 4H, rows]: a scale (and
    zero point) per direction [dirs] or per direction and gate column [dirs, 4H]."""
    q = q if q.is_floating_point() else q.to(torch.float32)
    shape = [q.shape[0], 1, -1 if scale.dim() == 2 else 1]
    if zp is not None:
        q = q - zp.to(q.dtype).reshape(shape)
    return (q * scale.to(q.dtype).reshape(shape)).transpose(1, 2)


@register("DynamicQuantizeLSTM", domain="com.microsoft", check=_check_rnn)
def dynamic_quantize_lstm(inputs, attrs, ctx):
    """onnxruntime's int8 LSTM as a float LSTM of its dequantized weights. onnxruntime also quantizes the input and
    the hidden state at every step, which this does not: close to its outputs, not equal (retraining's gradients
    need no more; every figure of a run is onnxruntime's)."""
    w = _dequantized(inputs[1], inputs[8], _opt(inputs, 9))
    r = _dequantized(inputs[2], inputs[10], _opt(inputs, 11))
    return lstm([inputs[0], w, r] + [_opt(inputs, k) for k in range(3, 8)], attrs, ctx)
