import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.calibration.metrics import Evaluator, choose_metric, output_error
from onnxprune.calibration.readers import open_data
from onnxprune.errors import CalibrationError, ConfigError
from onnxprune.models import builders


def linear(weight: np.ndarray):
    """out = input @ weight, input [N, K], out [N, C]: hand-checkable outputs."""
    k, c = weight.shape
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "W"], ["out"], name="mm")], "linear",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", k])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", c])],
                              initializer=[numpy_helper.from_array(weight.astype(np.float32), "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


IDENTITY = linear(np.eye(6))
X = np.array([[9, 0, 0, 0, 0, 0], [0, 9, 0, 0, 0, 0], [0, 0, 9, 0, 0, 0], [0, 0, 0, 9, 0, 0]], np.float32)
X += np.arange(6, dtype=np.float32)[None] * 0.1  # ranks after the winner: 5, 4, 3, ...


def evaluator(metric, labels=None, reference=IDENTITY, batch_size=3, **kw):
    feeds = {"input": X} if labels is None else {"input": X, "labels": np.array(labels)}
    return Evaluator(open_data(feeds, IDENTITY, batch_size=batch_size), metric, reference, **kw)


def test_accuracy_counts_top1_hits():
    ev = evaluator("accuracy", labels=[0, 1, 5, 3])
    assert ev.dense == pytest.approx(0.75)
    assert ev.evaluate(IDENTITY) == pytest.approx(0.75)
    assert ev.loss_pp(0.5) == pytest.approx(25.0)


def test_top5_counts_label_among_five_largest():
    # sample 0: scores 9, .1, .2, .3, .4, .5 -> top5 = {0, 5, 4, 3, 2}: class 1 is out; samples 1-3 leave out 0
    ev = evaluator("top5", labels=[1, 1, 1, 4])
    assert ev.dense == pytest.approx(0.75)


def test_agreement_against_dense_model():
    ev = evaluator("agreement")
    assert ev.dense == 1.0
    swapped = np.eye(6)[:, [1, 0, 2, 3, 4, 5]]  # class 0 and 1 swapped: samples 0 and 1 disagree
    assert ev.evaluate(linear(swapped)) == pytest.approx(0.5)


def test_rel_l2_is_one_minus_mean_relative_error():
    ev = evaluator("rel_l2")
    assert ev.dense == 1.0
    assert ev.evaluate(linear(1.1 * np.eye(6))) == pytest.approx(0.9, abs=1e-6)
    assert ev.evaluate(linear(3.0 * np.eye(6))) == 0.0  # floored at 0


def test_cosine_ignores_scale_and_floors_at_zero():
    ev = evaluator("cosine")
    assert ev.evaluate(linear(2.5 * np.eye(6))) == pytest.approx(1.0)
    assert ev.evaluate(linear(-np.eye(6))) == 0.0


def test_label_beyond_class_count_names_max_label_and_classes():
    with pytest.raises(CalibrationError, match="labels go up to 7 but the model has 6 classes"):
        evaluator("accuracy", labels=[0, 1, 7, 3])


def test_streamed_and_cached_evaluation_agree():
    cached = evaluator("accuracy", labels=[0, 1, 5, 3])
    streamed = evaluator("accuracy", labels=[0, 1, 5, 3], cache_bytes=0)
    assert streamed._cached is None and cached._cached is not None
    assert streamed.evaluate(IDENTITY) == cached.evaluate(IDENTITY)


def test_outputs_concatenates_the_scored_output():
    ev = evaluator("agreement", batch_size=3)
    np.testing.assert_allclose(ev.outputs(IDENTITY), X)


def test_evaluator_needs_labels_or_reference():
    with pytest.raises(ConfigError, match="needs labels"):
        evaluator("accuracy")
    with pytest.raises(ConfigError, match="dense model"):
        evaluator("rel_l2", reference=None)
    with pytest.raises(ConfigError, match="unknown metric 'f1'"):
        evaluator("f1")
    with pytest.raises(ConfigError, match="output 'nope'"):
        evaluator("agreement", output="nope")


def test_choose_metric_auto():
    lenet = builders.lenet5_like()  # logits [N, 10]
    assert choose_metric(lenet, has_labels=True) == "accuracy"
    assert choose_metric(lenet, has_labels=False) == "agreement"
    assert choose_metric(builders.conv_bn_relu(), has_labels=False) == "rel_l2"  # [N, 8, 8, 8] map
    assert choose_metric(builders.conv_bn_relu(), has_labels=True) == "rel_l2"
    assert choose_metric(np.zeros((4, 1)), has_labels=False) == "rel_l2"  # regression: one column
    assert choose_metric([np.zeros((4, 3))], has_labels=True) == "accuracy"  # first outputs


def test_choose_metric_override():
    lenet = builders.lenet5_like()
    assert choose_metric(lenet, True, "top5") == "top5"
    assert choose_metric(lenet, False, "cosine") == "cosine"
    with pytest.raises(ConfigError, match="unknown metric 'auc'.*accuracy, top5"):
        choose_metric(lenet, True, "auc")
    with pytest.raises(ConfigError, match="needs labels"):
        choose_metric(lenet, False, "accuracy")
    with pytest.raises(ConfigError, match="at least 5 classes"):
        choose_metric(np.zeros((2, 3)), True, "top5")


def test_output_error_known_values():
    b = np.array([[3.0, 4.0], [1.0, 0.0]])
    a = np.array([[3.0, 4.5], [0.0, 1.0]])
    err = output_error(a, b)
    assert err["max_abs"] == pytest.approx(1.0)
    assert err["max_rel"] == pytest.approx(np.sqrt(2))  # sample 1: ||(-1, 1)|| / ||(1, 0)||
    assert err["mean_rel"] == pytest.approx((0.5 / 5 + np.sqrt(2)) / 2)
    assert err["agreement"] == pytest.approx(0.5)
    assert output_error([a[:1], a[1:]], b)["max_abs"] == pytest.approx(1.0)
    assert output_error(np.ones((2, 3, 4)), np.ones((2, 3, 4)))["agreement"] is None
    with pytest.raises(ConfigError, match="cannot be compared"):
        output_error(a, b[:1])


def test_an_output_relating_the_samples_of_a_batch_keeps_its_batches_whole(caplog):
    """Sweep 17: CLIP's logits_per_image [N, N] scores each image against every text of its batch; the run cut
    batches into parts of 16 and claimed 0.50 pp that batches of 64 did not hold (5.0% of held-out images changed).
    Such a model is evaluated in its batches as read, and the run says the figures hold for that batch."""
    import logging

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from onnxprune.calibration.metrics import Evaluator, relating_outputs
    from onnxprune.calibration.readers import open_data

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["e"]), helper.make_node("Transpose", ["e"], ["et"]),
         helper.make_node("MatMul", ["e", "et"], ["logits_per_image"])], "clip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits_per_image", TensorProto.FLOAT, ["N", "N"])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert relating_outputs(model) == ["logits_per_image"]
    data = open_data({"x": rng.standard_normal((64, 4)).astype(np.float32)}, model, batch_size=64)
    with caplog.at_level(logging.WARNING):
        ev = Evaluator(data, None, model, split=16)
    assert [np.asarray(r[0]).shape for r in ev.reference_all] == [(64, 64)]  # one batch of 64, not four of 16
    assert "relate the samples of a batch" in caplog.text and "batches of 64" in caplog.text


def test_an_output_declared_with_the_batch_twice_that_runs_with_it_once_relates_no_samples(caplog):
    """Sweep 58: torch legacy's export of diffusers' AutoencoderKL declares 'recon' [N, 1, N, W] where onnxruntime
    returns [N, 1, 28, 28]; the run warned that 'recon' related the samples of a batch and kept its batches of 64
    whole. An output whose axes declared with the batch do not all have the batch's size when the input model runs
    the data's first batch relates none: no warning, batches cut as for any per-sample output, the same figures."""
    import logging

    from onnx import TensorProto, helper, numpy_helper

    from onnxprune.calibration.metrics import Evaluator, relating_outputs
    from onnxprune.calibration.readers import open_data

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((2, 1, 1, 1)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["recon"])], "vae",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("recon", TensorProto.FLOAT, ["N", 2, "N", "recon_dim_3"])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert relating_outputs(model) == ["recon"]  # as declared
    x = rng.standard_normal((64, 1, 4, 4)).astype(np.float32)
    data = open_data({"x": x}, model, batch_size=64)
    with caplog.at_level(logging.WARNING):
        ev = Evaluator(data, "rel_l2", model, split=16)
    assert "relate the samples of a batch" not in caplog.text
    assert [np.asarray(r[0]).shape for r in ev.reference_all] == [(16, 2, 4, 4)] * 4  # four parts of 16, as run
    expected = np.einsum("oi,nihw->nohw", numpy_helper.to_array(w)[:, :, 0, 0], x)
    np.testing.assert_allclose(np.concatenate([np.asarray(r[0]) for r in ev.reference_all]), expected, rtol=1e-5,
                               atol=1e-6, err_msg="recon")
    assert ev.evaluate(model) == pytest.approx(ev.dense)  # the input model against itself: no loss


def test_streamed_batches_can_be_run_from_a_later_batch_on():
    """Sweep 17: a measurement resumed on more samples asks for the batches after those it has ([2, 3]); streamed data
    (over the cache budget) raised "streamed calibration batches can only be run in order". The batches before are
    read past, and the values are those of the same batches held in memory."""
    model = builders.mlp_gemm(in_features=16, hidden=(8,), out_features=4, seed=0)
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    streamed = Evaluator(open_data({"input": x}, model, batch_size=16), None, model, cache_bytes=1)
    cached = Evaluator(open_data({"input": x}, model, batch_size=16), None, model)
    assert not streamed.cached and cached.cached
    sess = streamed.session(model)
    got = [v[0] for v in streamed.run_batches(sess, [2, 3])]
    want = [v[0] for v in cached.run_batches(sess, [2, 3])]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    with pytest.raises(CalibrationError, match="ascending order"):
        list(streamed.run_batches(sess, [3, 1]))


def _side_output_model() -> onnx.ModelProto:
    """An MLP that also exposes a wide feature map as a graph output (deep supervision's side outputs, ISNet's)."""
    model = builders.mlp_gemm(in_features=16, hidden=(32,), out_features=4, seed=0)
    hidden = next(n.output[0] for n in model.graph.node if n.op_type == "Relu")
    reps = numpy_helper.from_array(np.array([1, 64], np.int64), "reps")
    model.graph.initializer.append(reps)
    model.graph.node.append(helper.make_node("Tile", [hidden, "reps"], ["features"]))
    model.graph.output.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 2048]))
    return model


def test_outputs_too_large_to_hold_as_the_reference_are_refused_by_name(monkeypatch):
    """Real models 44: imgly's ISNet (1024x1024, twelve outputs of deep supervision, 119 MB a sample) grew the process
    past 12 GB holding the input model's outputs over 150 calibration pages, before its first candidate. After the
    first batch, outputs that would not fit in half the memory available are refused, the largest named, and the
    outputs that matter can be named instead: only those are held."""
    import onnxprune.calibration.metrics as metrics
    model = _side_output_model()
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == [model.graph.output[0].name, "features"]
    monkeypatch.setattr(metrics, "available_memory", lambda: 600 << 10)  # the features' 513 KB do not fit in half
    with pytest.raises(CalibrationError) as err:
        Evaluator(open_data({"input": x}, model, batch_size=16), None, model)
    text = str(err.value)
    assert "128.25 KB a batch of the data ('features' [16, 2048] 128.00 KB, 'output' [16, 4] 256 B)" in text
    assert "513.00 KB over its 4 batches" in text and "600.00 KB is available" in text
    assert "--metric OUTPUT=KIND" in text and "give fewer batches (about 2 fit)" in text
    first = model.graph.output[0].name
    ev = Evaluator(open_data({"input": x}, model, batch_size=16), {first: "rel_l2"}, model)
    assert [len(r) for r in ev.reference_all] == [1] * 4  # only the output named is held
    monkeypatch.setattr(metrics, "available_memory", lambda: None)  # unknown: nothing refused
    assert len(Evaluator(open_data({"input": x}, model, batch_size=16), None, model).reference_all[0]) == 2


def test_an_output_named_with_auto_keeps_the_automatic_choice():
    """Real models 44: the refusal of outputs too large to hold says to name the ones that matter; `--metric
    OUTPUT=auto` names one without choosing its kind (the CLI's early check refused `auto`)."""
    from onnxprune.calibration.metric_choice import check_metric_spec
    model = _side_output_model()
    first = model.graph.output[0].name
    check_metric_spec(model, [f"{first}=auto"])
    with pytest.raises(ConfigError, match="unknown metric 'f1'.*--metric OUTPUT=auto"):
        check_metric_spec(model, [f"{first}=f1"])
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    named = Evaluator(open_data({"input": x}, model, batch_size=16), [f"{first}=auto"], model)
    whole = Evaluator(open_data({"input": x}, model, batch_size=16), None, model)
    assert list(named.plan) == [first] and named.plan[first] == whole.plan[first] == "agreement"


def test_an_input_model_out_of_memory_is_said_as_such():
    """Real models 44: ISNet's dense pass ended "fails in onnxruntime ... (Cast 'graph_output_cast6': std::bad_alloc);
    check the data's shapes against the model's inputs": the shapes were right and memory had run out."""
    from onnxprune.calibration.metrics import _input_model_failed
    model = builders.mlp_gemm(in_features=16, hidden=(8,), out_features=4, seed=0)
    reader = open_data({"input": np.zeros((4, 16), np.float32)}, model, batch_size=1)
    exc = RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running "
                       "Cast node. Name:'graph_output_cast6' Status Message: std::bad_alloc")
    text = _input_model_failed(exc, reader, False, model)
    assert "ran out of memory" in text and "std::bad_alloc" in text and "data's shapes" not in text
    assert "--metric OUTPUT=KIND" in text
    shapes = _input_model_failed(RuntimeError("Got invalid dimensions for input"), reader, False, model)
    assert "data's shapes" in shapes and "ran out of memory" not in shapes


def _string_labels(weight: np.ndarray) -> onnx.ModelProto:
    """skl2onnx's classifier of string classes: `label` [N] (strings, ArgMax -> Gather of the class names) beside
    `probabilities` [N, C] (Softmax)."""
    k, c = weight.shape
    names = numpy_helper.from_array(np.array([f"class{j}" for j in range(c)], dtype=object), "names")
    nodes = [helper.make_node("MatMul", ["input", "W"], ["z"]),
             helper.make_node("Softmax", ["z"], ["probabilities"], axis=1),
             helper.make_node("ArgMax", ["z"], ["best"], axis=1, keepdims=0),
             helper.make_node("Gather", ["names", "best"], ["label"])]
    graph = helper.make_graph(nodes, "strlab", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", k])],
                              [helper.make_tensor_value_info("label", TensorProto.STRING, ["N"]),
                               helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", c])],
                              initializer=[numpy_helper.from_array(weight.astype(np.float32), "W"), names])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_string_label_output_is_scored_and_compared_row_by_row():
    """Sweep 40: scikit-learn's MLPClassifier fit on string classes ("zero" ... "nine") gives a string `label`;
    the check whether every sample gives the same outputs took a row's first element for the row ('str' object has no
    attribute 'shape': "step 'targets' failed"). Rows are compared whole, a string output's as the others'."""
    model = _string_labels(np.eye(6, 3))
    varied = Evaluator(open_data({"input": X}, model, batch_size=2), None, model)
    assert varied.plan == {"label": "exact", "probabilities": "prob"}
    assert not varied.constant
    same = np.repeat(X[:1], 4, axis=0)
    alike = Evaluator(open_data({"input": same}, model, batch_size=2), None, model)
    assert alike.constant
    out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["label"], {"input": X})
    assert out[0].tolist() == ["class0", "class1", "class2", "class2"]
