"""A mean judged in its own scale (`--metric MEAN=scaled@S`, sweep 56's L1 and channels 58's L1): a mixture density
network's `mu` in units of its `sigma`, pi-weighted; a Gaussian head's mean in units of its log-variance's sigma."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune.calibration import metric_choice
from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.output_metrics import METRICS, ScaleOf, split_threshold
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.converter.auto.decide import PER_SAMPLE, BudgetRule
from onnxprune.errors import ConfigError
from onnxprune.models import third_party_builders as tb


def _shifted(model: onnx.ModelProto, name: str, delta: float) -> onnx.ModelProto:
    """The model with `delta` added to initializer `name` (a layer's bias: every sample's value moves by it)."""
    moved = onnx.ModelProto()
    moved.CopyFrom(model)
    for i, t in enumerate(moved.graph.initializer):
        if t.name == name:
            moved.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) + np.float32(delta),
                                                                        name))
    return moved


def _numpy_mdn(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    h = np.maximum(x @ w["fc1.weight"] + w["fc1.bias"], 0)
    logits = h @ w["pi.weight"] + w["pi.bias"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {"pi": e / e.sum(axis=1, keepdims=True), "mu": h @ w["mu.weight"] + w["mu.bias"],
            "sigma": np.exp(h @ w["sig.weight"] + w["sig.bias"])}


def test_a_mixtures_means_are_judged_in_units_of_their_sigma_weighted_by_pi(caplog):
    """Sweep 56's MDN kept `mu` within 0.31% of its own size at 23.6x and its held-out NLL rose by 0.044 nats: a
    relative error does not see a move of a tenth of a sigma where sigma is small. scaled@sigma,pi judges it so."""
    model = tb.mixture_density()
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).uniform(-1, 1, (256, 1)).astype(np.float32)
    sess = make_session(model, optimize=False)
    got = dict(zip(["pi", "mu", "sigma"], sess.run(None, {"x": x})))
    for name, want in _numpy_mdn(model, x).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-6, err_msg=name)
    assert metric_choice.scale_pairs(model) == {"mu": "scaled@sigma,pi"}

    delta = 0.1 * float(np.median(got["sigma"]))  # every mean moves by a tenth of a typical sigma
    moved = _shifted(model, "mu.bias", delta)
    mu2 = make_session(moved, optimize=False).run(["mu"], {"x": x})[0]
    np.testing.assert_allclose(mu2, got["mu"] + np.float32(delta), rtol=1e-5, atol=1e-6)
    z = np.minimum(1.0, np.abs(mu2.astype(np.float64) - got["mu"]) / got["sigma"])
    want = 100 * ((z * got["pi"]).sum(axis=1) / got["pi"].sum(axis=1)).mean()
    assert 5 < want < 30  # a tenth of a sigma, more where a component is sure, less where it is not

    def evaluator(spec):
        return Evaluator(open_data({"x": x}, model, batch_size=64), spec, model)

    scaled = evaluator("mu=scaled@sigma,pi")
    assert scaled.plan == {"pi": "auto", "mu": "scaled@sigma,pi", "sigma": "auto"} or \
        list(scaled.plan) == ["pi", "mu", "sigma"]  # the scale and the weights scored too, by their own kinds
    assert scaled.plan["mu"] == "scaled@sigma,pi"
    assert scaled.loss_pp(scaled.evaluate(moved)) == pytest.approx(want, rel=1e-6)
    assert scaled.last["mu"]["loss_pp"] == pytest.approx(want, rel=1e-6)
    assert scaled.last["sigma"]["loss_pp"] == 0.0 and scaled.last["pi"]["loss_pp"] == 0.0
    # the decision rule reads the same per-sample terms: its mean is the Evaluator's figure
    rule = BudgetRule(scaled, 1.0)
    decision = rule.judge(moved)
    assert decision.outputs["mu"]["loss_pp"] == pytest.approx(want, rel=1e-5) and not decision.within
    assert PER_SAMPLE["scaled@sigma,pi"].parts == ("change in sigma",)

    with caplog.at_level(logging.WARNING, logger="onnxprune.calibration.metrics"):
        plain = evaluator(None)  # main's reading: within 1 pp, and a note naming the flag
    assert plain.plan["mu"] == "rel_l2" and plain.loss_pp(plain.evaluate(moved)) < 1.0
    assert "--metric mu=scaled@sigma,pi" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="onnxprune.calibration.metrics"):
        evaluator("mu=rel_l2")  # named by the user: no note
    assert "scaled@" not in caplog.text


def test_a_gaussian_heads_mean_is_judged_in_the_sigma_of_its_log_variance():
    """A log-variance head has no Exp or Softplus: its name says what it is, and scaled@ reads it as one."""
    model = tb.gaussian_head(names=("mean", "log_var"), log_variance=True)
    onnx.checker.check_model(model, full_check=True)
    assert metric_choice.scale_pairs(model) == {"mean": "scaled@log_var"}
    assert split_threshold("scaled@log_var") == ("scaled", ScaleOf("log_var", "logvar"))
    rng = np.random.default_rng(1)
    ref, lv = rng.normal(0, 3, (50, 4)), rng.normal(-2, 1, (50, 4))
    out = ref + 0.05 * rng.normal(0, 1, ref.shape)
    want = np.minimum(1, np.abs(out - ref) / np.exp(0.5 * lv)).mean(axis=1)
    for kind, scale in (("scaled@log_var", lv), ("scaled@sd:s", np.exp(0.5 * lv)), ("scaled@var:v", np.exp(lv)),
                        ("scaled@logsd:l", 0.5 * lv)):
        terms, counts = METRICS[kind].terms(out, ref, None, others=(scale,))
        np.testing.assert_allclose(terms[:, 0], want, rtol=1e-9, err_msg=kind)
        assert counts.tolist() == [1] * 50
    bad = ref.copy()
    bad[3, 1] = np.nan  # a NaN that moved loses its sample
    terms, _ = METRICS["scaled@log_var"].terms(bad, ref, None, others=(lv,))
    assert terms[3, 0] == 1.0 and terms[np.arange(50) != 3, 0] == pytest.approx(0.0)
    x = rng.normal(0, 1, (64, 8)).astype(np.float32)
    ev = Evaluator(open_data({"input": x}, model, batch_size=32), "mean=scaled@log_var", model)
    assert ev.plan == {"mean": "scaled@log_var", "log_var": ev.plan["log_var"]} and ev.plan["log_var"] != "auto"
    assert ev.loss_pp(ev.evaluate(model)) == 0.0


def _forecaster(steps: int = 16) -> onnx.ModelProto:
    """A DeepAR-like head: x [N, 16, 3] -> 'loc' [N, 16] (x @ a) and 'scale' [N, 16] (Softplus(x @ b - 2) + 1e-3), a
    location and a scale for each step."""
    from onnx import TensorProto, helper

    a, b = np.array([[1.0], [0.5], [-0.3]], np.float32), np.array([[0.3], [0.2], [0.1]], np.float32)
    nodes = [helper.make_node("MatMul", ["x", "A"], ["l3"]), helper.make_node("Squeeze", ["l3", "ax"], ["loc"]),
             helper.make_node("MatMul", ["x", "B"], ["s3"]), helper.make_node("Add", ["s3", "shift"], ["s4"]),
             helper.make_node("Softplus", ["s4"], ["s5"]), helper.make_node("Squeeze", ["s5", "ax"], ["s6"]),
             helper.make_node("Add", ["s6", "eps"], ["scale"])]
    inits = [numpy_helper.from_array(a, "A"), numpy_helper.from_array(b, "B"),
             numpy_helper.from_array(np.array([2], np.int64), "ax"),
             numpy_helper.from_array(np.array(-2.0, np.float32), "shift"),
             numpy_helper.from_array(np.array(1e-3, np.float32), "eps")]
    graph = helper.make_graph(nodes, "deepar_head",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", steps, 3])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", steps]) for n in ("loc",
                                                                                                          "scale")],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_forecasters_scale_is_judged_as_values_not_by_its_argmax_over_the_steps(caplog):
    """A DeepAR-like forecaster's Softplus 'scale' [N, 48] was judged by the argmax over its 48 steps (`agreement`:
    which step is the least sure) on main; a scale beside its mean is values (rel_l2), and the run names scaled@."""
    model = _forecaster()
    x = np.random.default_rng(4).normal(0, 1, (64, 16, 3)).astype(np.float32)
    loc, scale = make_session(model, optimize=False).run(None, {"x": x})
    np.testing.assert_allclose(loc, x @ np.array([1.0, 0.5, -0.3], np.float32), rtol=1e-5, atol=1e-5)
    want = np.log1p(np.exp(x @ np.array([0.3, 0.2, 0.1], np.float32) - 2)) + 1e-3
    np.testing.assert_allclose(scale, want, rtol=1e-5, atol=1e-6)
    assert 0 < scale.min() and scale.max() < 1  # a positive output in [0, 1] rows not summing to 1: an argmax's
    assert metric_choice.auto_kinds({"loc": loc, "scale": scale}) == {"loc": "rel_l2", "scale": "agreement"}
    facts = metric_choice.graph_facts(model)
    assert facts["moments"] == {"loc", "scale"}
    assert metric_choice.auto_kinds({"loc": loc, "scale": scale}, **facts) == {"loc": "rel_l2", "scale": "rel_l2"}
    with caplog.at_level(logging.WARNING, logger="onnxprune.calibration.metrics"):
        ev = Evaluator(open_data({"x": x}, model, batch_size=32), None, model)
    assert ev.plan == {"loc": "rel_l2", "scale": "rel_l2"}
    assert "--metric loc=scaled@scale judges its change" in caplog.text
    # a mixture's sigmas 100x apart are components, not a forecast's variables: no `variables` note for them
    sigmas = {"sigma": np.exp(np.random.default_rng(5).normal(0, 0.1, (64, 3))) * np.array([1.0, 0.01, 0.1])}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="onnxprune.calibration.metric_choice"):
        assert metric_choice.auto_kinds(sigmas, moments={"sigma"}) == {"sigma": "rel_l2"}
    assert "sigma=variables" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="onnxprune.calibration.metric_choice"):
        metric_choice.auto_kinds(sigmas)
    assert "sigma=variables" in caplog.text


def test_scaled_is_refused_in_words_where_it_cannot_read_its_scale():
    model = tb.mixture_density()
    x = np.random.default_rng(0).uniform(-1, 1, (32, 1)).astype(np.float32)

    def evaluator(spec, m=model):
        return Evaluator(open_data({"x": x}, m, batch_size=16), spec, m)

    with pytest.raises(ConfigError, match="reads output 'nope' beside 'mu', which is not a graph output; .*pi, mu, "
                                          "sigma"):
        evaluator("mu=scaled@nope")
    with pytest.raises(ConfigError, match="'mu' itself"):
        evaluator("mu=scaled@mu")
    with pytest.raises(ConfigError, match="name the output holding the mean, e.g. --metric mu=scaled@sigma"):
        evaluator("scaled@sigma")
    with pytest.raises(ConfigError, match="unknown scale form 'foo'"):
        metric_choice.check_metric_spec(model, ["mu=scaled@foo:sigma"])
    with pytest.raises(ConfigError, match="pairs with no other kind"):
        metric_choice.check_metric_spec(model, ["mu=mask_iou@0.3+scaled@sigma"])
    head = tb.gaussian_head(names=("mean", "log_var"), log_variance=True)
    feeds = {"input": np.random.default_rng(2).normal(0, 1, (32, 8)).astype(np.float32)}
    lv = make_session(head, optimize=False).run(["log_var"], feeds)[0]
    assert (lv < 0).any()
    with pytest.raises(ConfigError, match="no standard deviation; if it holds a log-variance write "
                                          "scaled@logvar:log_var"):
        Evaluator(open_data(feeds, head, batch_size=16), "mean=scaled@sd:log_var", head)
    with pytest.raises(ConfigError, match=r"reads output 'x' \[4, 2\] beside a mean of \[4, 3\]"):
        METRICS["scaled@x"].terms(np.ones((4, 3)), np.ones((4, 3)), None, others=(np.ones((4, 2)),))


def test_the_docs_check_of_scaled_is_the_tools_figure():
    from tests.calibration.docs_checks import docs_function

    rng = np.random.default_rng(3)
    d, sigma = rng.normal(0, 2, (64, 5)), np.exp(rng.normal(-2, 1, (64, 5)))
    pi = rng.dirichlet(np.ones(5), 64)
    for y in (d + 0.01 * sigma * rng.normal(0, 1, d.shape), d * 1.01, d + 0.5):
        for kind, others, w in (("scaled@sigma", (sigma,), None), ("scaled@sigma,pi", (sigma, pi), pi)):
            metric = METRICS[kind]
            tool = 100 * (1 - metric.finish(*metric.batch(y, d, None, others=others)))
            assert docs_function("scaled_loss")(y, d, sigma, w) == pytest.approx(tool, rel=1e-9)
