"""The budget rule: paired per-sample loss, one standard error of margin, resolution and warnings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxprune.converter.auto.decide import BudgetRule
from onnxprune.errors import ConfigError


class FakeEvaluator:
    """The parts of calibration.metrics.Evaluator the rule reads: metric, labels and reference per batch."""

    def __init__(self, reference, labels, metric="accuracy"):
        self.metric, self.reference, self.labels = metric, reference, labels

    def run(self, outputs):  # the "model" is its outputs
        return iter(outputs)


def logits_for(classes, n_classes=10):
    out = np.zeros((len(classes), n_classes), dtype=np.float32)
    out[np.arange(len(classes)), classes] = 1.0
    return out


def setup(n=1000, dense_wrong=20, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    dense = labels.copy()
    dense[:dense_wrong] = (labels[:dense_wrong] + 1) % 10
    half = n // 2
    ev = FakeEvaluator([logits_for(dense[:half]), logits_for(dense[half:])], [labels[:half], labels[half:]])
    return ev, labels, dense


def test_the_dense_model_itself_is_within_a_zero_budget_and_the_resolution_is_one_sample():
    ev, labels, dense = setup()
    rule = BudgetRule(ev, 0.0)
    d = rule.judge(ev.reference)
    assert d.loss_pp == 0.0 and d.se_pp == 0.0 and d.within and d.n == 1000
    assert rule.resolution_pp == pytest.approx(0.1)
    assert "one sample = 0.1 pp" in rule.statement()


def test_paired_loss_counts_discordant_samples_and_the_margin_is_one_standard_error():
    ev, labels, dense = setup()
    cand = dense.copy()
    cand[100:130] = (labels[100:130] + 1) % 10  # 30 newly wrong
    cand[:10] = labels[:10]  # 10 newly right
    rule = BudgetRule(ev, 0.0)
    d = rule.judge([logits_for(cand[:500]), logits_for(cand[500:])])
    assert (d.worse, d.better) == (30, 10)
    diff = np.r_[np.ones(30), -np.ones(10), np.zeros(960)]
    assert d.loss_pp == pytest.approx(2.0)
    assert d.se_pp == pytest.approx(100 * diff.std(ddof=1) / math.sqrt(1000))
    assert d.limit_pp == pytest.approx(d.se_pp) and not d.within  # 2.0 pp > 0 + 1 SE (~0.63 pp)
    assert BudgetRule(ev, 1.5).judge([logits_for(cand[:500]), logits_for(cand[500:])]).within


def test_a_loss_within_the_noise_passes_a_zero_budget():
    ev, labels, dense = setup()
    cand = dense.copy()
    cand[100:103] = (labels[100:103] + 1) % 10  # 3 newly wrong, 2 newly right: 0.1 pp, SE ~0.22 pp
    cand[:2] = labels[:2]
    d = BudgetRule(ev, 0.0).judge([logits_for(cand[:500]), logits_for(cand[500:])])
    assert d.loss_pp == pytest.approx(0.1) and d.within


def test_warnings_for_an_unresolvable_budget_and_for_training_data():
    ev, _, _ = setup(n=100, dense_wrong=0)
    warnings = BudgetRule(ev, 0.5).warnings()
    assert any("cannot resolve --max-loss 0.5: one sample = 1 pp" in w for w in warnings)
    assert any("looks like data the model was trained on" in w for w in warnings)
    ev, _, _ = setup(n=1000, dense_wrong=50)
    assert BudgetRule(ev, 0.5).warnings() == []


def test_label_free_scores_disagreements_by_the_input_models_probabilities():
    n = 1000
    dense = np.zeros((n, 3))
    dense[:, 0] = 4.0  # confident in class 0 ...
    dense[:10] = [1.0, 0.9, -5.0]  # ... except on 10 samples, where class 1 is nearly as likely
    ev = FakeEvaluator([dense[:500], dense[500:]], [None, None], metric="agreement")
    rule = BudgetRule(ev, 0.0)
    p = np.exp(dense) / np.exp(dense).sum(axis=1, keepdims=True)
    expected_error = 1 - p.max(axis=1).mean()
    assert rule.label_free and rule.noise_se == pytest.approx(100 * math.sqrt(2 * expected_error / n))
    unsure = dense.copy()
    unsure[:10] = [0.0, 1.0, -5.0]  # flips the 10 unsure samples: costs p0 - p1 each, small
    d = rule.judge([unsure[:500], unsure[500:]])
    assert d.loss_pp == pytest.approx(100 * 10 * (p[0, 0] - p[0, 1]) / n) and d.within
    sure = dense.copy()
    sure[10:40] = [0.0, 1.0, 0.0]  # flips 30 confident samples: costs ~0.96 each
    d = rule.judge([sure[:500], sure[500:]])
    assert d.loss_pp > 2.5 and not d.within
    assert "no labels" in rule.statement() and rule.judge(ev.reference).within


def test_a_negative_budget_is_refused():
    ev, _, _ = setup()
    with pytest.raises(ConfigError, match="max-loss"):
        BudgetRule(ev, -1.0)
