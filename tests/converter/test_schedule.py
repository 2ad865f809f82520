"""Iterative prune → retrain: the schedule, masks that only shrink, exact final sparsities, history."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.errors import ConfigError
from onnxprune.converter.schedule import iterative_prune, schedule_sparsities
from onnxprune.passes.criteria import Scorer
from onnxprune.models import builders
from onnxprune.passes.magnitude import Target, quality_mask
from onnxprune.passes.weights import find_prunable, weight_array
from tests.oracle import check_full, run


def teacher_data(model, n=256, seed=0):
    """Inputs and the dense model's own argmax as labels (a task the pruned model can relearn)."""
    x = np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)
    return x, run(model, {"input": x})["output"].argmax(1)


@pytest.mark.parametrize("schedule", ["cubic", "geometric", "linear"])
def test_schedules_rise_monotonically_to_the_exact_targets(schedule):
    plan = schedule_sparsities({"a": 0.9, "b": 0.5}, {"a": 0.2}, 5, schedule)
    assert len(plan) == 5
    assert plan[-1] == {"a": 0.9, "b": 0.5}
    for name in ("a", "b"):
        values = [r[name] for r in plan]
        assert values == sorted(values) and values[0] > (0.2 if name == "a" else 0.0)


def test_cubic_takes_big_steps_first():
    values = [r["w"] for r in schedule_sparsities({"w": 0.9}, {}, 4, "cubic")]
    steps = np.diff([0.0, *values])
    assert list(steps) == sorted(steps, reverse=True)


def test_round_masks_rank_current_weights_and_never_regrow():
    weights = {"w": np.array([[0.0, 5.0, -3.0, 0.1], [2.0, -0.2, 0.0, 4.0]], dtype=np.float32)}
    current = {"w": np.array([[False, True, True, True], [True, True, False, True]])}
    mask = Scorer("magnitude").masks(weights, {"w": 0.5}, current)["w"]
    assert mask.tolist() == [[False, True, True, False], [True, False, False, True]]


def test_iterative_prune_reaches_the_targets_with_shrinking_masks():
    model = builders.mlp_gemm(seed=0)
    inventory = find_prunable(model)
    targets = {"fc1.weight": 0.9, "fc2.weight": 0.75, "fc3.weight": 0.5}
    seen_masks = []
    out, masks, history = iterative_prune(
        model, inventory, targets, teacher_data(model), iterations=3, epochs=1, lr=0.05, final_epochs=1,
        eval_fn=lambda m: 0.5, device="cpu", batch_size=32,
        progress=lambda r, rounds, *rest: seen_masks.append((r, rounds)))
    check_full(out)
    assert [h["phase"] for h in history] == ["prune"] * 3 + ["final"]
    assert {r for r, _ in seen_masks} == {1, 2, 3, 4} and {n for _, n in seen_masks} == {4}
    for name, s in targets.items():
        w = weight_array(out, name)
        assert int((~masks[name]).sum()) == round(s * w.size)
        assert (w[~masks[name]] == 0).all() and np.count_nonzero(w[masks[name]]) == masks[name].sum()
        densities = [h["density"][name] for h in history]
        assert densities == sorted(densities, reverse=True) and densities[-1] == pytest.approx(1 - s, abs=1e-3)
    assert all(h["metric"] == 0.5 for h in history)


def test_retraining_between_rounds_beats_one_shot_at_the_same_sparsity():
    model = builders.mlp_gemm(seed=1)
    inventory = find_prunable(model)
    x, y = teacher_data(model, n=512, seed=1)
    test_x, test_y = teacher_data(model, n=512, seed=2)
    targets = {w.name: 0.8 for w in inventory.prunable}
    accuracy = lambda m: float(np.mean(run(m, {"input": test_x})["output"].argmax(1) == test_y))  # noqa: E731
    one_shot, _, _ = iterative_prune(model, inventory, targets, (x, y), iterations=1, epochs=0, lr=0.05, device="cpu")
    out, _, _ = iterative_prune(model, inventory, targets, (x, y), iterations=3, epochs=2, lr=0.05,
                                device="cpu", batch_size=32)
    assert accuracy(out) > accuracy(one_shot)


def test_quality_targets_become_the_sparsity_they_remove_on_the_dense_weights():
    model = builders.mlp_gemm(seed=0)
    inventory = find_prunable(model)
    keep, _ = quality_mask(weight_array(model, "fc1.weight"), 1.0)
    _, masks, _ = iterative_prune(model, inventory, {"fc1.weight": Target(quality=1.0)}, teacher_data(model),
                                  iterations=2, epochs=0.5, lr=0.01, device="cpu")
    assert masks["fc1.weight"].sum() == keep.sum()


def test_alternating_conv_and_fc_retraining_runs_on_a_lenet5():
    model = builders.lenet5_like(conv_channels=(4, 8), fc_units=32, seed=0)
    inventory = find_prunable(model)
    x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    y = run(model, {"input": x})["logits"].argmax(1)
    targets = {w.name: 0.5 for w in inventory.prunable}
    out, masks, history = iterative_prune(model, inventory, targets, (x, y), iterations=2, epochs=1, lr=0.01,
                                          alternate=True, device="cpu", batch_size=32)
    check_full(out)
    assert len(history) == 2 and all(m.mean() == pytest.approx(0.5, abs=0.01) for m in masks.values())


def test_bad_options_are_config_errors():
    model = builders.mlp_gemm(seed=0)
    inventory = find_prunable(model)
    data = teacher_data(model)
    with pytest.raises(ConfigError, match="unknown retraining option"):
        iterative_prune(model, inventory, {"fc1.weight": 0.5}, data, warmup=3)
    with pytest.raises(ConfigError, match="not prunable"):
        iterative_prune(model, inventory, {"fc1.bias": 0.5}, data)
    with pytest.raises(ConfigError, match="--schedule"):
        iterative_prune(model, inventory, {"fc1.weight": 0.5}, data, schedule="exponential", device="cpu")
    with pytest.raises(ConfigError, match="outside"):
        iterative_prune(model, inventory, {"fc1.weight": 1.5}, data)
