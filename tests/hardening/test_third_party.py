"""Third-party graphs that crashed with "internal error" (issue #13): each is a conversion or a one-line reason."""

import errno

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune.converter import modelio
from onnxprune.converter.verify import check_parity
from onnxprune.errors import ConfigError, ParityError
from onnxprune.models import third_party_builders as tb
from tests.hardening.helpers import assert_clean_error, invoke


@pytest.fixture
def sklearn(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(tb.sklearn_mlp(), path)
    np.savez(tmp_path / "calib.npz", input=np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32))
    return path, tmp_path / "calib.npz"


def test_unwritable_output_path_is_one_line_naming_it(sklearn):
    model, _ = sklearn
    res = invoke("prune", model, "-o", "/proc/pruned.onnx", "--sparsity", "0.5")
    assert_clean_error(res, 2, "/proc/pruned.onnx", "choose another -o")


def test_write_failure_after_the_checks_is_one_line(sklearn, tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(modelio.os, "replace", full)
    with pytest.raises(ConfigError, match="out.onnx' cannot be written \\(No space left on device\\)"):
        modelio.save_model(tb.sklearn_mlp(), tmp_path / "out.onnx")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temp file left


def test_zipmap_output_is_verified_by_value(sklearn, tmp_path):
    model, data = sklearn
    for extra in ([], ["--data", data]):
        res = invoke("prune", model, "-o", tmp_path / "out.onnx", "--sparsity", "0.5", *extra)
        assert res.exit_code == 0, res.output
    out = onnx.load(tmp_path / "out.onnx")
    parity = check_parity(out, _dense(out), None)
    assert parity.max_abs < 1e-5


def _dense(model):
    """The written model's own dense twin (sparse Constant values densified): the oracle of its parity."""
    oracle = onnx.ModelProto()
    oracle.CopyFrom(model)
    modelio.densify_sparse(oracle)
    return oracle


def test_zipmap_that_differs_is_named():
    model = tb.sklearn_mlp()
    other = onnx.ModelProto()
    other.CopyFrom(model)
    w = next(t for t in other.graph.initializer if t.name == "fc2.weight")
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.5, "fc2.weight"))
    with pytest.raises(ParityError, match="output '(output_probability|output_label)'"):
        check_parity(other, model, None)


def test_unwritable_report_and_scan_folders_are_one_line(sklearn):
    model, data = sklearn
    res = invoke("prune", model, "-o", model.with_name("out.onnx"), "--sparsity", "0.5", "--report", "/proc/rep")
    assert_clean_error(res, 2, "--report '/proc/rep' cannot be written")
    res = invoke("sensitivity", model, "--data", data, "-o", "/proc/scan")
    assert_clean_error(res, 2, "-o '/proc/scan' cannot be written")


def test_a_model_onnxruntime_refuses_to_load_is_named_by_its_own_sentence_without_cpp_locations(tmp_path):
    # valid ONNX (a batch-first GRU, layout=1) that onnxruntime's CPU kernels refuse at load time: the one line
    # carries onnxruntime's sentence, not its source file, C++ signature or failed check
    from onnxprune.models import builders_control

    model = builders_control.gru_classifier(features=4, hidden=6, steps=3, layout=1, seed=1)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, tmp_path / "gru.onnx")
    np.savez(tmp_path / "calib.npz", input=np.random.default_rng(0).standard_normal((16, 3, 4)).astype(np.float32))
    res = invoke("prune", tmp_path / "gru.onnx", "-o", tmp_path / "out.onnx", "--sparsity", "0.5",
                 "--data", tmp_path / "calib.npz")
    line = assert_clean_error(res, 1, "cannot load this model",
                              "Batchwise recurrent operations (layout == 1) are not supported")
    assert ".h:" not in line and "onnxruntime::" not in line and "was false" not in line, line
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_recurrent_node_with_its_optional_y_omitted_converts_and_loads(op, tmp_path):
    # exporters write the optional Y output as "" when only Y_h is used (onnx's own GRU/LSTM node tests do);
    # measuring Act% once exposed "" as a graph output and the run failed after a verified conversion
    import onnxruntime as ort

    from onnxprune.models import builders_control

    build = builders_control.gru_classifier if op == "GRU" else builders_control.lstm_classifier
    model = build(features=4, hidden=6, steps=3, out_features=3, seed=2, sequence_output=False)
    onnx.save(model, tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((32, 3, 4)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", input=x)
    res = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx", "--sparsity", "0.5",
                 "--data", tmp_path / "calib.npz")
    assert res.exit_code == 0, res.output
    out = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(out)
    rec = next(n for n in out.graph.node if n.op_type == op)
    assert rec.output[0] == ""
    w = numpy_helper.to_array(next(t for t in out.graph.initializer if t.name == rec.input[1])) \
        if any(t.name == rec.input[1] for t in out.graph.initializer) else None
    assert w is None or np.count_nonzero(w) < w.size  # pruned (stored dense) or moved to a sparse constant
    parity = check_parity(out, _dense(out), [{"input": x[:8]}, {"input": x[8:16]}])
    assert parity.max_abs < 1e-5
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    ort.InferenceSession((tmp_path / "out.onnx").as_posix(), so, providers=["CPUExecutionProvider"])


def test_parameters_held_in_node_attributes_are_named_in_the_refusal(tmp_path):
    # skl2onnx's LogisticRegression keeps its coefficients in LinearClassifier's attributes: the refusal said
    # "Largest seen: no weights at all" for a model with 640 parameters
    model = tb.linear_classifier(in_features=8, classes=3, seed=0)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, tmp_path / "lr.onnx")
    line = _refused_naming_attributes(tmp_path / "lr.onnx", "LinearClassifier 'LinearClassifier' (ai.onnx.ml) holds "
                                                            "24 values in its attribute 'coefficients'")
    # inspect, the first command a newcomer runs, says the same (it said only "No prunable weights (float weights
    # of Conv/ConvTranspose/Gemm/MatMul)", naming neither the attributes nor LSTM/GRU/RNN)
    shown = invoke("inspect", tmp_path / "lr.onnx")
    assert shown.exit_code == 0 and line.removeprefix("Error: ") in " ".join(shown.output.split())


def test_a_small_linear_models_attribute_coefficients_are_named_not_no_weights_at_all(tmp_path):
    """Sweep 32: skl2onnx's StandardScaler + Ridge on 10 features holds 10 coefficients in LinearRegressor's
    attributes, fewer than the 16 the refusal names: it said "Largest seen: no weights at all". It names the model's
    coefficients (before the Scaler's offsets, as many values) for a model that runs in onnxruntime."""
    import onnxruntime as ort

    model = tb.linear_regressor(in_features=6)
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    attrs = {n.op_type: {a.name: list(a.floats) for a in n.attribute} for n in model.graph.node}
    want = ((x - np.float32(attrs["Scaler"]["offset"])) * 0.5) @ np.float32(attrs["LinearRegressor"]["coefficients"])
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    np.testing.assert_allclose(got[:, 0], want + 0.3, rtol=1e-5, atol=1e-5)
    onnx.save(model, tmp_path / "ridge.onnx")
    _refused_naming_attributes(tmp_path / "ridge.onnx", "LinearRegressor 'LinearRegressor' (ai.onnx.ml) holds 6 "
                                                        "values in its attribute 'coefficients'")


def test_a_tree_ensembles_refusal_names_its_thresholds_not_its_hitrates_of_one_value(tmp_path):
    """Sweeps 24, 28, 30 and 54: onnxmltools' LightGBM models (a LambdaRank ranker in sweep 54) were refused naming
    "'nodes_hitrates'" as the attribute holding their parameters: all 1.0, written as long as the split thresholds.
    An attribute of one value throughout is named after one as large whose values vary: 'nodes_values'."""
    import onnxruntime as ort

    model = tb.tree_regressor()
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    assert ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"X": x})[0].shape == (4, 1)
    onnx.save(model, tmp_path / "lgbm.onnx")
    line = _refused_naming_attributes(tmp_path / "lgbm.onnx", "TreeEnsembleRegressor 'LgbmRegressor' (ai.onnx.ml) "
                                                              "holds 18 values in its attribute 'nodes_values'")
    assert "nodes_hitrates" not in line.split("(+")[0]


def _refused_naming_attributes(path, named: str) -> str:
    """`prune --sparsity 0.5` of a model whose parameters are node attributes: one clean line naming `named`, never
    "no weights at all", no file written; the line."""
    out = path.parent / "out.onnx"
    res = invoke("prune", path, "-o", out, "--sparsity", "0.5")
    line = assert_clean_error(res, 1, "has no prunable weights", named)
    assert "no weights at all" not in line
    assert not out.exists()
    return line


def _one_shot_budget(tmp_path, model, x):
    """`prune m.onnx -o out.onnx --max-loss 1 --one-shot --data calib.npz` on `model` and samples `x`; must succeed."""
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", input=x)
    res = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx", "--max-loss", "1", "--one-shot",
                 "--data", tmp_path / "calib.npz")
    assert res.exit_code == 0, res.output
    return res


def test_budgeted_run_on_a_gemm_whose_weight_is_the_a_operand_converts(tmp_path):
    # paddle2onnx/tf2onnx's Gemm(W, Transpose(x)): the one-shot scan probed the Transpose's output and
    # onnxruntime's fusion made the session fail: "step 'scan' failed … Failed to find node output"
    import onnxruntime as ort

    from onnxprune.models import builders

    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    _one_shot_budget(tmp_path, builders.transposed_gemm(seed=4), x)
    out = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(out)
    assert [n.op_type for n in out.graph.node if n.op_type in ("Gemm", "Transpose")].count("Gemm") == 2
    parity = check_parity(out, _dense(out), [{"input": x[i:i + 16]} for i in (0, 16, 32)])
    assert parity.max_abs < 1e-5
    ort.InferenceSession((tmp_path / "out.onnx").as_posix(), providers=["CPUExecutionProvider"])


def test_float16_model_one_shot_budget_keeps_float16_and_loads(tmp_path):
    # silero_vad_half.onnx is float32 inside; a model exported after .half() has float16 weights, inputs, outputs
    import onnxruntime as ort

    from onnxprune.models import builders

    model = builders.as_float16(builders.mlp_gemm(in_features=16, hidden=(24,), out_features=5, seed=6))
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(2).standard_normal((400, 16)).astype(np.float16)
    res = _one_shot_budget(tmp_path, model, x)
    assert "budget: measured loss" in res.output and ": met" in res.output
    written = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(written)
    dense = modelio.load_model(tmp_path / "out.onnx").model
    assert {numpy_helper.to_array(t).dtype for t in dense.graph.initializer} == {np.dtype(np.float16)}
    assert written.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    parity = check_parity(written, dense, [{"input": x[i:i + 32]} for i in (0, 32, 64)])
    assert parity.max_abs < 1e-3  # float16 outputs: one half-precision step of values O(1)
    ort.InferenceSession((tmp_path / "out.onnx").as_posix(), providers=["CPUExecutionProvider"])


def test_labels_are_scored_against_predicted_labels_when_no_output_holds_class_scores(tmp_path):
    """skl2onnx's classifier: output_label int64 [N] beside a ZipMap (sequence of maps). Labels were ignored ("no
    output has the shape [N, classes]"); they now score output_label by equality, and retraining distils."""
    import onnxruntime as ort

    from onnxprune.calibration.output_metrics import METRICS
    from onnxprune.converter.pipeline import configure, run

    model = tb.sklearn_mlp()
    x = np.random.default_rng(0).standard_normal((400, 4)).astype(np.float32)
    predicted = ort.InferenceSession(model.SerializeToString()).run(["output_label"], {"input": x})[0]
    labels = np.where(np.random.default_rng(1).random(400) < 0.1, (predicted + 1) % 3, predicted)
    result = run(model, configure(max_loss=1.0, data={"input": x, "labels": labels}, one_shot=True))
    scored = result.report["metrics"]["outputs"]
    assert scored["output_label"]["metric"] == "accuracy" and scored["output_probability"]["metric"] == "prob"
    dense = (predicted == labels).mean()  # the input model's own accuracy on these labels, as the tool reports it
    assert scored["output_label"]["before"] == pytest.approx(dense, abs=0.02)  # on the tool's part of the set
    terms, _ = METRICS["accuracy"].terms(np.array([1, 2, 0]), None, np.array([1, 0, 0]))
    assert terms[:, 0].tolist() == [1.0, 0.0, 1.0]
    from onnxprune.errors import CalibrationError

    with pytest.raises(CalibrationError, match="a batch has 2 labels for 3 output rows"):  # not "needs [N, classes]"
        METRICS["accuracy"].terms(np.array([1, 2, 0]), None, np.array([1, 0]))


def test_inspect_lists_a_weight_read_again_through_identities_as_prune_reads_it(tmp_path):
    """Real models 51: chython-rxnmap's transformer layers, each applied 8 times (legacy export: one W, read directly
    once and through an Identity per later use). inspect listed 20.9M of its 21.1M weights "not considered
    prunable: used in different ways"; prune bypasses those Identity nodes at load and pruned all 21.1M."""
    import onnxruntime as ort

    from onnxprune.converter.inspect import inspect_model

    model = tb.identity_shared_layer(uses=3, seed=2)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, tmp_path / "shared.onnx")
    info = inspect_model(tmp_path / "shared.onnx")
    assert [(r["weight"], r["params"]) for r in info["layers"]] == [("layer.weight", 64)]
    assert not any("layer.weight" in r["name"] for r in info["skipped"])
    res = invoke("prune", tmp_path / "shared.onnx", "-o", tmp_path / "out.onnx", "--sparsity", "0.5")
    assert res.exit_code == 0, res.output
    written = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(written, full_check=True)
    dense = modelio.load_model(tmp_path / "out.onnx").model
    kept = numpy_helper.to_array(next(t for t in dense.graph.initializer if t.name == "layer.weight"))
    assert np.count_nonzero(kept) == 32
    x = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    masked = onnx.load(tmp_path / "shared.onnx")  # the input model with prune's mask: what the file must compute
    for t in masked.graph.initializer:
        if t.name == "layer.weight":
            t.CopyFrom(numpy_helper.from_array(np.where(kept != 0, numpy_helper.to_array(t), 0), t.name))
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for m in (written, masked)]
    assert np.allclose(*(s.run(None, {"input": x})[0] for s in sessions), atol=1e-6)


def test_weights_read_inside_model_local_functions_are_pruned(tmp_path):
    """torch's export_modules_as_functions passes each block's weights into a local function call: inspect listed
    them as "used by DS" and prune left 29.2K of a CNN's 37.8K weights dense (sweep 18). They are inlined at load."""
    import onnxruntime as ort

    from onnxprune.converter.inspect import inspect_model

    model = tb.function_blocks(seed=3)
    onnx.save(model, tmp_path / "blocks.onnx")
    info = inspect_model(tmp_path / "blocks.onnx")
    assert {r["weight"] for r in info["layers"]} == {"block0.weight", "block1.weight", "head.weight"}
    assert info["inlined"] == ["Block"]
    res = invoke("prune", tmp_path / "blocks.onnx", "-o", tmp_path / "out.onnx", "--sparsity", "0.5")
    assert res.exit_code == 0, res.output
    assert "model-local function(s) ('Block') inlined" in res.output
    written = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(written, full_check=True)
    assert not written.functions and "__main__" not in {o.domain for o in written.opset_import}
    dense = modelio.load_model(tmp_path / "out.onnx").model
    block0 = numpy_helper.to_array(next(t for t in dense.graph.initializer if t.name == "block0.weight"))
    assert np.count_nonzero(block0) == block0.size // 2
    x = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for m in (written, dense)]
    assert np.allclose(*(s.run(None, {"input": x})[0] for s in sessions), atol=1e-6)


def test_ifs_the_declared_shapes_decide_inside_inlined_torch_lib_functions_are_folded_and_their_weights_pruned(
        tmp_path):
    """torch 2.1's dynamo export writes each Conv1d as onnxscript's `_aten_convolution_onnx`: an If on the input's
    rank against `Size(Shape(weight))`, and `If(transposed)` with a ConvTranspose and a Conv of the same weight; the
    Linear's `t` an If on the weight's rank. Inlined, every weight was read by a Shape and by ops in two branches:
    ThePitchDetect's pitch_detector.onnx had "no prunable weights" (real models 55). The Ifs the declared shapes
    decide are replaced by their branch at load; the model as read computes what the file does."""
    import onnxruntime as ort

    from onnxprune.converter.inspect import inspect_model

    model = tb.torch_lib_functions(seed=4)
    onnx.save(model, tmp_path / "lib.onnx")
    info = inspect_model(tmp_path / "lib.onnx")
    assert {r["weight"] for r in info["layers"]} == {"conv0.weight", "conv1.weight", "head.weight"}
    assert len(info["folded"]) == 7  # 3 Ifs in each convolution call, 1 in `t`
    loaded = modelio.load_model(tmp_path / "lib.onnx").model
    assert not [n for n in loaded.graph.node if n.op_type in ("If", "ConvTranspose", "Shape")]
    onnx.checker.check_model(loaded, full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 4, 16)).astype(np.float32)
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for m in (model, loaded)]
    assert np.allclose(*(s.run(None, {"arg0": x})[0] for s in sessions), atol=1e-6)
    res = invoke("prune", tmp_path / "lib.onnx", "-o", tmp_path / "out.onnx", "--sparsity", "0.5")
    assert res.exit_code == 0, res.output
    assert "always take one branch" in res.output
    written = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(written, full_check=True)
    dense = modelio.load_model(tmp_path / "out.onnx").model
    for name in ("conv0.weight", "head.weight"):
        w = numpy_helper.to_array(next(t for t in dense.graph.initializer if t.name == name))
        assert np.count_nonzero(w) == w.size // 2
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for m in (written, dense)]
    assert np.allclose(*(s.run(None, {"arg0": x})[0] for s in sessions), atol=1e-6)
