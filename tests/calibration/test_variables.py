"""A forecast's variables judged each in its own scale (`variables`, rule 16 of metric_choice.auto_kinds), and rule
7's probabilities only where the graph can make them (real models 57's L2: a water forecaster's [N, 30, 5])."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.calibration import metric_choice
from onnxprune.calibration.metric_choice import auto_kinds
from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.output_metrics import METRICS, reference_scale
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.converter.auto.decide import PER_SAMPLE

STEPS, AHEAD, C = 12, 6, 4
# the variables' scales and offsets, MinMax-like: temperature, oxygen, pH (a small spread), discharge dipping below 0
SCALE = np.array([0.8, 0.5, 0.02, 0.6], np.float32)
OFFSET = np.array([0.1, 0.25, 0.6, -0.1], np.float32)


def forecaster(offset=OFFSET) -> onnx.ModelProto:
    """x [N, 12, inputs] -> 'forecast' [N, 6, 4]: each variable's next 6 steps, a weighted sum of its last 12
    (MatMul over the steps), scaled and offset per variable: no Sigmoid or Softmax anywhere."""
    w = np.linspace(0.0, 1.0, STEPS * AHEAD, dtype=np.float32).reshape(STEPS, AHEAD) / STEPS
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["xt", "W"], ["h"]),
             helper.make_node("Transpose", ["h"], ["ht"], perm=[0, 2, 1]),
             helper.make_node("Mul", ["ht", "S"], ["hs"]),
             helper.make_node("Add", ["hs", "B"], ["forecast"])]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(SCALE, "S"),
             numpy_helper.from_array(np.asarray(offset, np.float32), "B")]
    graph = helper.make_graph(nodes, "forecaster",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", STEPS, C])],
                              [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["N", AHEAD, C])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _series(n: int = 256, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, STEPS, C)).astype(np.float32)


def _expected(x: np.ndarray, offset=OFFSET) -> np.ndarray:
    w = np.linspace(0.0, 1.0, STEPS * AHEAD, dtype=np.float32).reshape(STEPS, AHEAD) / STEPS
    return np.einsum("nsc,sa->nac", x, w) * SCALE + offset


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(model, optimize=False).run(None, {"x": x})[0]


def test_a_forecasts_variables_of_different_scales_are_judged_each_in_its_own():
    """Real models 57's L2: a water forecaster's [N, 30, 5], MinMax-scaled values (four variables in [0, 1],
    discharge dipping below 0), was judged by rule 7 as probability channels (channel_prob; its own figure 2.6 pp
    held out against 0.86 claimed); judged by one rel_l2 it was pruned 34x while pH moved 7% of its own spread.
    Each variable is judged in its own scale now, and pH moved by a fifth of its spread is over 1 pp."""
    model, x = forecaster(), _series()
    y = _run(model, x)
    np.testing.assert_allclose(y, _expected(x), rtol=1e-5, atol=1e-6)
    assert y[..., 3].min() < 0 <= y[..., :3].min() and y[..., :3].max() <= 1  # what rule 7 read as probabilities
    facts = metric_choice.graph_facts(model)
    assert facts["unit_parts"] == frozenset() and facts["variables"] == {"forecast": C}
    assert auto_kinds({"forecast": y}) == {"forecast": "channel_prob"}  # no graph: as before
    assert auto_kinds({"forecast": y}, **facts) == {"forecast": "variables"}

    # the candidate moves pH by a fifth of its own spread (4% of its variance): one relative error hides it
    spread = np.sqrt(np.square(y - y.mean(axis=0))[..., 2].mean())
    shifted = OFFSET + np.array([0.0, 0.0, 0.2 * spread, 0.0], np.float32)
    moved = forecaster(shifted)
    y2 = _run(moved, x)
    np.testing.assert_allclose(y2, _expected(x, shifted), rtol=1e-5, atol=1e-6)

    def loss(kind: str) -> float:
        evaluator = Evaluator(open_data({"x": x}, model, batch_size=64), f"forecast={kind}", model)
        return evaluator.loss_pp(evaluator.evaluate(moved))

    assert loss("rel_l2") < 0.3 and loss("channel_prob") < 1.0  # the old readings: within a 1 pp budget
    assert 3.5 < loss("variables") < 4.5
    evaluator = Evaluator(open_data({"x": x}, model, batch_size=64), None, model)
    assert evaluator.plan == {"forecast": "variables"}
    assert evaluator.loss_pp(evaluator.evaluate(moved)) == pytest.approx(loss("variables"))
    # the decision rule's per-sample form has the Evaluator's figure as its mean (worst part)
    per_sample = PER_SAMPLE["variables"].fn(y2, y, None)
    assert 100 * per_sample.mean(axis=0).max() == pytest.approx(loss("variables"), rel=1e-6)


def test_variables_reads_each_variable_as_rel_l2_reads_an_output():
    rng = np.random.default_rng(1)
    ref = np.stack([rng.normal(0, 1, (200, 10)), 7.4 + rng.normal(0, 0.05, (200, 10)),
                    500 + rng.normal(0, 100, (200, 10))], axis=2).astype(np.float32)
    metric = METRICS["variables"]
    for c in range(3):  # one variable alone is rel_l2 of that variable, both parts
        out = ref.copy()
        out[..., c] += 0.03 * ref[..., c].std() * rng.normal(0, 1, (200, 10)).astype(np.float32)
        alone = METRICS["rel_l2"]
        want = alone.finish(*alone.batch(out[..., c], ref[..., c], None, reference_scale(alone, [ref[..., c]])))
        got = metric.finish(*metric.batch(out, ref, None, reference_scale(metric, [ref])))
        assert got == pytest.approx(want, rel=1e-6)
    scale = reference_scale(metric, [ref])
    assert scale.shape == (6,) and scale[4] == pytest.approx(np.sqrt(10) * ref[..., 1].std(axis=0).mean(), rel=0.05)
    # a variable of no spread is held by its relative error alone; a NaN that moved loses its sample
    flat = ref.copy()
    flat[..., 1] = 7.4
    assert reference_scale(metric, [flat])[4] == 0.0
    bad = flat.copy()
    bad[0, 0, 1] = np.nan
    terms, _ = metric.terms(bad, flat, None)
    assert terms[0].min() >= 1.0 and terms[1:].max() == 0.0
    # [N, variables] (a next step) reads its columns; [N, C, H, W] its axis 1
    assert metric.terms(ref[:, 0] * 1.01, ref[:, 0], None)[0][:, 0] == pytest.approx(0.01, rel=1e-4)
    maps = rng.normal(0, 1, (8, 3, 5, 5)).astype(np.float32)
    maps[:, 2] *= 100
    nudged = maps.copy()
    nudged[:, 0] *= 1.05
    assert metric.terms(nudged, maps, None)[0][:, 0] == pytest.approx(0.05, rel=1e-4)


def test_rule_7_reads_channels_in_0_1_as_probabilities_only_where_the_graph_can_make_them(caplog):
    """A detector's Concat of box offsets and sigmoid scores keeps channel_prob; a forecaster of values whose
    variables are alike in scale keeps rel_l2, with a note naming --metric OUTPUT=variables."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 12, 3)).astype(np.float32)
    w = (np.eye(3) * 0.9).astype(np.float32)
    b = np.array([-0.05, 0.05, 0.05], np.float32)  # channel 0 dips below 0, channels 1 and 2 stay in [0, 1]

    def model(nodes, inits):
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12, 3])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12, 3])],
                                  [numpy_helper.from_array(v, k) for k, v in inits.items()])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m, full_check=True)
        return m

    def kind(m):
        (y,) = make_session(m, optimize=False).run(None, {"x": x})
        return auto_kinds({"y": y}, **metric_choice.graph_facts(m))["y"], y

    plain = model([helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])],
                  {"W": w, "B": b})
    with caplog.at_level(logging.WARNING, logger="onnxprune.calibration.metric_choice"):
        chosen, y = kind(plain)
    np.testing.assert_allclose(y, x @ w + b, rtol=1e-5, atol=1e-6)
    assert auto_kinds({"y": y}) == {"y": "channel_prob"}  # no graph: as before
    assert chosen == "rel_l2" and metric_choice.probability_parts(plain) == frozenset()
    assert "--metric y=variables" in caplog.text
    detector = model([helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["a"]),
                      helper.make_node("Split", ["a", "S"], ["box", "logit"], axis=2),
                      helper.make_node("Sigmoid", ["logit"], ["score"]),
                      helper.make_node("Mul", ["box", "K"], ["pix"]),
                      helper.make_node("Concat", ["pix", "score"], ["y"], axis=2)],
                     {"W": w, "B": b, "S": np.array([2, 1], np.int64), "K": np.array(320.0, np.float32)})
    chosen, y = kind(detector)
    want = np.concatenate([(x @ w + b)[..., :2] * 320, 1 / (1 + np.exp(-(x @ w + b)[..., 2:]))], axis=2)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    assert chosen == "channel_prob" and metric_choice.probability_parts(detector) == {"y"}


def test_the_docs_check_of_variables_is_the_tools_figure():
    from tests.calibration.docs_checks import docs_function

    rng = np.random.default_rng(2)
    d = np.stack([rng.normal(0, 1, (64, 5)), 0.6 + rng.normal(0, 0.01, (64, 5)), rng.gamma(2.0, 1.0, (64, 5))],
                 axis=2).astype(np.float32)
    for moved in (d * 1.001, d + np.float32(0.002) * rng.normal(0, 1, d.shape).astype(np.float32)):
        metric = METRICS["variables"]
        tool = 100 * (1 - metric.finish(*metric.batch(moved, d, None)))
        assert docs_function("variables_loss")(moved, d) == pytest.approx(tool, rel=1e-5)
