"""Every criterion in every path (one-shot, one-shot budget fit, iterative schedule, budget search, sensitivity
scan), with onnxruntime parity against the masked-numpy oracle; OBD and Taylor gradients against plain torch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from onnxprune.calibration.metrics import Evaluator, choose_metric
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.sensitivity import scan, scan_naive
from onnxprune.calibration.statistics import CalibrationStats
from onnxprune.converter.cli import cli
from onnxprune.converter.criteria import calibration_scoring
from onnxprune.converter.gradients import gradient_statistics
from onnxprune.converter.pipeline import configure, run
from onnxprune.converter.plan import build_plan, recipe_of
from onnxprune.converter.steps.data import Data
from onnxprune.converter.recipe import dump_recipe, load_recipe
from onnxprune.converter.schedule import iterative_prune
from onnxprune.errors import ConfigError
from onnxprune.models import builders
from onnxprune.passes.criteria import CRITERIA, Scorer
from onnxprune.passes.weights import find_prunable, weight_array
from tests.oracle import assert_same_outputs, zero_weights

ALL = list(CRITERIA)


@pytest.fixture(scope="module")
def small():
    """A LeNet-5 look-alike (Conv + Gemm) and 96 random images labelled by the model itself."""
    model = builders.lenet5_like(conv_channels=(3, 4), fc_units=12, seed=1)
    x = np.random.default_rng(0).random((96, 1, 28, 28), dtype=np.float32)
    from onnxprune.calibration.runtime import make_session

    labels = make_session(model).run(None, {"input": x})[0].argmax(1).astype(np.int64)
    return model, {"input": x, "labels": labels}


def expected_masks(model, reader, criterion, sparsities):
    """The oracle's masks: the criterion's scores on `model`, ranked by passes.criteria.keep_mask."""
    scorer = calibration_scoring(criterion, reader).bind(model)
    return {n: scorer.keep(n, weight_array(model, n), s) for n, s in sparsities.items()}, scorer


def assert_exact_counts(masks, sparsities, scorer):
    for name, mask in masks.items():
        axis = scorer.axis(name)
        if axis is None:
            assert int((~mask).sum()) == round(sparsities[name] * mask.size), name
        else:
            rows = np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1)
            assert ((~rows).sum(axis=1) == round(sparsities[name] * rows.shape[1])).all(), name


def masks_of(model, names):
    return {n: weight_array(model, n) != 0 for n in names}


def feeds(data, k=3):
    return [{"input": data["input"][i * 8:(i + 1) * 8]} for i in range(k)]


@pytest.mark.parametrize("criterion", ALL)
def test_one_shot_prunes_by_the_criterion(small, criterion):
    model, data = small
    result = run(model, configure(sparsity=0.6, criterion=criterion, data=data, neurons=False, seed=0))
    names = [w.name for w in find_prunable(model).prunable]
    want, scorer = expected_masks(model, Data(model, configure(data=data).data).train_reader(), criterion,
                                  dict.fromkeys(names, 0.6))
    for n in names:
        np.testing.assert_array_equal(result.state.masks[n], want[n], err_msg=n)
    assert_exact_counts(result.state.masks, dict.fromkeys(names, 0.6), scorer)
    onnx.checker.check_model(result.model)
    assert len(result.model.graph.node) >= len(model.graph.node)
    assert_same_outputs(result.model, zero_weights(model, want), feeds=feeds(data))
    assert result.report["criterion"] == criterion


@pytest.mark.parametrize("criterion", ALL)
def test_one_shot_budget_fit_measures_the_criterions_masks(small, criterion):
    model, data = small
    result = run(model, configure(max_loss=100.0, criterion=criterion, data=data, neurons=False,
                                     levels=(0.5, 0.8), seed=0))
    # 96 samples, too few to retrain on: the one-shot search, chosen on every 4th sample (steps/auto.py
    # `_choose_apart`), ranked by the criterion's statistics on that part
    sparsities = result.report["auto"]["one_shot"]["sparsities"]
    chooser = Data(model, configure(data=data).data, choose_every=4).train_reader()
    want, _ = expected_masks(model, chooser, criterion, sparsities)
    for n, m in want.items():
        np.testing.assert_array_equal(result.state.masks[n], m, err_msg=n)
    assert result.sensitivity.criterion == criterion
    assert_same_outputs(result.model, zero_weights(model, want), feeds=feeds(data))


@pytest.mark.parametrize("criterion", ALL)
def test_iterative_schedule_ranks_each_round_by_the_criterion(small, criterion):
    model, data = small
    reader = open_data(data, model, batch_size=32)
    inv = find_prunable(model)
    targets = {w.name: 0.5 for w in inv.prunable}
    want, scorer = expected_masks(model, reader, criterion, targets)  # one round: ranked on the dense model
    out, masks, history = iterative_prune(model, inv, targets, reader, iterations=1, epochs=0.5, lr=0.01,
                                          scoring=calibration_scoring(criterion, reader), device="cpu")
    for n in targets:
        np.testing.assert_array_equal(masks[n], want[n], err_msg=n)
    assert_exact_counts(masks, targets, scorer)
    onnx.checker.check_model(out, full_check=True)
    assert all(np.array_equal(masks_of(out, [n])[n] | ~masks[n], np.ones_like(masks[n])) for n in targets)
    assert_same_outputs(out, zero_weights(out, masks), feeds=feeds(data))

    out2, masks2, _ = iterative_prune(model, inv, {n: 0.8 for n in targets}, reader, iterations=2, epochs=0.5,
                                      lr=0.01, scoring=calibration_scoring(criterion, reader), device="cpu")
    assert_exact_counts(masks2, {n: 0.8 for n in targets}, scorer)
    assert_same_outputs(out2, zero_weights(out2, masks2), feeds=feeds(data))


@pytest.mark.parametrize("criterion", ALL)
def test_budget_search_ranks_by_the_criterion(small, criterion):
    model, data = small
    options = configure(max_loss=100.0, iterations=1, epochs=0.5, lr=0.01, criterion=criterion, data=data,
                           neurons=False, levels=(0.5, 0.8), seed=0, device="cpu")
    result = run(model, options)
    goal = result.history[0]["targets"]
    split = next(s for s in build_plan(options) if s.name == "data").split
    reader = Data(model, options.data, split=split).train_reader()
    want, scorer = expected_masks(model, reader, criterion, goal)
    for n, m in want.items():
        np.testing.assert_array_equal(result.state.masks[n], m, err_msg=n)
    assert_exact_counts(result.state.masks, goal, scorer)
    assert_same_outputs(result.model, zero_weights(result.dense_model, result.state.masks), feeds=feeds(data))


@pytest.mark.parametrize("criterion", ALL)
def test_sensitivity_scan_prunes_by_the_criterion_like_the_naive_oracle(small, criterion):
    model, data = small
    reader = open_data(data, model, batch_size=32)
    evaluator = Evaluator(reader, choose_metric(model, True, None), reference_model=model)
    inv = find_prunable(model)
    scoring = calibration_scoring(criterion, reader)
    fast = scan(model, inv, evaluator, (0.5, 0.9), scoring=scoring)
    slow = scan_naive(model, inv, evaluator, (0.5, 0.9), scoring=scoring)
    assert fast.criterion == slow.criterion == criterion
    for a, b in zip(fast.layers, slow.layers):
        np.testing.assert_allclose(a.values, b.values, atol=1e-9, err_msg=a.name)


def test_cli_takes_the_criterion_everywhere_and_refuses_bad_choices(small, tmp_path):
    model, data = small
    path, npz = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(model, path)
    np.savez(npz, **data)
    runner = CliRunner()
    res = runner.invoke(cli, ["sensitivity", str(path), "--data", str(npz), "--levels", "0.5", "--criterion",
                              "wanda", "--json"])
    assert res.exit_code == 0, res.output
    assert '"criterion": "wanda"' in res.output
    res = runner.invoke(cli, ["prune", str(path), "-o", str(tmp_path / "o.onnx"), "--sparsity", "0.5",
                              "--criterion", "obd"])
    assert res.exit_code == 2 and "--criterion obd scores weights on calibration data; pass --data" in res.output
    res = runner.invoke(cli, ["prune", str(path), "-o", str(tmp_path / "o.onnx"), "--sparsity", "0.5",
                              "--criterion", "snip"])
    assert res.exit_code == 2 and "is not one of magnitude, obd, taylor, wanda" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(cli, ["prune", str(path), "-o", str(tmp_path / "o.onnx"), "--quality", "1.0",
                              "--criterion", "taylor", "--data", str(npz)])
    assert res.exit_code == 2 and "--quality is the paper's magnitude rule" in res.output
    res = runner.invoke(cli, ["prune", str(path), "-o", str(tmp_path / "o.onnx"), "--sparsity", "0.5",
                              "--criterion", "taylor", "--data", str(npz), "--report", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert load_recipe(tmp_path / "r" / "recipe.toml", None)["criterion"] == "taylor"


def test_recipes_round_trip_the_criterion(tmp_path):
    assert recipe_of(configure(sparsity=0.5))["criterion"] == "magnitude"  # every choice, the default too
    path = dump_recipe(recipe_of(configure(sparsity=0.5, criterion="wanda")), tmp_path / "r.toml")
    assert load_recipe(path, None)["criterion"] == "wanda"
    with pytest.raises(ConfigError, match="not one of magnitude"):
        configure(sparsity=0.5, criterion="nope").validate()


# ---- OBD and Taylor: gradients against plain torch ------------------------------------------------------------

def torch_lenet(model):
    """The lenet5_like graph written by hand in torch, weights from the initializers."""
    p = {t.name: torch.tensor(onnx.numpy_helper.to_array(t), dtype=torch.float64, requires_grad=True)
         for t in model.graph.initializer}

    def forward(x):
        x = F.max_pool2d(F.conv2d(x, p["conv1.weight"], p["conv1.bias"]), 2)
        x = F.max_pool2d(F.conv2d(x, p["conv2.weight"], p["conv2.bias"]), 2)
        x = F.relu(F.linear(x.flatten(1), p["fc1.weight"], p["fc1.bias"]))
        return F.linear(x, p["fc2.weight"], p["fc2.bias"])

    return p, forward


@pytest.mark.parametrize("labelled", [True, False])
def test_fisher_and_taylor_match_a_torch_reference(small, labelled):
    model, data = small
    x, y = torch.from_numpy(data["input"][:12]).double(), torch.from_numpy(data["labels"][:12])
    p, forward = torch_lenet(model)
    names = ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]
    src = {"input": data["input"][:12], **({"labels": data["labels"][:12]} if labelled else {})}
    reader = open_data(src, model, batch_size=4)
    stats = CalibrationStats(model, reader, gradients=gradient_statistics, seed=5)
    gen = torch.Generator().manual_seed(5)

    def loss(out, target):
        if target is None:  # the model's own distribution, drawn exactly as converter.gradients does
            target = torch.multinomial(F.softmax(out.detach(), -1), 1, generator=gen)[:, 0]
        return F.cross_entropy(out, target)

    fisher = {n: 0.0 for n in names}
    for i in range(12):
        g = torch.autograd.grad(loss(forward(x[i:i + 1]), y[i:i + 1] if labelled else None), [p[n] for n in names])
        for n, gi in zip(names, g):
            fisher[n] = fisher[n] + gi ** 2 / 12
    taylor = {n: 0.0 for n in names}
    gen.manual_seed(5)  # each statistic draws its own stream from the seed
    for b in range(3):
        xb = x[4 * b:4 * b + 4]
        g = torch.autograd.grad(loss(forward(xb), y[4 * b:4 * b + 4] if labelled else None), [p[n] for n in names])
        for n, gi in zip(names, g):
            taylor[n] = taylor[n] + (gi * p[n]).abs().detach() / 3
    inv = find_prunable(model).by_name()
    for n in names:
        f = stats.fisher(inv[n])
        assert float(np.abs(f).max()) > 0, n
        np.testing.assert_allclose(f, fisher[n].detach().numpy(), rtol=2e-3, atol=1e-9 * f.max(), err_msg=n)
        t = stats.taylor(inv[n])
        np.testing.assert_allclose(t, taylor[n].numpy(), rtol=2e-3, atol=1e-9 * t.max(), err_msg=n)
        w = weight_array(model, n).astype(np.float64)
        obd = Scorer("obd", model=model, stats=stats).scores(n, weight_array(model, n))
        np.testing.assert_allclose(obd, 0.5 * f * w ** 2, rtol=1e-12)


@pytest.mark.parametrize("criterion", ALL)
def test_the_automatic_search_ranks_by_the_criterion_in_every_phase(criterion, monkeypatch):
    """`--max-loss` without --one-shot or --iterations: the one-shot start, the rounds' and the refit's global
    levels all rank by --criterion, its statistics (a data-driven one's) taken once on the dense model."""
    import onnxprune.calibration.allocate as allocate
    import onnxprune.converter.auto.recovery as recovery
    import onnxprune.converter.auto.search as search

    model = builders.lenet5_like(conv_channels=(3, 4), fc_units=12, seed=1)
    x = np.random.default_rng(0).random((400, 1, 28, 28), dtype=np.float32)
    seen, starts = [], []
    real_global, real_pruned = search.global_masks, allocate.pruned_model

    def spy_global(weights, masks, keep, scorer=None):
        seen.append(scorer)
        return real_global(weights, masks, keep, scorer)

    def spy_pruned(m, sparsities, scorer=None):
        starts.append((dict(sparsities), scorer))
        return real_pruned(m, sparsities, scorer)

    monkeypatch.setattr(search, "global_masks", spy_global)
    monkeypatch.setattr(recovery, "global_masks", spy_global)
    monkeypatch.setattr(allocate, "pruned_model", spy_pruned)
    options = configure(max_loss=5.0, criterion=criterion, data={"input": x}, time_budget=15, seed=0, device="cpu",
                        neurons=False)
    result = run(model, options)
    assert result.report["criterion"] == criterion
    assert seen and starts  # the search pruned past its start, by the run's scorer
    for scorer in seen + [s for _, s in starts]:
        assert scorer.criterion.name == criterion
        assert (scorer.stats is not None) == CRITERIA[criterion].needs_data
    # the start's masks are the criterion's, ranked on the dense model with statistics of the training part
    step = next(s for s in build_plan(options) if s.name == "data")
    reader = Data(model, options.data, split=step.split, small_data=step.small_data).train_reader()
    sparsities = starts[-1][0]
    start = real_pruned(model, sparsities, starts[-1][1])
    want, _ = expected_masks(model, reader, criterion, {n: s for n, s in sparsities.items() if s > 0})
    for n, m in want.items():
        np.testing.assert_array_equal(weight_array(start, n) != 0, m & (weight_array(model, n) != 0), err_msg=n)
    assert_same_outputs(result.model, zero_weights(result.dense_model, result.state.masks),
                        feeds=[{"input": x[:8]}, {"input": x[8:16]}])


def test_gradient_statistics_of_time_major_feeds_take_each_feed_as_one_sample():
    """Per feed (axis 0 is time), the Fisher's per-sample gradients are per feed, never slices along time: with
    labels, the statistic over four feeds is the mean of the four single-feed statistics; CalibrationStats passes
    its reader's per-feed reading on."""
    from tests.passes.test_criteria import time_major_lstm

    model = time_major_lstm()
    rng = np.random.default_rng(0)
    feeds = [{"input": rng.standard_normal((5, 2, 8)).astype(np.float32)} for _ in range(4)]
    labels = [rng.integers(0, 3, 2) for _ in feeds]
    names = [w.name for w in find_prunable(model).prunable]

    def fisher(pairs, per_feed=True):
        return gradient_statistics(model, names, lambda: iter(pairs), kind="fisher", per_feed=per_feed)

    whole = fisher(list(zip(feeds, labels)))
    singles = [fisher([(f, y)]) for f, y in zip(feeds, labels)]
    for n in names:
        assert whole[n].shape == weight_array(model, n).shape
        np.testing.assert_allclose(whole[n], np.mean([one[n] for one in singles], axis=0), rtol=1e-6, atol=1e-12)
    stats = CalibrationStats(model, open_data(feeds, model), gradients=gradient_statistics)
    want = fisher([(f, None) for f in feeds])
    for w in find_prunable(model).prunable:
        np.testing.assert_allclose(stats.fisher(w), want[w.name], rtol=1e-6)


def test_gradient_statistics_reach_constant_node_weights_and_class_maps():
    """paddle2onnx keeps every weight in a Constant node: lifted on a copy, they get statistics (every rapidocr
    model was refused by obd); a class map ([N, H, W, C] softmax, MTCNN's P-Net) draws one class per position
    (torch.multinomial took only 1-2 dims: 'prob_dist must be 1 or 2 dim')."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.converter.test_finetune import as_constant_node

    model = as_constant_node(builders.mlp_gemm(seed=0), "fc1.weight")
    x = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    stats = CalibrationStats(model, open_data({"input": x}, model), gradients=gradient_statistics)
    inv = find_prunable(model).by_name()
    fisher = stats.fisher(inv["fc1.weight"])
    assert fisher.shape == (32, 16) and np.isfinite(fisher).all() and fisher.any()
    assert any(n.op_type == "Constant" for n in model.graph.node)  # the caller's model is left as it was

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "conv.weight")
    nodes = [helper.make_node("Conv", ["input", "conv.weight"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1], name="nhwc"),
             helper.make_node("Softmax", ["t"], ["output"], axis=-1, name="softmax")]
    vi = helper.make_tensor_value_info
    cmap = helper.make_model(helper.make_graph(nodes, "cmap", [vi("input", TensorProto.FLOAT, ["N", 2, 5, 5])],
                                               [vi("output", TensorProto.FLOAT, ["N", 5, 5, 3])], initializer=[w]),
                             opset_imports=[helper.make_operatorsetid("", 17)], ir_version=8)
    xs = rng.standard_normal((4, 2, 5, 5)).astype(np.float32)
    for kind in ("fisher", "taylor"):
        got = gradient_statistics(cmap, ["conv.weight"], lambda: iter([({"input": xs}, None)]), kind=kind)
        assert got["conv.weight"].shape == (3, 2, 3, 3) and np.isfinite(got["conv.weight"]).all()


def test_a_gradient_criterion_on_a_graph_the_bridge_cannot_run_names_the_ops_and_the_fix():
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "fc.weight")
    nodes = [helper.make_node("Gemm", ["input", "fc.weight"], ["h"], transB=1, name="fc"),
             helper.make_node("Binarizer", ["h"], ["output"], domain="ai.onnx.ml", threshold=0.5, name="bin")]
    vi = helper.make_tensor_value_info
    model = helper.make_model(helper.make_graph(nodes, "g", [vi("input", TensorProto.FLOAT, ["N", 4])],
                                                [vi("output", TensorProto.FLOAT, ["N", 3])], initializer=[w]),
                              opset_imports=[helper.make_operatorsetid("", 17),
                                             helper.make_operatorsetid("ai.onnx.ml", 1)], ir_version=8)
    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    stats = CalibrationStats(model, open_data({"input": x}, model), gradients=gradient_statistics)
    with pytest.raises(ConfigError, match=r"--criterion obd takes gradients through the torch bridge, which cannot "
                                          r"run Binarizer \(ai.onnx.ml\); use --criterion magnitude or wanda"):
        stats.fisher(find_prunable(model).by_name()["fc.weight"])
