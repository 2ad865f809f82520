"""Labels 0/1 for a binary classifier's one score a sample ([N, 1] or [N]): scored by accuracy (its side of 0.5 for
a probability, of 0 for a logit) and retrained with binary cross-entropy. Sweep 28's DLRM: the labels were ignored
("no output has the shape [N, classes]"), and once they were scored, `--iterations` with labels crashed in
cross-entropy ("Target 1 is out of bounds")."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import open_data
from onnxprune.errors import CalibrationError
from tests.oracle import assert_same_outputs, run


def binary_model(sigmoid: bool = True, seed: int = 0, name: str | None = None) -> onnx.ModelProto:
    """x [N, 8] -> Gemm 16 -> Relu -> Gemm 1 -> Sigmoid -> 'click' [N, 1]; without the Sigmoid 'click_logit'."""
    name = name or ("click" if sigmoid else "click_logit")
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 8)) / 3).astype(np.float32), "fc1.weight"),
             numpy_helper.from_array(np.zeros(16, np.float32), "fc1.bias"),
             numpy_helper.from_array((rng.standard_normal((1, 16)) / 4).astype(np.float32), "fc2.weight"),
             numpy_helper.from_array(np.zeros(1, np.float32), "fc2.bias")]
    last = name if not sigmoid else "logit"
    nodes = [helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], transB=1, name="/fc1/Gemm"),
             helper.make_node("Relu", ["h"], ["a"], name="/relu"),
             helper.make_node("Gemm", ["a", "fc2.weight", "fc2.bias"], [last], transB=1, name="/fc2/Gemm")]
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["logit"], [name], name="/sigmoid"))
    graph = helper.make_graph(nodes, "binary", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def labelled(model, n: int = 400, seed: int = 1) -> dict:
    """Inputs and the labels the model itself gives (so the dense accuracy is 100%), a tenth flipped."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    score = run(model, {"x": x})[model.graph.output[0].name][:, 0]
    y = (score > (0.5 if score.min() >= 0 and score.max() <= 1 else 0.0)).astype(np.int64)
    flip = rng.random(n) < 0.1
    return {"x": x, "labels": np.where(flip, 1 - y, y)}


@pytest.mark.parametrize("sigmoid", [True, False])
def test_labels_are_scored_by_the_scores_side_of_its_threshold(sigmoid):
    model = binary_model(sigmoid)
    data = labelled(model)
    ev = Evaluator(open_data(data, model, batch_size=64), None, model)
    out = model.graph.output[0].name
    assert ev.plan == {out: "accuracy"}
    score = run(model, {"x": data["x"]})[out][:, 0]
    want = float(((score > (0.5 if sigmoid else 0.0)).astype(np.int64) == data["labels"]).mean())
    assert ev.dense == pytest.approx(want) and 0.85 < want < 0.95


def test_a_plain_one_value_regression_keeps_ignoring_labels(caplog):
    """An [N, 1] output no Sigmoid makes and no class word names is a regression: labels are not scored on it."""
    model = binary_model(sigmoid=False, name="y")
    data = labelled(model)
    ev = Evaluator(open_data(data, model, batch_size=64), None, model)
    assert ev.plan["y"] != "accuracy"


def test_labels_other_than_0_and_1_for_one_score_a_sample_are_refused_clearly():
    model = binary_model()
    data = labelled(model)
    data["labels"] = data["labels"] * 3
    with pytest.raises(CalibrationError, match="one score a sample .* give labels 0 and 1"):
        Evaluator(open_data(data, model, batch_size=64), None, model)


@pytest.mark.parametrize("sigmoid", [True, False])
def test_retraining_with_labels_uses_binary_cross_entropy(sigmoid):
    from onnxprune.converter.pipeline import configure
    from onnxprune.converter.pipeline import run as run_pipeline

    model = binary_model(sigmoid)
    data = labelled(model)
    result = run_pipeline(model, configure(sparsity=0.5, iterations=1, epochs=1, lr=0.01, data=data, seed=0))
    losses = [h["train_loss"] for h in result.history if h.get("train_loss") is not None]
    assert losses and all(np.isfinite(losses)) and 0 < losses[0] < 1, result.history  # BCE near ln 2 or below
    assert result.report["metrics"]["metric"] == "accuracy"
    assert_same_outputs(result.model, result.dense_model, feeds=[{"x": data["x"][:16]}])


@pytest.mark.parametrize("shape", [(4,), (4, 1)])
def test_top5_on_one_score_a_sample_says_it_has_one_class(shape):
    from onnxprune.calibration.output_metrics import METRICS
    from onnxprune.errors import ConfigError

    out = np.random.default_rng(0).random(shape).astype(np.float32)
    with pytest.raises(ConfigError, match="top5 needs at least 5 classes; the output has 1"):
        METRICS["top5"].samples(out, out, np.array([0, 1, 0, 1]))


def test_a_probability_behind_an_if_takes_binary_labels():
    """openWakeWord's score leaves through If(Sigmoid | Identity of the Sigmoid): a probability by construction
    (metric_choice.probability_outputs), so 0/1 labels are scored on it."""
    from onnxprune.models import third_party_builders as tb

    model = tb.wake_word(name="out")
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    y = (run(model, {"input": x})["out"][:, 0] > 0.5).astype(np.int64)
    ev = Evaluator(open_data({"input": x, "labels": y}, model, batch_size=16), None, model)
    assert ev.plan == {"out": "accuracy"} and ev.dense == 1.0
