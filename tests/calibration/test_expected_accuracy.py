"""expected_accuracy: the candidate's class scored by the input model's own probabilities (a label-free estimate of
the accuracy change), its per-sample terms, its label-noise variance, and the rule's decision on constructed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxprune.calibration.output_metrics import METRICS, as_probabilities
from onnxprune.converter.auto.decide import PER_SAMPLE, BudgetRule, wilson_upper
from onnxprune.errors import CalibrationError
from tests.converter.auto.test_decide import FakeEvaluator, halves

METRIC = METRICS["expected_accuracy"]


def probs(*rows):
    return np.asarray(rows, dtype=np.float64)


def test_a_near_tie_flip_costs_almost_nothing_and_a_confident_flip_almost_one_sample():
    p = probs([0.50, 0.49, 0.01], [0.98, 0.01, 0.01], [0.2, 0.7, 0.1])
    cand = probs([0.40, 0.59, 0.01], [0.10, 0.85, 0.05], [0.1, 0.8, 0.1])  # flips, flips, keeps
    terms, counts = METRIC.samples(cand, p, None)
    assert terms[:, 0] == pytest.approx([0.49, 0.01, 0.7]) and counts.tolist() == [1, 1, 1]
    d = p.max(axis=1) - terms[:, 0]  # the per-sample expected change in correctness
    assert d == pytest.approx([0.01, 0.97, 0.0])
    dense, _ = METRIC.samples(p, p, None)
    assert METRIC.finish(dense.sum(axis=0), 3) == pytest.approx((0.5 + 0.98 + 0.7) / 3)  # the mean confidence


def test_probability_rows_are_used_as_they_are_and_logits_through_their_softmax():
    p = probs([0.7, 0.2, 0.1], [0.25, 0.25, 0.5])
    assert as_probabilities(p) is not None and np.array_equal(as_probabilities(p), p)
    logits = np.log(p) + 3.0  # any shift: the same softmax
    assert as_probabilities(logits) == pytest.approx(p)
    assert as_probabilities(np.log(p)) == pytest.approx(p)  # log-probabilities (all <= 0)
    cand = np.asarray([[0.0, 5.0, 0.0], [9.0, 0.0, 0.0]])
    assert METRIC.samples(cand, logits.astype(np.float32), None)[0][:, 0] == pytest.approx([0.2, 0.25], rel=1e-6)


def test_an_output_that_is_not_class_scores_is_refused_with_what_to_do():
    with pytest.raises(CalibrationError, match=r"\[N, classes\].*--metric OUTPUT=expected_accuracy"):
        METRIC.samples(np.zeros((4, 3, 2)), np.zeros((4, 3, 2)), None)


def test_the_variance_is_that_of_two_exclusive_bernoulli_outcomes_and_zero_when_unchanged():
    var = PER_SAMPLE["expected_accuracy"].variance
    dense = np.asarray([[0.98], [0.5], [0.7]])
    cand = np.asarray([[0.01], [0.49], [0.7]])
    # Var(X_a - X_b), X_a X_b = 0: E[(X_a - X_b)^2] - (p_a - p_b)^2 = p_a + p_b - (p_a - p_b)^2
    assert var(dense, cand)[:, 0] == pytest.approx([0.99 - 0.97 ** 2, 0.99 - 0.01 ** 2, 0.0])
    rng = np.random.default_rng(0)  # against a simulation of the labels the model's probabilities stand for
    label = rng.choice(3, size=200_000, p=[0.5, 0.49, 0.01])
    diff = (label == 0).astype(float) - (label == 1)
    assert diff.var() == pytest.approx(var(dense, cand)[1, 0], rel=0.01)


def _set(n, flips, pa, pb, seed=0):
    """n samples of 10 classes, the input model's class 0 at probability pa (rest spread); a candidate moving
    `flips` of them to class 1, which the input model gives pb."""
    rest = (1.0 - pa - pb) / 8
    p = np.full((n, 10), rest)
    p[:, 0], p[:, 1] = pa, pb
    cand = p.copy()
    cand[:flips, 1] = 1.0  # argmax -> class 1
    return p, cand


def _rule(p, budget):
    return BudgetRule(FakeEvaluator(halves(p), [None, None], metric="expected_accuracy"), budget)


@pytest.mark.parametrize("pa, pb, flips, within", [
    (0.50, 0.49, 40, True),  # 40 near-ties change: 0.008 pp expected, SE ~0.89 pp
    (0.99, 0.005, 1, True),  # one confident change, 0.197 pp, is within 1 SE (0.200 pp), as one discordant pair is
    (0.99, 0.005, 3, False),  # three: 0.59 pp > 0.35 pp
])
def test_near_ties_flip_freely_and_confident_flips_count(pa, pb, flips, within):
    n = 500
    p, cand = _set(n, flips, pa, pb)
    d = _rule(p, 0.0).judge(halves(cand))
    diff = np.r_[np.full(flips, pa - pb), np.zeros(n - flips)]
    noise = flips * (pa + pb - (pa - pb) ** 2)
    assert d.loss_pp == pytest.approx(100 * diff.mean())
    assert d.se_pp == pytest.approx(100 * math.sqrt((diff.var(ddof=1) + noise / n) / n))
    assert d.limit_pp == pytest.approx(d.se_pp) and d.within == within
    assert (d.worse, d.better) == (flips, 0)


def test_the_rule_decides_in_expectation_what_the_accuracy_rule_decides_with_labels():
    """Labels drawn from the input model's probabilities: the accuracy rule's mean SE^2 over many draws is
    expected_accuracy's SE^2, and its mean loss is expected_accuracy's loss."""
    rng = np.random.default_rng(1)
    n = 400
    logits = 2.5 * rng.standard_normal((n, 5))
    p = as_probabilities(logits)
    cand = logits + 1.5 * rng.standard_normal((n, 5))
    d = _rule(logits, 0.0).judge(halves(cand))
    a, b = logits.argmax(1), cand.argmax(1)
    losses, var = [], []
    for _ in range(4000):
        labels = (rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1)
        diff = (a == labels).astype(float) - (b == labels)
        losses.append(100 * diff.mean())
        var.append(diff.var(ddof=1) / n)
    assert np.mean(losses) == pytest.approx(d.loss_pp, abs=4 * np.std(losses) / math.sqrt(len(losses)))
    assert 100 * math.sqrt(np.mean(var)) == pytest.approx(d.se_pp, rel=0.02)


def test_a_positive_budget_bounds_the_loss_from_above_and_the_statement_names_the_assumption():
    p, cand = _set(500, 6, 0.9, 0.05)  # 6 x 0.85 = 5.1 / 500 = 1.02 pp expected, 1 SE 0.48 pp
    d = _rule(p, 1.1).judge(halves(cand))
    assert not _rule(p, 1.0).judge(halves(cand)).within
    assert not d.within and d.limit_pp == pytest.approx(1.1 - d.se_pp)  # 1.02 + 0.48 > 1.1
    assert _rule(p, 1.5).judge(halves(cand)).within
    rule = _rule(p, 1.0)
    assert "calibrated" in rule.statement() and "paired loss" in rule.statement()
    assert rule.warnings() == []  # the input model's confidence is not a sign of training data


def test_a_stricter_rule_forgives_less_noise_for_paired_kinds_and_takes_more_off_for_fidelity_ones():
    """The per-layer refit looks at one decision set many times and asks for a rule twice as strict: a paired rule
    then forgives half the noise (z x 2 would have doubled it), a fidelity rule takes twice the margin off."""
    p, cand = _set(500, 3, 0.7, 0.25)
    plain, strict = _rule(p, 0.0).judge(halves(cand)), BudgetRule(
        FakeEvaluator(halves(p), [None, None], metric="expected_accuracy"), 0.0, strictness=2.0).judge(halves(cand))
    assert strict.limit_pp == pytest.approx(plain.se_pp / 2) and plain.limit_pp == pytest.approx(plain.se_pp)
    assert plain.within and not strict.within  # 0.27 pp: within 1 SE (0.34 pp), not within half of it
    ev = FakeEvaluator(halves(p), [None, None], metric="agreement")
    one, two = BudgetRule(ev, 2.0).judge(halves(cand)), BudgetRule(ev, 2.0, strictness=2.0).judge(halves(cand))
    share = one.loss_pp / 100  # a share of changed samples: Wilson's bound at 1 and at 2 SE (decide.py)
    assert one.limit_pp == pytest.approx(2.0 - 100 * (wilson_upper(share, 500, 1.0) - share))
    assert two.limit_pp == pytest.approx(2.0 - 100 * (wilson_upper(share, 500, 2.0) - share))
    assert two.limit_pp < one.limit_pp


def test_a_batch_of_another_shape_loses_what_the_input_model_expected_to_get_right():
    p = probs([0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8])
    d = _rule(p, 0.0).judge([p[:2], p[2:3]])  # the second batch lost a row: both its samples count as lost
    assert d.loss_pp == pytest.approx(100 * (0.7 + 0.8) / 4)
    v = np.asarray([0.0, 0.0, 0.7 * 0.3, 0.8 * 0.2])  # p[a] (1 - p[a]): the candidate is never right there
    diff = np.asarray([0.0, 0.0, 0.7, 0.8])
    assert d.se_pp == pytest.approx(100 * math.sqrt((diff.var(ddof=1) + v.mean()) / 4))
