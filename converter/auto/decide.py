"""The statistical rule that decides "within budget" on a finite decision set.

A candidate and the dense model are scored sample by sample on the same decision set (paired): d_i = score of the
dense model on sample i - score of the candidate (accuracy: 1 when only the dense model is right, -1 when only the
candidate is, else 0: McNemar's discordant pairs). The loss is L = 100·mean(d) in pp, its standard error
SE = 100·std(d)/sqrt(n). A candidate is accepted when

    L <= budget + Z·SE          (Z = 1: one standard error of the paired difference)

"No loss beyond the noise" (--max-loss 0) is this rule with budget 0: a loss no larger than one standard error of
the paired difference is not told apart from no loss on this set.

Without labels (metric "agreement") the accuracy change is estimated from the input model's own probabilities p
(softmax of its scored output): sample i scores p_i(class the dense model picks) for the dense model and
p_i(class the candidate picks) for the candidate, so a disagreement costs what the input model believes it costs
(this is the expected accuracy change if the input model is calibrated; an overconfident one makes it pessimistic).
The estimate is never negative, so its own standard error cannot stand for the noise; the margin is instead the
standard error a labelled set of the same size would show between two models with the input model's expected
error ê = mean(1 − p_i(dense class)): SE = 100·sqrt(2ê/n) (independent errors; an upper bound on the noise of
correlated ones). The resolution is one sample: 100/n pp ("one sample = 0.79 pp here" for 126 samples).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from onnxprune.calibration.decide import within_budget
from onnxprune.errors import ConfigError

log = logging.getLogger(__name__)

Z = 1.0  # margin in standard errors of the paired difference
NEAR_PERFECT = 0.995  # dense accuracy on the decision set at or above this: probably the model's training data


def _top1(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).reshape(len(x), -1).argmax(axis=1)


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def _rel_l2(out, ref, labels):
    a, b = _flat(out), _flat(ref)
    return 1.0 - np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-12)


def _cosine(out, ref, labels):
    a, b = _flat(out), _flat(ref)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return np.where((na < 1e-12) & (nb < 1e-12), 1.0, (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12))


def _top5(out, ref, labels):
    top = np.argpartition(-np.asarray(out), 4, axis=1)[:, :5]
    return (top == labels[:, None]).any(axis=1).astype(np.float64)


# per-sample score of each metric (calibration.metrics scores the same quantities summed over a batch)
PER_SAMPLE: dict[str, Callable] = {
    "accuracy": lambda out, ref, labels: (_top1(out) == labels).astype(np.float64),
    "top5": _top5,
    "agreement": lambda out, ref, labels: (_top1(out) == _top1(ref)).astype(np.float64),
    "rel_l2": _rel_l2,
    "cosine": _cosine,
}


def _softmax(x: np.ndarray) -> np.ndarray:
    x = _flat(x)
    if (x >= 0).all() and np.allclose(x.sum(axis=1), 1.0, atol=1e-3):
        return x  # already probabilities
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _expected_accuracy(out, ref, labels):
    """p_ref(class the output picks): the output's accuracy expected under the reference's probabilities."""
    p = _softmax(ref)
    return p[np.arange(len(p)), _top1(out)]


@dataclass
class Decision:
    loss_pp: float  # mean paired loss on the decision set (positive = worse than the dense model)
    se_pp: float  # its standard error
    limit_pp: float  # budget + Z·SE
    within: bool
    n: int
    worse: int = 0  # samples only the dense model gets right (label metrics)
    better: int = 0  # samples only the candidate gets right

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class BudgetRule:
    """Per-sample scores of the dense model on the decision set, and the rule above."""

    def __init__(self, evaluator, budget_pp: float, *, z: float = Z):
        if evaluator.metric not in PER_SAMPLE:
            raise ConfigError(f"metric '{evaluator.metric}' has no per-sample score; use one of {', '.join(PER_SAMPLE)}.")
        if budget_pp < 0 or not math.isfinite(budget_pp):
            raise ConfigError(f"--max-loss {budget_pp} must be a finite number of percentage points >= 0.")
        self.evaluator, self.budget, self.z = evaluator, float(budget_pp), z
        self.label_free = evaluator.metric == "agreement"
        self.per_sample = _expected_accuracy if self.label_free else PER_SAMPLE[evaluator.metric]
        self.dense = self.scores(evaluator.reference)
        self.n = len(self.dense)
        expected_error = float(1.0 - self.dense.mean())
        self.noise_se = 100.0 * math.sqrt(2.0 * expected_error / self.n) if self.label_free else None

    def scores(self, outputs) -> np.ndarray:
        refs = self.evaluator.reference
        parts = [self.per_sample(np.asarray(o), r, lab) for o, r, lab in zip(outputs, refs, self.evaluator.labels)]
        return np.concatenate(parts)

    @property
    def resolution_pp(self) -> float:
        return 100.0 / self.n

    def judge_outputs(self, outputs) -> Decision:
        d = self.dense - self.scores(outputs)
        loss = 100.0 * float(d.mean())
        se = 100.0 * float(d.std(ddof=1)) / math.sqrt(self.n) if self.n > 1 else float("inf")
        if self.noise_se is not None:
            se = self.noise_se
        limit = self.budget + self.z * se
        return Decision(loss, se, limit, within_budget(loss, limit), self.n, int((d > 0).sum()), int((d < 0).sum()))

    def judge(self, model) -> Decision:
        return self.judge_outputs(list(self.evaluator.run(model)))

    def statement(self) -> str:
        if self.label_free:
            return (f"no labels: accepted when the expected accuracy loss (the input model's probabilities) on the "
                    f"{self.n} decision samples is <= {self.budget:g} pp + {self.z:g} x {self.noise_se:.3f} pp, the "
                    f"standard error a labelled set of this size would show at the input model's expected error; "
                    f"one sample = {self.resolution_pp:.3g} pp here")
        return (f"accepted when the paired loss on the {self.n} decision samples is <= {self.budget:g} pp "
                f"+ {self.z:g} standard error of the paired difference; one sample = {self.resolution_pp:.3g} pp here")

    def warnings(self) -> list[str]:
        out = []
        if 0 < self.budget < self.resolution_pp:
            out.append(f"the decision set ({self.n} samples) cannot resolve --max-loss {self.budget:g}: one sample = "
                       f"{self.resolution_pp:.3g} pp; decisions are made at one-sample resolution (pass a larger "
                       "--val-data)")
        dense = float(self.dense.mean())
        if not self.label_free and dense >= NEAR_PERFECT:
            out.append(f"the dense model scores {100 * dense:.2f}% on the decision set: it looks like data the model "
                       "was trained on, so the budget measures fitting, not generalization (pass held-out samples "
                       "as --val-data)")
        return out
