"""The decision rule's ceilings in the budgeted scan and the one-shot fit (calibration/sampling.py "certain").

A rule that admits k changed samples of n (Wilson's bound) makes a level that changed more than k useless to any
plan it judges: the measurement stops on the changed sample one too many (exact, whatever the samples left), the
scan's bisection calls such a level over, and it is not run on to be known more precisely.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.calibration.allocate import fit_to_budget
from onnxprune.calibration.sampling import SequentialScorer
from onnxprune.calibration.sensitivity import DEFAULT_LEVELS, scan
from onnxprune.converter.auto.decide import BudgetRule, wilson_upper
from onnxprune.passes.weights import find_prunable
from tests.calibration.test_scan_budget import _level_batches
from tests.calibration.test_sensitivity import MODELS, evaluator


def _changes_per_batch(measured) -> dict[int, int]:
    """Changed samples per batch of a complete agreement measurement (its count less its agreeing sum)."""
    return {b: int(round(sums[0][1] - sums[0][0][0])) for b, sums in measured.sums.items()}


@pytest.mark.parametrize("n, budget", [(240, 1.0), (240, 5.0), (96, 1.0)])
def test_a_binary_parts_ceiling_is_the_changed_samples_the_rule_admits(n, budget):
    model = MODELS["small_cnn"]()
    rule = BudgetRule(evaluator(model, "agreement", n=n), budget)
    (ceiling,) = rule.point_ceilings()
    k = max(0, rule.changes_allowed())
    assert ceiling.tolist() == [pytest.approx(100.0 * k / n)]
    if rule.resolves():  # one more changed sample would be outside Wilson's bound
        assert 100 * wilson_upper(k / n, n, rule.z) <= budget < 100 * wilson_upper((k + 1) / n, n, rule.z)
    assert (k > 0) == (budget == 5.0)  # 0 changed of 240 at 1 pp (and 96 samples cannot certify 1 pp at all)
    # a continuous part's margin is known only once measured: its ceiling is the budget
    assert [c.tolist() for c in BudgetRule(evaluator(model, "rel_l2", n=n), budget).point_ceilings()] == [[budget, budget]]
    (both,) = BudgetRule(evaluator(model, "prob", n=n), budget).point_ceilings()
    assert both.tolist() == [pytest.approx(100.0 * k / n), budget]


def test_a_measurement_stops_on_the_changed_sample_one_too_many():
    model = MODELS["small_cnn"]()
    ev = evaluator(model, "agreement", n=96, batch_size=4)
    scorer = SequentialScorer(ev)
    level = next(s for s in DEFAULT_LEVELS if 0 < scorer.measure(_level_batches(model, ev, s, layer=0)[0]).loss_pp)
    batches = _level_batches(model, ev, level, layer=0)[0]
    full = scorer.measure(batches)
    changed = _changes_per_batch(full)
    first = next(i for i, b in enumerate(scorer.order) if changed[b])  # in the scorer's order
    stopped = scorer.measure(batches, [np.array([0.0])])
    assert stopped.certain and stopped.samples == 4 * (first + 1) < full.total
    # the same threshold for every term and output as one number; a clean level runs to the end, not certain
    assert scorer.measure(batches, 0.0).samples == stopped.samples
    clean = scorer.measure(_level_batches(model, ev, 0.01, layer=0)[0], [np.array([0.0])])
    assert clean.complete and not clean.certain and clean.loss_pp == 0.0
    # "within" reads each term against its own ceiling
    assert scorer.within(clean, [np.array([0.0])]) and not scorer.within(full, [np.array([0.0])])
    assert scorer.within(full, full.loss_pp)


def test_the_budgeted_scan_bisects_against_the_ceilings_and_does_not_resume_a_certain_level():
    model = MODELS["small_cnn"]()
    ev = evaluator(model, "agreement", n=96, batch_size=4)
    inventory = find_prunable(model)
    plain = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=5.0)
    ceiled = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=5.0, ceilings=[np.array([0.0])])
    for lay, was in zip(ceiled.layers, plain.layers):
        if not lay.levels:
            continue
        losses = lay.losses(ceiled.dense)
        clean = [s for s, v in zip(lay.levels, losses) if v <= 0]
        over = [s for s, v in zip(lay.levels, losses) if v > 0]
        # the answer is the largest level that changed no sample; every level over it changed one
        assert not clean or not over or max(clean) < min(over)
        assert max(clean, default=0.0) <= max((s for s, v in zip(was.levels, was.losses(plain.dense)) if v <= 5.0),
                                              default=0.0)
        if clean:  # none of all the samples changed at the answer: the levels under it are not measured
            assert lay.levels[0] == max(clean)
    # the first level over stopped on its first changed sample, not run on to a precision
    assert any(lay.samples and min(lay.samples) < 96 for lay in ceiled.layers)


def test_the_fit_stops_a_certainly_over_try_before_any_fits():
    model = MODELS["small_cnn"]()
    ev = evaluator(model, "agreement", n=240, batch_size=8)
    inventory = find_prunable(model)
    rule = BudgetRule(ev, 1.0)
    outcome = fit_to_budget(model, inventory, ev, {w.name: 0.9 for w in inventory.prunable}, 1.0,
                            judge=rule.fit_judge(), ceilings=rule.point_ceilings(), max_tries=3)
    first = outcome.history[0]
    assert not first["fits"] and first["samples"] < 240 and "decision" not in first
    # without the ceilings, every try before the first fit runs every sample and is judged
    plain = fit_to_budget(model, inventory, ev, {w.name: 0.9 for w in inventory.prunable}, 1.0,
                          judge=rule.fit_judge(), max_tries=1)
    assert "samples" not in plain.history[0] and "decision" in plain.history[0]


def test_the_scans_memory_budget_is_a_share_of_what_is_available(monkeypatch):
    import builtins
    import io

    from onnxprune.calibration import sensitivity

    real_open = builtins.open

    def meminfo(kb):
        def fake(path, *a, **k):
            return io.StringIO(f"MemTotal: 9 kB\nMemAvailable: {kb} kB\n") if path == "/proc/meminfo" else \
                real_open(path, *a, **k)
        return fake

    monkeypatch.setattr(builtins, "open", meminfo(64 << 20))  # 64 GB available: the cap
    assert sensitivity.default_memory_budget() == sensitivity.DEFAULT_MEMORY_BUDGET == 1 << 30
    monkeypatch.setattr(builtins, "open", meminfo(4 << 20))  # 4 GB: an eighth of it
    assert sensitivity.default_memory_budget() == 512 << 20
    monkeypatch.setattr(builtins, "open", meminfo(1 << 20))  # 1 GB: never under the old 256 MB
    assert sensitivity.default_memory_budget() == 256 << 20
