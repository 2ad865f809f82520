"""Retraining (paper §3.2-3.3): prune → retrain rounds through the torch bridge, on a fixed schedule toward the
targets (`retrain`) or measured round by round against the budget (`budget-search`). Graphs the bridge cannot
run are refit layer by layer instead (the automatic fallback, said in the notes)."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from onnxprune.converter.steps.base import RunState, Step, StepConfig, register_step
from onnxprune.converter.steps.prune import copy_model
from onnxprune.errors import ConfigError, UnsupportedOpError
from onnxprune.passes.apply_masks import ApplyMasks
from onnxprune.passes.base import run_passes
from onnxprune.passes.magnitude import MagnitudePrune
from onnxprune.passes.weights import weight_array

log = logging.getLogger(__name__)


@dataclass
class RetrainConfig(StepConfig):
    iterations: int = 0  # prune → retrain rounds (0 = one-shot)
    epochs: float = 1.0
    final_epochs: float = 0.0
    lr: float = 1e-3
    final_lr: float | None = None
    schedule: str = "cubic"
    loss: str = "auto"
    reg: str = "l2"
    reg_strength: float = 5e-4
    temperature: float = 4.0
    distill_weight: float = 0.5
    label_smoothing: float = 0.0
    train_batch_size: int = 128
    alternate: bool = False
    device: str = "auto"
    threads: int | None = None  # torch and onnxruntime threads (default: 1 on <= 2 cores, else half, at most 4)
    accumulate: int = 1  # micro-batches per optimizer step (gradient accumulation): same gradient, 1/N the memory
    neuron_sparsity: float = 0.0  # share of each layer's neurons to remove whole while retraining
    neuron_layers: dict[str, float] = field(default_factory=dict)  # per-layer overrides of neuron_sparsity
    checkpoint_dir: str | None = None  # a checkpoint per round; per run, not part of a recipe
    resume: bool = False

    def validate(self) -> None:
        if self.iterations < 0:
            raise ConfigError(f"--iterations {self.iterations} must be >= 0 (0 = one-shot, no retraining).")
        if self.resume and not self.checkpoint_dir:
            raise ConfigError("--resume needs the checkpoint folder of the interrupted run (--checkpoint-dir).")
        if self.epochs <= 0 and self.iterations > 0:
            raise ConfigError(f"--epochs {self.epochs} must be > 0 when retraining.")
        if self.lr <= 0:
            raise ConfigError(f"--lr {self.lr} must be > 0.")
        if self.train_batch_size < 1:
            raise ConfigError(f"training batch size {self.train_batch_size} must be >= 1.")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads} must be >= 1.")
        if self.accumulate < 1:
            raise ConfigError(f"--accumulate {self.accumulate} must be >= 1 (micro-batches per optimizer step).")
        if self.neuron_sparsity or self.neuron_layers:
            from onnxprune.passes.neuron_masks import check_shares

            check_shares([self.neuron_sparsity, *self.neuron_layers.values()])
        if self.iterations > 0 and self.device != "cpu":
            from onnxprune.converter.finetune import resolve_device

            resolve_device(self.device)  # 'cuda' without a GPU fails here, before any work

    def trainer_options(self, seed: int) -> dict:
        return {"loss": self.loss, "temperature": self.temperature, "distill_weight": self.distill_weight,
                "label_smoothing": self.label_smoothing, "device": self.device, "seed": seed,
                "accumulate": self.accumulate}


class _Retraining(Step):
    needs = ("original", "inventory", "targets", "data", "scoring")
    gives = ("pruned", "history")

    def __init__(self, config: RetrainConfig, *extra: StepConfig):
        super().__init__(config, *extra)
        self.config = config

    def check(self, state: RunState) -> None:
        if self.config.neuron_layers:  # a mistyped layer name fails now, not after the scan and the first rounds
            from onnxprune.passes.neuron_masks import neuron_map

            neuron_map(state.original, {w.name for w in state.inventory.prunable}).fractions(
                0.0, self.config.neuron_layers)

    def run(self, state: RunState) -> None:
        try:
            state.pruned, state.history = self._with_bridge(state)
            if self.config.neuron_sparsity or self.config.neuron_layers:
                self._unmaskable(state)
        except UnsupportedOpError as exc:
            from onnxprune.converter.auto.recovery import refusal_line

            note = (f"the torch bridge cannot run this graph ({refusal_line(exc)}); "
                    "retrained by layer-wise reconstruction instead")
            if self.config.neuron_sparsity or self.config.neuron_layers:
                note += "; --neuron-sparsity needs the bridge, so no neuron was masked whole (only dead ones go)"
            log.warning(note)
            state.notes.append(note)
            state.prune.masks.clear()
            state.pruned, state.history = _reconstruct(state)
        _record_thresholds(state)

    def _with_bridge(self, state: RunState):
        raise NotImplementedError

    def _unmaskable(self, state: RunState) -> None:
        """Say which layers --neuron-sparsity could not touch, and why (sweep 21's LeViT: 48 of 51 layers kept every
        neuron behind the attention heads' Reshape, and the run said nothing of it)."""
        from onnxprune.passes.neuron_masks import unmaskable_note

        note = unmaskable_note(state.original, set(state.targets))
        if note:
            log.info(note)
            state.notes.append(note)

    def _checkpoints(self, state: RunState):
        if not self.config.checkpoint_dir:
            return None, None
        from onnxprune.converter.checkpoint import Checkpoints, fingerprint
        from onnxprune.converter.plan import recipe_of

        from onnxprune.converter import distributed

        sha = state.loaded.sha256 or hashlib.sha256(state.original.SerializeToString()).hexdigest()
        checkpoints = Checkpoints(self.config.checkpoint_dir, fingerprint(sha, recipe_of(state.config)))
        backend = distributed.current()  # rank 0 reads the checkpoint, every rank resumes from it
        resume = backend.on_main(checkpoints.latest, encode=distributed.encode_checkpoint,
                                 decode=distributed.decode_checkpoint) if self.config.resume else None
        if self.config.resume and resume is None:
            log.warning("nothing to resume in %s; starting from the first round", self.config.checkpoint_dir)
        elif resume is not None:
            log.warning("resuming after round %d from %s", resume["round"], self.config.checkpoint_dir)

        def save(step, trainer, history):
            if backend.is_main:
                checkpoints.save(step, trainer.export(), trainer.masks, history, trainer.state())

        return save, resume

    def _on_batch(self, state: RunState):
        def on_batch(r, rounds, epoch, batch, n_batches, loss, sparsity):
            state.progress(f"retrain round {r}/{rounds}", batch, n_batches,
                           f"epoch {epoch} loss {loss:.4f} sparsity {100 * sparsity:.1f}%")

        return on_batch


@register_step("retrain")
class RetrainStep(_Retraining):
    """Prune → retrain on a fixed schedule toward the targets (masks only shrink), then an optional fine-tune."""

    def _with_bridge(self, state: RunState):
        from onnxprune.converter.schedule import iterative_prune

        c, data = self.config, state.data
        checkpoint, resume = self._checkpoints(state)
        evaluator = _main_only(data.calibration)
        model, masks, history = iterative_prune(
            state.original, state.inventory, state.targets, data.train_reader(batch_size=c.train_batch_size),
            iterations=c.iterations, epochs=c.epochs, lr=c.lr, schedule=c.schedule, final_epochs=c.final_epochs,
            final_lr=c.final_lr, alternate=c.alternate, batch_size=c.train_batch_size,
            neuron_sparsity=c.neuron_sparsity, neuron_layers=c.neuron_layers, eval_fn=evaluator.evaluate,
            progress=self._on_batch(state), checkpoint=checkpoint, resume=resume,
            reg=c.reg, reg_strength=c.reg_strength, scoring=state.scoring, **c.trainer_options(data.config.seed))
        state.prune.masks.update(masks)
        return model, history


@register_step("budget-search")
class BudgetSearchStep(_Retraining):
    """Prune → retrain rounds, each measured on the decision data: keep the sparsest round within the budget."""

    def __init__(self, config: RetrainConfig, budget):
        super().__init__(config, budget)
        self.budget = budget

    def _with_bridge(self, state: RunState):
        from onnxprune.converter.budget import BudgetSearch

        c, data = self.config, state.data
        if (state.allocation or {}).get("kept_input"):  # the decision set cannot certify the budget (allocate)
            return state.original, []
        checkpoint, resume = self._checkpoints(state)
        evaluator = _main_only(data.calibration)
        search = BudgetSearch(state.original, state.inventory, state.targets, c, self.budget.max_loss,
                              data.train_reader(batch_size=c.train_batch_size), evaluator,
                              c.trainer_options(data.config.seed), resume, state.scoring,
                              judge=lambda model: evaluator.judged(model, self.budget.max_loss))
        on_batch = self._on_batch(state)
        for r in range(search.done + 1, c.iterations + 1):
            if search.round(r, on_batch)["fits"] and checkpoint is not None:
                checkpoint(r, search.trainer, search.history)
            if search.finished:
                break
        over = [h for h in search.history if not h.get("fits")]
        if over:  # said, not only in report.json's history (a helper: an undone round was silent)
            worst = max(over, key=lambda h: h["loss_pp"])
            rounds = "round" if len(search.history) == 1 else "rounds"
            state.notes.append(f"{len(over)} of {len(search.history)} retraining {rounds} lost more than --max-loss "
                               f"{self.budget.max_loss:g} on the decision data (its mean, or the decision rule's "
                               f"bound) and {'was' if len(over) == 1 else 'were'}"
                               f" undone (the worst at {100 * worst['overall_density']:.0f}% of the weights: "
                               f"{worst['loss_pp']:.2f} pp); the search backs off a step after each")
        if search.best is None:  # even the gentlest round was over budget: never worse than one-shot
            return self._one_shot_fallback(state), search.history
        state.prune.masks.update(search.best[1])
        return search.best[0], search.history


    def _one_shot_fallback(self, state: RunState):
        """The one-shot model within --max-loss (measured, backed off from the allocation), with a note saying so."""
        from onnxprune.calibration.allocate import fit_to_budget, pruned_model
        from onnxprune.converter.auto.decide import BudgetRule

        sparsities = {n: float(t.sparsity or 0.0) for n, t in state.targets.items()}
        outcome = fit_to_budget(state.original, state.inventory, state.data.calibration, sparsities,
                                self.budget.max_loss, scoring=state.scoring,
                                judge=BudgetRule(state.data.calibration, self.budget.max_loss).fit_judge())
        model = pruned_model(state.original, outcome.sparsities, state.scoring.bind(state.original))
        state.prune.masks.update({n: ~((weight_array(model, n) == 0) & (weight_array(state.original, n) != 0))
                                  for n in outcome.sparsities})
        state.notes.append(f"no retrained round met the --max-loss budget; the best one-shot model within it is "
                           f"kept ({outcome.compression:.1f}x fewer weights, no retraining)")
        return model


def _main_only(evaluator):
    """Under torchrun, rank 0 measures and every rank gets the score (so all follow the same search path)."""
    from onnxprune.converter import distributed

    return distributed.MainOnly(evaluator, distributed.current())


def _reconstruct(state: RunState):
    from onnxprune.converter.reconstruct import ReconstructReport, reconstruct

    t0 = time.perf_counter()
    model = copy_model(state.original)
    run_passes([MagnitudePrune(state.inventory, state.targets, state.scoring), ApplyMasks()], model, state.prune)
    report = ReconstructReport()
    model = reconstruct(model, state.original, state.prune.masks, state.data.train_reader(), report=report)
    score = state.data.calibration.evaluate(model)
    masks = state.prune.masks
    state.notes.extend(f"reconstruct left '{name}' as pruned: {why}" for name, why in report.skipped.items())
    return model, [{"round": 1, "phase": "reconstruct", "metric": score, "layers": report.refit,
                    "overall_density": sum(int(m.sum()) for m in masks.values())
                    / max(1, sum(m.size for m in masks.values())),
                    "seconds": round(time.perf_counter() - t0, 3)}]


def _record_thresholds(state: RunState) -> None:
    """After retraining, the effective threshold of a layer is its smallest surviving magnitude."""
    for name, mask in state.prune.masks.items():
        if mask.any() and not mask.all():
            values = weight_array(state.pruned, name)[mask].astype(np.float64)
            state.prune.thresholds[name] = float(np.min(np.abs(values)))
