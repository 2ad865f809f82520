"""Control flow: If, Loop and Scan, their bodies run by the module as small programs (converter/bridge/module.py `Body`).

The module compiles every graph attribute into a ``Body`` before the first run and hands it to the op through
``attrs`` (``then_branch``/``else_branch``, ``body``). A body may read names of the enclosing scopes: the module
appends those values to the node's inputs, so ``inputs`` is the node's own ONNX inputs followed by the outer
values, in the order of ``Body.outer``; ``attrs["_inputs"]`` is the number of the node's own inputs.

* If: runs one branch, chosen by the (scalar) condition at run time; gradients flow through the branch taken.
* Loop: a trip count M, a condition, or both (a for loop, a while loop: torch's `while_loop` exported by dynamo
  has no M, only the condition its body computes); neither, a loop the spec runs forever, is refused. Loop-carried
  values are threaded through the iterations; scan outputs are stacked along a new first axis, as the spec says.
  A loop its condition alone ends (no M, as torch's and tf2onnx's while loops, or an M above WHILE_CAP such as
  INT64_MAX) stops with an error naming it after WHILE_CAP iterations: weights trained so that its condition never
  ends it would hang training.
* Optional, OptionalGetElement, OptionalHasElement: a present optional is its tensor (an empty one is refused).
* Scan (opset 9 on): states threaded through the steps, inputs and outputs scanned along their own axes and
  directions (opset 8's Scan, with its batch axis and sequence_lens, is not implemented).
"""

from __future__ import annotations

import torch

from onnxprune.errors import ConverterError

from .core import _axis, _opt, register

WHILE_CAP = 10_000  # iterations of a loop its condition alone ends (a weight-tied model's few, a decoder's length)


def _outer(inputs: list, attrs: dict) -> list:
    return inputs[attrs["_inputs"]:]


@register("If")
def if_(inputs, attrs, ctx):
    cond = bool(inputs[0].reshape(-1)[0].item())
    branch = attrs["then_branch"] if cond else attrs["else_branch"]
    return branch.run(_outer(inputs, attrs), [])


def _check_loop(attrs, ctx):
    names = attrs.get("_input_names", [])
    if not names or (not names[0] and (len(names) < 2 or not names[1])):
        return ("control flow: a Loop with neither a trip count M nor a condition never ends; export it with a "
                "trip count")
    return None


@register("Loop", check=_check_loop)
def loop(inputs, attrs, ctx):
    """Inputs M, cond, v_initial…; body (iter_num, cond, v…) -> (cond, v…, scan outputs…). Without M the condition
    alone ends it (a while loop: sweep 55b, torch's `while_loop` of 4 weight-tied steps exported by dynamo)."""
    own = inputs[:attrs["_inputs"]]
    trip = float("inf") if own[0] is None else int(own[0].reshape(-1)[0].item())
    cond = _opt(own, 1)
    carried = list(own[2:])
    body = attrs["body"]
    outer = _outer(inputs, attrs)
    n_carried = len(carried)
    scans: list[list] = []
    keep_going = True if cond is None else bool(cond.reshape(-1)[0].item())
    i = 0
    device = next(t.device for t in own if t is not None)
    while i < trip and keep_going:
        if i == WHILE_CAP and cond is not None:
            _never_ended(ctx, own[0])
        iter_num = torch.tensor(i, dtype=torch.int64, device=device)
        flag = torch.tensor(keep_going, device=device)
        outs = body.run(outer, [iter_num, flag, *carried])
        keep_going = bool(outs[0].reshape(-1)[0].item())  # the body's condition output, as the reference does
        carried = list(outs[1:1 + n_carried])
        for k, s in enumerate(outs[1 + n_carried:]):
            if len(scans) <= k:
                scans.append([])
            scans[k].append(s)
        i += 1
    n_scan = ctx.n_outputs - n_carried
    stacked = [torch.stack(s) for s in scans]
    stacked += [_empty_scan(body, 1 + n_carried + k, device) for k in range(len(stacked), n_scan)]
    return carried + stacked


def _never_ended(ctx, m) -> None:
    said = "no trip count M" if m is None else f"trip count M {int(m.reshape(-1)[0].item())}"
    raise ConverterError(f"Loop '{ctx.name}' ran {WHILE_CAP} iterations in the torch bridge without its condition "
                         f"ending it ({said}); stopped there, as training would never end (trained weights may keep "
                         f"its condition true); export the model with a trip count M of at most {WHILE_CAP}")


def _empty_scan(body, index: int, device) -> torch.Tensor:
    """A scan output of a loop that ran zero times: [0, *declared element dims], unknown dims 0 (as onnxruntime)."""
    return torch.zeros((0, *body.output_dims(index)), dtype=body.output_dtype(index), device=device)


# ---- Optional: a present value is its tensor (the data feeds an optional input as its array), an empty one None --
# (an optional input --data leaves out is such an empty Optional in the model a run works on: modelio.run_without)

@register("Optional", since_opset=15)
def optional(inputs, attrs, ctx):
    if not inputs or inputs[0] is None:
        return None
    return inputs[0]


@register("OptionalGetElement", since_opset=15)
def optional_get_element(inputs, attrs, ctx):
    return inputs[0]


@register("OptionalHasElement", since_opset=15)
def optional_has_element(inputs, attrs, ctx):
    return torch.tensor(len(inputs) > 0 and inputs[0] is not None)


# ---- Scan (opset 9 on: no batch axis of its own, scan axes and directions per input and output) ---------------

@register("Scan", since_opset=9)
def scan(inputs, attrs, ctx):
    """Inputs: N initial states, then num_scan_inputs tensors scanned along their scan_input_axes (reversed where
    scan_input_directions is 1); body (states..., one slice of each) -> (states..., one element of each scan
    output); the scan outputs stacked along scan_output_axes (reversed where scan_output_directions is 1)."""
    own = inputs[:attrs["_inputs"]]
    outer, body = _outer(inputs, attrs), attrs["body"]
    m = int(attrs["num_scan_inputs"])
    n = len(own) - m
    states, xs = list(own[:n]), list(own[n:])
    in_axes = attrs.get("scan_input_axes", [0] * m)
    in_dirs = attrs.get("scan_input_directions", [0] * m)
    xs = [x.movedim(_axis(a, x.dim()), 0) for x, a in zip(xs, in_axes)]
    xs = [x.flip(0) if d else x for x, d in zip(xs, in_dirs)]
    k = ctx.n_outputs - n
    elements: list[list] = [[] for _ in range(k)]
    for t in range(xs[0].shape[0] if xs else 0):
        outs = body.run(outer, [*states, *(x[t] for x in xs)])
        states = list(outs[:n])
        for j, o in enumerate(outs[n:]):
            elements[j].append(o)
    out_axes = attrs.get("scan_output_axes", [0] * k)
    out_dirs = attrs.get("scan_output_directions", [0] * k)
    stacked = []
    for j in range(k):
        s = torch.stack(elements[j]) if elements[j] else _empty_scan(body, n + j, own[0].device)
        s = s.flip(0) if out_dirs[j] else s
        stacked.append(s.movedim(0, _axis(out_axes[j], s.dim())))
    return states + stacked
