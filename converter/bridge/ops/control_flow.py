"""Control flow: If and Loop, their bodies run by the module as small programs (converter/bridge/module.py `Body`).

The module compiles every graph attribute into a ``Body`` before the first run and hands it to the op through
``attrs`` (``then_branch``/``else_branch``, ``body``). A body may read names of the enclosing scopes: the module
appends those values to the node's inputs, so ``inputs`` is the node's own ONNX inputs followed by the outer
values, in the order of ``Body.outer``; ``attrs["_inputs"]`` is the number of the node's own inputs.

* If: runs one branch, chosen by the (scalar) condition at run time; gradients flow through the branch taken.
* Loop: bounded loops only (a trip count M is required; the condition may end it earlier). Loop-carried values
  are threaded through the iterations; scan outputs are stacked along a new first axis, as the spec says.
* Optional, OptionalGetElement, OptionalHasElement: a present optional is its tensor (an empty one is refused).
Scan is not implemented.
"""

from __future__ import annotations

import torch

from .core import _opt, register


def _outer(inputs: list, attrs: dict) -> list:
    return inputs[attrs["_inputs"]:]


@register("If")
def if_(inputs, attrs, ctx):
    cond = bool(inputs[0].reshape(-1)[0].item())
    branch = attrs["then_branch"] if cond else attrs["else_branch"]
    return branch.run(_outer(inputs, attrs), [])


def _check_loop(attrs, ctx):
    names = attrs.get("_input_names", [])
    if not names or not names[0]:
        return ("control flow: a Loop without a trip count M is not supported (only bounded loops); "
                "export the model with a fixed number of iterations")
    return None


@register("Loop", check=_check_loop)
def loop(inputs, attrs, ctx):
    """Inputs M, cond, v_initial…; body (iter_num, cond, v…) -> (cond, v…, scan outputs…)."""
    own = inputs[:attrs["_inputs"]]
    trip = int(own[0].reshape(-1)[0].item())
    cond = _opt(own, 1)
    carried = list(own[2:])
    body = attrs["body"]
    outer = _outer(inputs, attrs)
    n_carried = len(carried)
    scans: list[list] = []
    keep_going = True if cond is None else bool(cond.reshape(-1)[0].item())
    i = 0
    device = own[0].device
    while i < trip and keep_going:
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


def _empty_scan(body, index: int, device) -> torch.Tensor:
    """A scan output of a loop that ran zero times: [0, *declared element dims], unknown dims 0 (as onnxruntime)."""
    return torch.zeros((0, *body.output_dims(index)), dtype=body.output_dtype(index), device=device)


# ---- Optional: a present value is its tensor (the data feeds an optional input as its array) -------------------

@register("Optional", since_opset=15)
def optional(inputs, attrs, ctx):
    if not inputs or inputs[0] is None:  # fails as the node, by name (the bridge's run says which)
        raise ValueError("an empty Optional (no input) is not supported; only a present value is")
    return inputs[0]


@register("OptionalGetElement", since_opset=15)
def optional_get_element(inputs, attrs, ctx):
    return inputs[0]


@register("OptionalHasElement", since_opset=15)
def optional_has_element(inputs, attrs, ctx):
    return torch.tensor(len(inputs) > 0 and inputs[0] is not None)
