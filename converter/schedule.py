"""Iterative pruning: raise sparsity toward the per-layer targets over N prune → retrain rounds.

The paper's Figure 2 loop ("iterative pruning ... AlexNet 5x → 9x"): each round masks by magnitude from the
*current*, retrained weights (masks only shrink), then retrains the survivors. The per-round sparsity follows a
schedule from the layer's starting sparsity s0 to its target sf, r = 1..N:

    cubic      s_r = sf + (s0 − sf)·(1 − r/N)³           (Zhu & Gupta 2017: big steps early, small steps late)
    geometric  d_r = d0·(df/d0)^(r/N), d = 1 − s          (the paper's repeated "prune by a fixed factor")
    linear     s_r = s0 + (sf − s0)·r/N

After the last round an optional final fine-tune at the target sparsity (cosine learning-rate decay by default)
recovers what the last steps cost. Optional alternation (paper §4): each round retrains the conv layers with the
fc layers frozen, then the fc layers with the conv layers frozen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx

from onnxprune.errors import ConfigError
from onnxprune.converter.finetune import MaskedTrainer
from onnxprune.passes.criteria import MAGNITUDE, Scoring
from onnxprune.passes.magnitude import Target, quality_mask
from onnxprune.passes.neuron_masks import NeuronMap, check_shares, neuron_map, neuron_masks
from onnxprune.passes.weights import Inventory, weight_array

log = logging.getLogger(__name__)

# (round, rounds, epoch, batch, n_batches, loss, sparsity); the final fine-tune is round rounds when present
RoundProgress = Callable[[int, int, int, int, int, float, float], None]

TRAINER_OPTIONS = {"loss", "teacher", "temperature", "label_smoothing", "distill_weight", "dropout_scale",
                   "device", "seed", "module", "accumulate"}
TRAIN_OPTIONS = {"momentum", "reg", "reg_strength", "batch_size", "lr_min"}


def _cubic(s0: float, sf: float, r: int, n: int) -> float:
    return sf + (s0 - sf) * (1.0 - r / n) ** 3


def _geometric(s0: float, sf: float, r: int, n: int) -> float:
    d0, df = 1.0 - s0, 1.0 - sf
    return 1.0 - d0 * (df / d0) ** (r / n) if d0 > 0 else s0


def _linear(s0: float, sf: float, r: int, n: int) -> float:
    return s0 + (sf - s0) * r / n


SCHEDULES: dict[str, Callable[[float, float, int, int], float]] = {
    "cubic": _cubic, "geometric": _geometric, "linear": _linear,
}


def schedule_sparsities(final: dict[str, float], start: dict[str, float], iterations: int,
                        schedule: str = "cubic") -> list[dict[str, float]]:
    """Per-round per-layer sparsity targets; the last round hits `final` exactly and no round goes backwards."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"--schedule '{schedule}' is not one of {', '.join(SCHEDULES)}.")
    if iterations < 1:
        raise ConfigError(f"--iterations {iterations} must be >= 1.")
    rounds = []
    for r in range(1, iterations + 1):
        rounds.append({n: max(start.get(n, 0.0), SCHEDULES[schedule](start.get(n, 0.0), sf, r, iterations))
                       for n, sf in final.items()})
    rounds[-1] = {n: max(start.get(n, 0.0), sf) for n, sf in final.items()}
    return rounds


@dataclass
class Round:
    """What one round did: targets, resulting densities, training loss, metric, time."""

    round: int  # 1..N prune rounds; N+1 = final fine-tune
    phase: str  # "prune" or "final"
    targets: dict[str, float]
    density: dict[str, float]
    overall_density: float
    train_loss: float
    metric: float | None = None
    epochs: float = 0.0
    lr: float = 0.0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"round": self.round, "phase": self.phase, "targets": self.targets, "density": self.density,
                "overall_density": self.overall_density, "train_loss": self.train_loss, "metric": self.metric,
                "epochs": self.epochs, "lr": self.lr, "seconds": round(self.seconds, 3), **self.extra}


def final_sparsity(model: onnx.ModelProto, name: str, target) -> float:
    """A float is a sparsity; a Target with quality q becomes the fraction |w| <= q·std removes now."""
    if isinstance(target, Target):
        if target.sparsity is not None:
            return float(target.sparsity)
        mask, _ = quality_mask(weight_array(model, name), target.quality)
        return 1.0 - float(mask.mean())
    value = float(target)
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"sparsity {value} of '{name}' is outside [0, 1); use e.g. 0.9 to remove 90%.")
    return value


def iterative_prune(model: onnx.ModelProto, inventory: Inventory, final_sparsities: dict, train_reader, *,
                    iterations: int = 5, epochs: float = 1.0, lr: float = 1e-3, schedule: str = "cubic",
                    lr_schedule: str = "constant", final_epochs: float = 0.0, final_lr: float | None = None,
                    final_lr_schedule: str = "cosine", alternate: bool = False,
                    initial_masks: dict[str, np.ndarray] | None = None,
                    eval_fn: Callable[[onnx.ModelProto], float] | None = None,
                    progress: RoundProgress | None = None, checkpoint=None, resume: dict | None = None,
                    neuron_sparsity: float = 0.0, neuron_layers: dict[str, float] | None = None,
                    scoring: Scoring = MAGNITUDE, **options) -> tuple[onnx.ModelProto, dict, list[dict]]:
    """Prune `model` to `final_sparsities` ({weight: sparsity or Target}) over `iterations` prune→retrain rounds.

    Returns (model with the retrained weights written back and masks applied, masks, history: one dict per
    round). `neuron_sparsity` also masks that share of every channel group's neurons whole (`neuron_layers`:
    {layer glob: share} overrides; on the same schedule, before the weight step; see passes.neuron_masks).
    `scoring` (passes.criteria.Scoring) ranks the weights each round: magnitude by default; a data-driven criterion
    is re-scored on each round's retrained model.
    `options` go to the trainer (loss, teacher, temperature, label_smoothing, distill_weight, dropout_scale, device,
    seed, module) and to each training run (momentum, reg, reg_strength, batch_size, lr_min). Distillation without
    a teacher distills from `model` as given (the dense model).
    `checkpoint(step, trainer, history)` is called after every round; `resume` ({round, model, masks, history,
    trainer} from onnxprune.converter.checkpoint) continues an interrupted run and ends where the uninterrupted one would.
    """
    unknown = set(options) - TRAINER_OPTIONS - TRAIN_OPTIONS
    if unknown:
        valid = ", ".join(sorted(TRAINER_OPTIONS | TRAIN_OPTIONS))
        raise ConfigError(f"unknown retraining option(s) {sorted(unknown)}; valid: {valid}.")
    kinds = {w.name: w.kind for w in inventory.prunable}
    missing = [n for n in final_sparsities if n not in kinds]
    if missing:
        raise ConfigError(f"targets name weights that are not prunable: {', '.join(missing[:10])}.")
    final = {n: final_sparsity(model, n, t) for n, t in final_sparsities.items()}
    masks = {n: np.ones(kinds_shape(inventory, n), dtype=bool) for n in final}
    for n, m in (initial_masks or {}).items():
        if n in masks:
            masks[n] = masks[n] & np.asarray(m, dtype=bool)
    start = {n: 1.0 - float(m.mean()) for n, m in masks.items()}
    plan = schedule_sparsities(final, start, iterations, schedule)
    nmap, neuron_plan = neuron_schedule(model, set(final), neuron_sparsity, neuron_layers, iterations, schedule)
    trainer_options = {k: v for k, v in options.items() if k in TRAINER_OPTIONS}
    history: list[dict] = []
    done = 0  # steps already taken: prune rounds 1..N, then the final fine-tune as step N+1
    if resume is not None:  # continue an interrupted run: its weights, masks and shuffling stream
        trainer_options.setdefault("teacher", model)  # distill from the dense model, not from the checkpoint
        model, masks, history, done = resume["model"], resume["masks"], list(resume["history"]), resume["round"]
    trainer = MaskedTrainer(model, masks, train_reader, **trainer_options)
    if resume is not None:
        trainer.restore_state(resume["trainer"])
    train_opts = {k: v for k, v in options.items() if k in TRAIN_OPTIONS}
    rounds = iterations + (1 if final_epochs > 0 else 0)
    for r, targets in enumerate(plan, start=1):
        if r <= done:
            continue
        t0 = time.perf_counter()
        masks, neurons = neurons_step(trainer, nmap, neuron_plan[r - 1])
        trainer.set_masks(round_masks(trainer, scoring, targets, masks))
        loss = _retrain(trainer, kinds, epochs, lr, lr_schedule, alternate, train_opts, _bind(progress, r, rounds))
        history.append(_record(trainer, r, "prune", targets, loss, epochs, lr, eval_fn, t0, neurons).as_dict())
        if checkpoint is not None:
            checkpoint(r, trainer, history)
    if final_epochs > 0 and done < iterations + 1:
        t0 = time.perf_counter()
        flr = lr if final_lr is None else final_lr
        loss = _retrain(trainer, kinds, final_epochs, flr, final_lr_schedule, False, train_opts,
                        _bind(progress, rounds, rounds))
        history.append(_record(trainer, rounds, "final", plan[-1], loss, final_epochs, flr, eval_fn, t0).as_dict())
        if checkpoint is not None:
            checkpoint(iterations + 1, trainer, history)
    return trainer.export(), dict(trainer.masks), history


def neuron_schedule(model: onnx.ModelProto, maskable: set[str], fraction: float, layers: dict[str, float] | None,
                    iterations: int, schedule: str = "cubic") -> tuple[NeuronMap | None, list[list[float]]]:
    """(neuron map, per round the share of each group's neurons to mask whole), rising from 0 to the final share
    on the weights' schedule; (None, zeros) when no neuron is to go."""
    check_shares([fraction, *(layers or {}).values()])
    if fraction <= 0 and not any(v > 0 for v in (layers or {}).values()):
        return None, [[] for _ in range(iterations)]
    nmap = neuron_map(model, maskable)
    final = nmap.fractions(fraction, layers)
    plan = [[SCHEDULES[schedule](0.0, f, r, iterations) for f in final] for r in range(1, iterations)]
    return nmap, plan + [final]


def neurons_step(trainer: MaskedTrainer, nmap: NeuronMap | None, fractions):
    """The trainer's masks with the weakest neurons masked whole; (masks, neurons left per layer)."""
    if nmap is None:
        return trainer.masks, None
    masks, gone = neuron_masks(nmap, trainer.weights(), trainer.masks, fractions)
    return masks, {layer: kept for layer, (kept, _) in nmap.kept(gone).items()}


def kinds_shape(inventory: Inventory, name: str) -> tuple[int, ...]:
    return inventory.by_name()[name].shape


def round_masks(trainer: MaskedTrainer, scoring: Scoring, targets: dict[str, float],
                current: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rank the trainer's current weights by the run's criterion, within the current masks (never regrow).

    Exactly round(s·n) weights are dropped per comparison group (ties broken by position), pruned ones first."""
    scorer = scoring.bind(trainer.export() if scoring.needs_model else None)
    return scorer.masks(trainer.weights(), targets, current)


def _retrain(trainer: MaskedTrainer, kinds: dict[str, str], epochs: float, lr: float, lr_schedule: str,
             alternate: bool, train_opts: dict, progress) -> float:
    if epochs <= 0:
        return float("nan")
    if not alternate or len(set(kinds.values())) < 2:
        return trainer.train(epochs, lr, lr_schedule=lr_schedule, progress=progress, **train_opts).loss
    loss = float("nan")
    for kind in ("conv", "fc"):  # paper §4: retrain one kind with the other frozen
        frozen = {n for n, k in kinds.items() if k != kind}
        loss = trainer.train(epochs / 2, lr, lr_schedule=lr_schedule, freeze=frozen, progress=progress,
                             **train_opts).loss
    return loss


def _bind(progress: RoundProgress | None, r: int, rounds: int):
    if progress is None:
        return None
    return lambda epoch, batch, n, loss, sparsity: progress(r, rounds, epoch, batch, n, loss, sparsity)


def _record(trainer: MaskedTrainer, r: int, phase: str, targets: dict[str, float], loss: float, epochs: float,
            lr: float, eval_fn, t0: float, neurons: dict | None = None) -> Round:
    density = {n: float(m.mean()) for n, m in trainer.masks.items()}
    total = sum(m.size for m in trainer.masks.values())
    overall = sum(int(m.sum()) for m in trainer.masks.values()) / total if total else 1.0
    metric = float(eval_fn(trainer.export())) if eval_fn is not None else None
    rec = Round(r, phase, dict(targets), density, overall, loss, metric, epochs, lr, time.perf_counter() - t0,
                {"neurons": neurons} if neurons else {})
    log.info("round %d (%s): density %.4f, train loss %.4f%s", r, phase, overall, loss,
             "" if metric is None else f", metric {metric:.4f}")
    return rec
