"""Gradient statistics for the OBD and Taylor criteria, through the torch bridge (the only torch in criteria).

    fisher[w] = 1/N Σ_i (∂L_i/∂w)²           per sample i (micro-batches of one): the empirical Fisher diagonal
    taylor[w] = 1/B Σ_b |w · ∂L_b/∂w|         per calibration batch b (Molchanov et al. 2017)

The loss L: with labels, the training objective's cross-entropy (MSE for float targets of the output's shape).
Without labels, the loss whose Hessian at the model is its Fisher: for a classifier output, cross-entropy against a
class drawn from the model's own softmax (seeded); for any other output, ⟨f(x), v⟩ with v a seeded Rademacher
vector, so E[(∂L/∂w)²] = diag(JᵀJ), the Hessian of ½‖f - f_dense‖² at the dense model. (The plain distillation loss
against the dense model has zero gradient there: it would score every weight 0.)

`converter.criteria.calibration_scoring` wires a run's criterion to these statistics (and imports this module only
when a criterion asks for gradients: one-shot magnitude and wanda runs need no torch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from onnxprune.converter.finetune import Objective, compute_dtype, output_kinds
from onnxprune.errors import ConfigError, UnsupportedOpError
from onnxprune.passes.scopes import hoist_body_constants, lift_constants

log = logging.getLogger(__name__)

KINDS = ("fisher", "taylor")
CRITERION = {"fisher": "obd", "taylor": "taylor"}  # the criterion each statistic is for


def gradient_statistics(model: onnx.ModelProto, names: list[str],
                        batches: Callable[[], Iterable[tuple[dict, np.ndarray | None]]], *, kind: str,
                        seed: int = 0, per_feed: bool = False) -> dict[str, np.ndarray]:
    """{weight: fisher or taylor statistic} for every weight the torch bridge can differentiate: initializers, and
    Constant nodes and body constants made initializers on a copy (scopes.lift_constants, hoist_body_constants).
    `per_feed`: each batch is one complete feed (its axis 0 may be time): one sample, never sliced."""
    from onnxprune.converter.bridge import OnnxModule

    if kind not in KINDS:
        raise ConfigError(f"gradient statistic '{kind}' is not one of {', '.join(KINDS)}.")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    model = copy  # weights in If/Loop bodies and in Constant nodes become initializers the bridge differentiates
    hoist_body_constants(model)
    lift_constants(model)
    inits = {t.name for t in model.graph.initializer}
    trainable = [n for n in names if n in inits]
    skipped = sorted(set(names) - set(trainable))
    if skipped:
        log.info("no gradient statistics for weights held in Constant nodes: %s", ", ".join(skipped))
    if not trainable:  # nothing differentiable (IR < 4 keeps Constant nodes): no statistics (the caller says so)
        return {}
    try:
        module = OnnxModule(model, trainable=trainable, dtype=compute_dtype(model, torch.device("cpu")))
    except UnsupportedOpError as exc:  # said for the criterion, not for fine-tuning the user did not ask for
        ops = sorted({f"{op} ({domain})" for domain, op, *_ in getattr(exc, "unsupported", [])})
        raise ConfigError(f"--criterion {CRITERION[kind]} takes gradients through the torch bridge, which cannot run "
                          f"{', '.join(ops) or 'this model'}; use --criterion magnitude or wanda.") from exc
    module.eval()
    params = module.onnx_parameters()
    loss_fn = _Loss(model, module, seed)
    sums = {n: torch.zeros_like(params[n], dtype=torch.float64) for n in trainable}
    count = 0
    for feeds, labels in batches():
        inputs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}
        target = None if labels is None else torch.from_numpy(np.asarray(labels))
        n = 1 if per_feed else len(next(iter(inputs.values())))
        parts = range(n) if kind == "fisher" and not per_feed else [slice(None)]
        for i in parts:
            sl = slice(i, i + 1) if isinstance(i, int) else i
            grads = _grads(module, params, trainable, loss_fn, {k: v[sl] for k, v in inputs.items()},
                           None if target is None else target[sl])
            for name, g in zip(trainable, grads):
                g = g.detach().to(torch.float64)
                sums[name] += g * g if kind == "fisher" else (g * params[name].detach().to(torch.float64)).abs()
            count += 1
    if count == 0:
        raise ConfigError("the calibration data gave no sample for gradient statistics; pass --data with samples.")
    return {n: (s / count).numpy() for n, s in sums.items()}


def _grads(module, params, names, loss_fn, inputs, labels) -> tuple[torch.Tensor, ...]:
    outputs = module(**inputs)
    outputs = tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
    loss = loss_fn(outputs, labels)
    return torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True, materialize_grads=True)


class _Loss:
    """Cross-entropy on labels; label-free, the Fisher-sampling loss of the module docstring."""

    def __init__(self, model: onnx.ModelProto, module, seed: int):
        self.model, self.module = model, module
        self.generator = torch.Generator().manual_seed(seed)
        self.kinds: list[str] | None = None

    def __call__(self, outputs, labels) -> torch.Tensor:
        if self.kinds is None:
            self.kinds = output_kinds(self.model, outputs)
        if labels is not None:
            return Objective("ce", self.kinds)(outputs, labels, None)
        total = 0.0
        for out, kind in zip(outputs, self.kinds):
            if kind == "values":
                v = torch.randint(0, 2, out.shape, generator=self.generator).to(out.dtype) * 2 - 1
                total = total + (out * v).sum() / max(len(out), 1)
                continue
            logits = torch.log(out.clamp_min(1e-12)) if kind == "probs" else out
            logits = logits.reshape(-1, logits.shape[-1])  # classes on the last axis; one draw per position
            with torch.no_grad():
                drawn = torch.multinomial(F.softmax(logits.detach().double(), dim=-1), 1, generator=self.generator)
            total = total + F.cross_entropy(logits, drawn[:, 0])
        return total
