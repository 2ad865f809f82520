"""Budgeted retraining (--max-loss with --iterations): the sparsest retrained model whose measured loss fits.

A round at level L prunes toward the sensitivity allocation with its density scaled by 0.6^L (and, with
--neuron-sparsity, that share of every layer's neurons, ramped over the first NEURON_RAMP levels), retrains and
measures the loss on the calibration evaluator (the validation part of --data when it is split). A round is within
the budget when its mean loss is and, given a `judge`, the decision rule accepts it (converter.auto.decide: every
output's loss plus its margin for the set's noise; the budget check judges the written model by the same rule, so
the search never keeps a round the check would refuse). A round within the budget is kept and the next goes one
step further; a round over it is undone — back to the best model, its masks and weights — and the step halves (1,
1/2, 1/4, then the search stops):

    level  0 ok  →  1 ok  →  2 over  →  1.5 ok  →  2.0 over  →  1.75 …        density x0.6 per level
    level  0 over  →  -0.5 (from the dense model again) ok  →  0 …           gentler than the allocation

(a first round over the budget starts again from the dense model at a gentler level, masks only shrinking
otherwise: the demo's 500 deciding images rejected its first round, 0.40 pp by the mean, once the rule decided).

Every kept round is checkpointed; a resumed run continues from the last one with the same level and step.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import onnx

from onnxprune.calibration.decide import within_budget
from onnxprune.passes.criteria import MAGNITUDE

log = logging.getLogger(__name__)

DENSITY_FACTOR = 0.6  # density x this per level past the one-shot allocation
NEURON_RAMP = 3  # levels over which --neuron-sparsity reaches its value
SMALLEST_STEP = 0.25  # a halved step below this ends the search


class BudgetSearch:
    """The search state: best model so far, its level, the step, the trainer and the history."""

    def __init__(self, original: onnx.ModelProto, inventory, targets: dict, config, max_loss: float, reader,
                 evaluator, trainer_options: dict, resume: dict | None = None, scoring=MAGNITUDE, judge=None):
        from onnxprune.converter.finetune import MaskedTrainer
        from onnxprune.converter.schedule import neuron_schedule

        self.config, self.max_loss, self.reader, self.evaluator = config, max_loss, reader, evaluator
        self.original = original
        self.scoring = scoring  # passes.criteria.Scoring: ranks the weights each round
        self.judge = judge  # model -> (score, the decision rule's verdict dict); None: the mean alone
        self.base = {n: t.sparsity for n, t in targets.items()}
        self.trainer_options = {**trainer_options, "teacher": original}  # always distill from the dense model
        self.nmap, plan = neuron_schedule(original, set(self.base), config.neuron_sparsity, config.neuron_layers, 1)
        self.neuron_final = plan[-1]
        self.ramp = min(NEURON_RAMP, config.iterations)
        self.best: tuple[onnx.ModelProto, dict] | None = None
        self.best_level, self.step, self.level, self.history, self.done = -1.0, 1.0, 0.0, [], 0
        masks = {w.name: np.ones(w.shape, dtype=bool) for w in inventory.prunable if w.name in self.base}
        start = original
        if resume is not None:  # only kept rounds are checkpointed: the last one is the best so far
            start, masks, self.history, self.done = resume["model"], resume["masks"], list(resume["history"]), \
                resume["round"]
            self.best = (resume["model"], {n: m.copy() for n, m in resume["masks"].items()})
            last = self.history[-1]
            self.best_level, self.step = last["level"], last["step"]
            self.level = self.best_level + self.step
        self.trainer = MaskedTrainer(start, masks, reader, **self.trainer_options)
        if resume is not None:
            self.trainer.restore_state(resume["trainer"])

    def round(self, r: int, on_batch) -> dict:
        """Prune to the current level, retrain, measure; keep it or back off. Returns the history entry."""
        from onnxprune.converter.schedule import neurons_step, round_masks

        t0, c, level, trainer = time.perf_counter(), self.config, self.level, self.trainer
        goal = {n: 1.0 - (1.0 - s) * DENSITY_FACTOR ** level for n, s in self.base.items()}
        share = min(1.0, (level + 1.0) / self.ramp)
        masks, neurons = neurons_step(trainer, self.nmap, [f * share for f in self.neuron_final])
        trainer.set_masks(round_masks(trainer, self.scoring, goal, masks))
        stats = trainer.train(c.epochs, c.lr, reg=c.reg, reg_strength=c.reg_strength, batch_size=c.train_batch_size,
                              progress=lambda e, b, n, loss, sp: on_batch(r, c.iterations, e, b, n, loss, sp))
        candidate = trainer.export()
        score, decision = (self.evaluator.evaluate(candidate), None) if self.judge is None else self.judge(candidate)
        loss_pp = 100.0 * (self.evaluator.dense - score)
        fits = within_budget(loss_pp, self.max_loss) and (decision is None or bool(decision["within"]))
        if fits:
            self.best, self.best_level = (candidate, {n: m.copy() for n, m in trainer.masks.items()}), level
        else:
            self._back_off()
        self.level = self.best_level + self.step
        total = sum(m.size for m in trainer.masks.values())
        entry = {"round": r, "phase": "prune", "level": level, "step": self.step, "targets": goal,
                 "overall_density": sum(int(m.sum()) for m in trainer.masks.values()) / total,
                 "density": {n: float(m.mean()) for n, m in trainer.masks.items()},
                 "train_loss": stats.loss, "metric": score, "loss_pp": loss_pp, "fits": fits,
                 **({"decision": {k: decision.get(k) for k in ("loss_pp", "limit_pp", "within", "n", "output")}}
                    if decision is not None else {}),
                 "seconds": round(time.perf_counter() - t0, 3), **({"neurons": neurons} if neurons else {})}
        self.history.append(entry)
        log.info("round %d (level %.2f): density %.4f, loss %.3f pp (budget %.3f%s)%s", r, level,
                 entry["overall_density"], loss_pp, self.max_loss,
                 "" if decision is None else f"; the rule's limit {decision['limit_pp']:.3f}",
                 "" if fits else ", backing off")
        return entry

    @property
    def finished(self) -> bool:
        return self.step < SMALLEST_STEP

    def _back_off(self) -> None:
        """Over budget: halve the step and continue from the best model (weights, masks, shuffling stream), or from
        the dense model when no round was kept."""
        from onnxprune.converter.finetune import MaskedTrainer

        self.step /= 2.0
        if self.step < SMALLEST_STEP:
            return
        state = self.trainer.state()
        if self.best is None:  # nothing kept yet: the dense model again, every weight back, a gentler level next
            start, masks = self.original, {n: np.ones_like(m) for n, m in self.trainer.masks.items()}
        else:
            start, masks = self.best
        self.trainer = MaskedTrainer(start, masks, self.reader, **self.trainer_options)
        self.trainer.restore_state(state)
