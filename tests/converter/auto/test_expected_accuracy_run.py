"""--metric expected_accuracy end to end without labels: the automatic search (small data: the layer-wise refit and
its per-layer phase), the one-shot search, the sensitivity scan, where the metric goes on a model of several outputs,
and the error on an output that holds no classes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from onnxprune.calibration.metrics import metric_plan
from onnxprune.calibration.runtime import make_session
from onnxprune.converter import api
from onnxprune.converter.cli import cli
from onnxprune.models import builders
from onnxprune.models import third_party_builders as tb
from tests.oracle import assert_same_outputs


@pytest.fixture(scope="module")
def confident(tmp_path_factory):
    """A LeNet-300-100-like classifier made confident (its last layer x40: median top probability ~0.9) and 1,000
    unlabelled random images (250 train, 750 decide: label-free, every 4th sample trains; steps/data.decision_split)."""
    model = builders.lenet300_like(hidden=(32, 16), seed=7)
    for t in model.graph.initializer:
        if t.name.startswith("fc3"):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 40.0, t.name))
    x = np.random.default_rng(2).random((1000, 1, 28, 28), dtype=np.float32)
    folder = tmp_path_factory.mktemp("expected")
    onnx.save(model, folder / "m.onnx")
    np.savez(folder / "d.npz", input=x)
    return model, x, folder


@pytest.fixture(scope="module")
def searched(confident):
    model, x, folder = confident
    return api.prune(model, data={"input": x}, output=folder / "out.onnx", max_loss=0.0, metric="expected_accuracy",
                     time_budget=60, seed=0)  # ends early when every layer is at its smallest step


def test_label_free_search_judges_by_expected_accuracy_and_keeps_the_outputs(confident, searched):
    model, x, folder = confident
    report = searched.report
    scored = report["metrics"]["sets"]["calibration"]["outputs"]["logits"]
    assert scored["metric"] == "expected_accuracy" and "right class" in scored["one_pp"]
    p = make_session(model).run(None, {"input": x[np.arange(len(x)) % 4 != 0]})[0]  # the decision set
    p = np.exp(p - p.max(1, keepdims=True))
    assert scored["before"] == pytest.approx(float((p.max(1) / p.sum(1)).mean()), rel=1e-5)  # mean confidence
    decision = report["auto"]["decision"]
    assert report["budget"]["met"] and decision["within"] and report["compression"] > 1.2
    # the Evaluator's whole-set loss is the rule's mean; the rule's margin is its own SE (max(0 pp, 1 SE))
    assert decision["loss_pp"] == pytest.approx(scored["loss_pp"], abs=1e-5)
    assert decision["limit_pp"] == pytest.approx(decision["se_pp"]) and decision["better"] == 0
    assert "calibrated" in report["auto"]["rule"]
    assert any(h["phase"] == "reconstruct-layer" for h in report["history"])  # the stricter per-layer rule ran
    written = onnx.load(folder / "out.onnx")
    onnx.checker.check_model(written, full_check=True)
    assert_same_outputs(written, searched.dense_model, feeds=[{"input": x[:16]}, {"input": x[500:503]}])
    assert_same_outputs(searched.model, searched.dense_model, feeds=[{"input": x[900:964]}])


def test_one_shot_search_and_the_sensitivity_scan_take_expected_accuracy(confident, tmp_path):
    _, x, folder = confident
    one = api.prune(str(folder / "m.onnx"), data=str(folder / "d.npz"), output=tmp_path / "o.onnx", max_loss=0.5,
                    one_shot=True, metric="logits=expected_accuracy", threads=1)
    report = one.report
    assert "auto" not in report and report["budget"]["met"] and report["compression"] > 1.0
    assert report["metrics"]["outputs"]["logits"]["metric"] == "expected_accuracy"
    # the one-shot fit decides by the rule: the paired loss plus one standard error within the budget
    budget, decision = report["budget"], report["budget"]["decision"]
    assert report["metrics"]["loss_pp"] <= 0.5 + 1e-9 and decision["within"]
    assert budget["limit_pp"] == pytest.approx(0.5 - decision["se_pp"], abs=1e-6)  # an upper bound within 0.5
    written = onnx.load(tmp_path / "o.onnx")
    onnx.checker.check_model(written, full_check=True)
    assert_same_outputs(written, one.dense_model, feeds=[{"input": x[:8]}, {"input": x[600:601]}])
    res = CliRunner().invoke(cli, ["sensitivity", str(folder / "m.onnx"), "--data", str(folder / "d.npz"),
                                   "--metric", "expected_accuracy", "--levels", "0.5,0.95", "--limit", "200", "--json"])
    assert res.exit_code == 0, res.output
    scan = json.loads(res.output)
    p = make_session(onnx.load(folder / "m.onnx")).run(None, {"input": x[:200]})[0]
    p = np.exp(p - p.max(1, keepdims=True))
    assert scan["metric"] == "expected_accuracy"
    assert scan["dense"] == pytest.approx(100 * float((p.max(1) / p.sum(1)).mean()), rel=1e-5)  # mean confidence
    for layer in scan["layers"]:  # pruning a layer harder moves more classes, each costing its probability
        assert scan["dense"] >= layer["values"][0] >= layer["values"][1], layer["name"]


def test_a_bare_kind_goes_to_the_class_output_and_an_output_without_classes_is_refused(tmp_path):
    detector = tb.two_head_detector()  # 'boxes' [N, 4] first, 'scores' softmax [N, 2]
    plan = metric_plan(detector, False, "expected_accuracy")
    assert list(plan.items())[0] == ("scores", "expected_accuracy") and plan["boxes"] == "auto"
    onnx.save(tb.regressor(), tmp_path / "r.onnx")  # 'value' [N, 1]
    np.savez(tmp_path / "d.npz", input=np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32))
    res = CliRunner().invoke(cli, ["prune", str(tmp_path / "r.onnx"), "-o", str(tmp_path / "o.onnx"), "--sparsity",
                                   "0.5", "--data", str(tmp_path / "d.npz"), "--metric", "expected_accuracy"])
    assert res.exit_code == 1, res.output
    assert "Error: expected_accuracy scores an [N, classes] output" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o.onnx").exists()
