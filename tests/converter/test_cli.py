import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxprune.converter import modelio
from onnxprune.converter.cli import cli
from onnxprune.models import builders
from onnxprune.passes.weights import find_prunable
from tests.oracle import assert_same_outputs


@pytest.fixture
def mlp_path(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(builders.lenet300_like(hidden=(64, 32)), path)
    return path


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_inspect_json_lists_layers_totals_and_skipped(mlp_path):
    res = invoke("inspect", mlp_path, "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert [r["op"] for r in info["layers"]] == ["Gemm"] * 3
    assert info["totals"]["params"] == 784 * 64 + 64 * 32 + 32 * 10
    assert info["totals"]["density"] == 1.0
    assert {s["reason"].split(" ")[0] for s in info["skipped"]} == {"bias"}


def test_inspect_table_names_every_layer(mlp_path):
    res = invoke("inspect", mlp_path)
    assert res.exit_code == 0
    for w in find_prunable(onnx.load(mlp_path)).prunable:
        assert w.name in res.output


def test_inspect_marks_a_tied_weight_and_names_bit_identical_copies(tmp_path):
    from onnxprune.models import builders

    onnx.save(builders.tied_cell(steps=3), tmp_path / "tied.onnx")
    res = invoke("inspect", tmp_path / "tied.onnx")
    assert res.exit_code == 0, res.output
    assert "cell0 +2" in res.output and "bit-identical" not in res.output
    onnx.save(builders.tied_cell(steps=3, copies=True), tmp_path / "copies.onnx")
    info = json.loads(invoke("inspect", tmp_path / "copies.onnx", "--json").output)
    assert info["copies"] == [{"weight": "cell.W.0", "copies": 3}]
    assert [r["readers"] for r in info["layers"]] == [1, 1, 1, 1, 1]
    res = invoke("inspect", tmp_path / "copies.onnx")
    assert "'cell.W.0' x3; prune merges each into one tied weight" in res.output
    assert info["transposed_copies"] == []
    from onnxprune.models.third_party_builders import tied_lm

    onnx.save(tied_lm(form="legacy"), tmp_path / "lm.onnx")  # session 43: the head stores the table transposed
    info = json.loads(invoke("inspect", tmp_path / "lm.onnx", "--json").output)
    assert info["transposed_copies"] == [{"weight": "emb.weight", "copy": "head.weight_t"}]
    assert "'head.weight_t' = 'emb.weight' transposed; prune reads" in invoke("inspect", tmp_path / "lm.onnx").output


def test_inspect_prints_lowercase_symbolic_dims_and_a_calibration_line_numpy_1_runs(tmp_path):
    """Newcomer sweep: tf2onnx's input 'image' [unk__1031, 32, 32, 3] printed as 'image float32 ' (rich took the
    shape for a style tag), and a bool input's example used np.bool, which numpy 1.24-1.26 lack."""
    model = builders.mlp_gemm()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "unk__1031"
    mask = onnx.helper.make_tensor_value_info("mask", onnx.TensorProto.BOOL, ["batch", 16])
    model.graph.input.append(mask)
    model.graph.node.append(onnx.helper.make_node("Identity", ["mask"], ["mask_out"], name="mask_id"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("mask_out", onnx.TensorProto.BOOL, ["batch", 16]))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, tmp_path / "m.onnx")
    res = invoke("inspect", tmp_path / "m.onnx")
    assert res.exit_code == 0, res.output
    assert "inputs: input float32 [unk__1031, 16]; mask bool [batch, 16]" in res.output
    assert "mask_out bool [batch, 16]" in res.output
    assert "np.bool_)" in res.output and "np.bool)" not in res.output


def test_prune_writes_a_verified_sparse_model(mlp_path, tmp_path):
    out = tmp_path / "small.onnx"
    before = modelio.sha256_file(mlp_path)
    res = invoke("prune", mlp_path, "-o", out, "--sparsity", "0.9", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["compression"] == pytest.approx(10.0, rel=0.01)
    assert report["parity"]["max_abs_diff"] <= 1e-5
    assert modelio.sha256_file(mlp_path) == before
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    assert out.stat().st_size < mlp_path.stat().st_size / 2
    # oracle: the input with exactly the weights the report says were kept
    dense = modelio.load_model(out).model
    assert_same_outputs(written, dense, rtol=0)


def test_prune_with_layer_overrides_and_exclude(mlp_path, tmp_path):
    out = tmp_path / "o.onnx"
    res = invoke("prune", mlp_path, "-o", out, "--layer", "fc1*=0.95", "--exclude", "fc3*", "--json")
    assert res.exit_code == 0, res.output
    rows = {r["weight"]: r for r in json.loads(res.output)["layers"]}
    dens = sorted((k, round(v["density"], 3)) for k, v in rows.items())
    assert dens[0][1] == pytest.approx(0.05, abs=0.001) and dens[2][1] == 1.0


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["--sparsity", "1.5"], 2, "outside [0, 1)"),
        (["--sparsity", "0.5", "--quality", "1"], 2, "contradict"),
        ([], 2, "nothing to prune"),
        (["--layer", "fc1"], 2, "NAME=SPARSITY"),
        (["--sparsity", "0.5", "--exclude", "zzz"], 2, "matches no prunable layer"),
    ],
)
def test_bad_options_are_usage_errors_without_traceback(mlp_path, tmp_path, args, code, text):
    res = invoke("prune", mlp_path, "-o", tmp_path / "o.onnx", *args)
    assert res.exit_code == code, res.output
    assert text in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o.onnx").exists()


def test_not_an_onnx_file_is_one_line_and_exit_1(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    res = invoke("inspect", bad)
    assert res.exit_code == 1
    assert res.output.startswith("Error: ") and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_output_over_input_is_refused_and_input_untouched(mlp_path):
    before = modelio.sha256_file(mlp_path)
    res = invoke("prune", mlp_path, "-o", mlp_path, "--sparsity", "0.5")
    assert res.exit_code == 2 and "is the input model" in res.output
    assert modelio.sha256_file(mlp_path) == before


@pytest.mark.parametrize("location, output", [("m.onnx.data", "m.onnx.data"), ("b.onnx.data", "b.onnx")],
                         ids=["output-is-the-data-file", "output-sidecar-is-the-data-file"])
def test_output_over_the_inputs_external_data_is_refused_and_input_untouched(tmp_path, location, output):
    """Sweep 2: `-o model.onnx.data` (a tab completion away from the input) overwrote the input's external data and
    left the input model unloadable; an output whose data sidecar is the input's data file would do the same."""
    src = tmp_path / "m.onnx"
    onnx.save(builders.lenet300_like(hidden=(64, 32)), src, save_as_external_data=True, all_tensors_to_one_file=True,
              location=location, size_threshold=0)
    files = [src, tmp_path / location]
    before = [modelio.sha256_file(f) for f in files]
    res = invoke("prune", src, "-o", tmp_path / output, "--sparsity", "0.5")
    assert res.exit_code == 2 and "the input model's external data file" in res.output, res.output
    assert res.output.strip().splitlines()[-1].startswith("Error: output ") and "Traceback" not in res.output
    assert [modelio.sha256_file(f) for f in files] == before
    ok = invoke("prune", src, "-o", tmp_path / "other.onnx", "--sparsity", "0.5")
    assert ok.exit_code == 0, ok.output
    assert [modelio.sha256_file(f) for f in files] == before


def test_debug_lets_the_traceback_through(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"")
    res = CliRunner().invoke(cli, ["--debug", "inspect", str(bad)])
    plain = CliRunner().invoke(cli, ["inspect", str(bad)])
    # the traceback, and the exit code the error has without --debug (sweep 15: it was 1 for every error)
    assert "Traceback (most recent call last)" in res.output and "Traceback" not in plain.output
    assert res.exit_code == plain.exit_code == 1
    usage = CliRunner().invoke(cli, ["--debug", "prune", str(bad), "-o", str(tmp_path / "o.onnx"), "--sparsity", "1.5"])
    assert usage.exit_code == 2 and "Traceback (most recent call last)" in usage.output


def test_model_without_prunable_weights_says_so(tmp_path):
    g = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", 1, [1, 4])], [onnx.helper.make_tensor_value_info("y", 1, [1, 4])],
    )
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])
    m.ir_version = 8
    p = tmp_path / "relu.onnx"
    onnx.save(m, p)
    res = invoke("prune", p, "-o", tmp_path / "o.onnx", "--sparsity", "0.5")
    assert res.exit_code == 1 and "no prunable weights" in res.output


def test_weights_that_are_not_stored_tensors_are_named_in_the_refusal(tmp_path):
    """onnx's "light" test models fill every Conv weight with ConstantOfShape; a weight fed as a graph input is not
    stored either. The refusal says which weight comes from where, and what would make it prunable."""
    h = onnx.helper
    shape = h.make_tensor("shape", onnx.TensorProto.INT64, [4], [4, 3, 3, 3])
    fill = h.make_tensor("fill", onnx.TensorProto.FLOAT, [1], [0.1])
    g = h.make_graph(
        [h.make_node("ConstantOfShape", ["shape"], ["w"], name="fill_w", value=fill),
         h.make_node("Conv", ["x", "w"], ["y"], name="conv"),
         h.make_node("MatMul", ["f", "fed"], ["z"], name="mm")], "g",
        [h.make_tensor_value_info("x", 1, [1, 3, 8, 8]), h.make_tensor_value_info("f", 1, [1, 4]),
         h.make_tensor_value_info("fed", 1, [4, 2])],
        [h.make_tensor_value_info("y", 1, [1, 4, 6, 6]), h.make_tensor_value_info("z", 1, [1, 2])], initializer=[shape])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    p = tmp_path / "light.onnx"
    onnx.save(m, p)
    res = invoke("prune", p, "-o", tmp_path / "o.onnx", "--sparsity", "0.5")
    assert res.exit_code == 1 and "Traceback" not in res.output
    line = res.output.strip()
    assert "no prunable weights" in line and len(line.splitlines()) == 1
    assert "Conv 'conv' reads its weight 'w' from ConstantOfShape 'fill_w' (+1 more)" in line
    assert "export the model with its weights as initializers" in line
    assert not (tmp_path / "o.onnx").exists()
    # inspect says the same, and offers no calibration line: nothing to prune is nothing to calibrate (sweep 33's
    # export_params=False MLP was first shown an np.savez line of zeros for its weights)
    shown = invoke("inspect", p)
    assert shown.exit_code == 0 and "no prunable weights" in shown.output, shown.output
    assert "calibration data" not in shown.output and "np.savez" not in shown.output, shown.output
    assert json.loads(invoke("inspect", p, "--json").output)["npz_example"] is None
    from onnxprune.passes.weights import find_prunable

    assert "MatMul 'mm' reads its weight 'fed' from a graph input (fed at run time)" in find_prunable(m).computed
    # below IR 4 every initializer is a graph input too, the fill's shape among them (the shipped light models are
    # IR 3): the shape is still a constant, and the Conv's weight still one the graph computes
    m.graph.input.append(h.make_tensor_value_info("shape", onnx.TensorProto.INT64, [4]))
    m.ir_version = 3
    assert "Conv 'conv' reads its weight 'w' from ConstantOfShape 'fill_w'" in find_prunable(m).computed
    # attention's Q·K^T: a MatMul of two values computed from the data has no weight to list (sweep 13)
    g = h.make_graph(
        [h.make_node("Transpose", ["x2"], ["kt"], perm=[1, 0], name="t"),
         h.make_node("MatMul", ["x2", "kt"], ["scores"], name="qk")], "attention",
        [h.make_tensor_value_info("x2", 1, [4, 8])], [h.make_tensor_value_info("scores", 1, [4, 4])])
    attention = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    assert find_prunable(attention).computed == []


def test_cuda_without_gpu_is_a_usage_error_before_any_work(mlp_path, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    data = tmp_path / "d.npz"
    np.savez(data, input=np.zeros((4, 1, 28, 28), np.float32))
    res = invoke("prune", mlp_path, "-o", tmp_path / "o.onnx", "--sparsity", "0.5", "--data", data,
                 "--iterations", "1", "--device", "cuda")
    assert res.exit_code == 2 and "sees no GPU" in res.output
    assert not (tmp_path / "o.onnx").exists()


def test_summary_with_a_report_says_how_much_faster_the_output_runs(mlp_path, tmp_path):
    res = invoke("prune", mlp_path, "-o", tmp_path / "small.onnx", "--sparsity", "0.99", "--report", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("onnxruntime CPU latency"))
    document = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert "report" not in document, "report.json does not repeat itself under a nested key"
    for b in document["latency"]["batches"]:
        assert f"batch {b['batch']} " in line and f"({b['speedup']:.2f}x)" in line


def test_the_command_leaves_without_teardown_but_with_its_output_and_exit_code(mlp_path, tmp_path):
    """`python -m onnxprune` exits at once after its work (converter.cli._leave: unloading torch and onnxruntime
    took seconds of a --time-budget under load): the JSON is still complete on stdout, the model written, and a
    usage error still exits 2 with its one line."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"}
    out = tmp_path / "out.onnx"
    done = subprocess.run([sys.executable, "-m", "onnxprune", "prune", str(mlp_path), "-o", str(out),
                           "--sparsity", "0.5", "--json"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == str(out) and out.exists()
    bad = subprocess.run([sys.executable, "-m", "onnxprune", "prune", str(mlp_path), "-o", str(out), "--bogus"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    # click's own words: "No such option '--bogus'" (8.5), "No such option: --bogus" (8.1.0, 8.2.0)
    assert bad.returncode == 2 and "No such option" in bad.stderr and "--bogus" in bad.stderr


@pytest.mark.parametrize("given, read", [("1%", 1.0), ("0.5pp", 0.5), ("2", 2.0)])
def test_max_loss_reads_percent_and_pp_suffixes_and_names_the_form_otherwise(tmp_path, given, read):
    """Newcomer audit: `--max-loss 1%` was "'1%' is not a valid float" with no hint."""
    from onnxprune.converter.plan import parse_points

    assert parse_points(given) == read
    path = tmp_path / "m.onnx"
    onnx.save(builders.mlp_gemm(), path)
    res = CliRunner().invoke(cli, ["prune", str(path), "-o", str(tmp_path / "o.onnx"), "--max-loss", "one"])
    assert res.exit_code == 2 and "write e.g. --max-loss 1 (1 pp)" in res.output
    res = CliRunner().invoke(cli, ["prune", str(path), "-o", str(tmp_path / "o.onnx"), "--max-loss", given,
                                   "--data", "random", "--one-shot"])
    assert res.exit_code == 0, res.output
    assert ("read as" in res.output) == (given != "2")


def test_inspect_lists_parameters_held_in_node_attributes(tmp_path):
    """Sweep 17: a PCA + LogisticRegression pipeline (skl2onnx) listed its PCA matrix and never said where the
    classifier's coefficients were: LinearClassifier holds them in an attribute, which no pass prunes."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from onnxprune.converter.inspect import inspect_model

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "pca")
    nodes = [helper.make_node("MatMul", ["X", "pca"], ["z"]),
             helper.make_node("LinearClassifier", ["z"], ["label", "scores"], domain="ai.onnx.ml",
                              coefficients=[0.5] * 24, intercepts=[0.0] * 3, classlabels_ints=[0, 1, 2])]
    graph = helper.make_graph(nodes, "skl", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 8])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
                              ir_version=8)
    onnx.save(model, tmp_path / "skl.onnx")
    row = next(r for r in inspect_model(tmp_path / "skl.onnx")["skipped"] if r["name"].startswith("LinearClassifier"))
    assert row["size"] == 24 and "attribute 'coefficients'" in row["reason"] and "no pass prunes them" in row["reason"]


def test_a_recipe_without_a_budget_that_loses_much_says_so(tmp_path):
    """Sweep 21: a harsh hand recipe fell to chance accuracy and wrote its file with the loss only in the summary
    line. Without --max-loss, a run that loses more than UNBOUNDED_LOSS_PP of its metric says so in a note naming
    --max-loss; a gentle recipe, or a run with a budget, says nothing of it."""
    from onnxprune.models.paths import LENET300_ONNX, MNIST_SLICE

    harsh = invoke("prune", LENET300_ONNX, "-o", tmp_path / "h.onnx", "--sparsity", "0.995", "--data", MNIST_SLICE,
                   "--json")
    assert harsh.exit_code == 0, harsh.output
    report = json.loads(harsh.output[harsh.output.index("{"):])
    assert report["metrics"]["loss_pp"] > 5
    assert any("no --max-loss bounds it" in n for n in report["notes"])
    gentle = invoke("prune", LENET300_ONNX, "-o", tmp_path / "g.onnx", "--sparsity", "0.3", "--data", MNIST_SLICE,
                    "--json")
    assert gentle.exit_code == 0, gentle.output
    assert not any("no --max-loss" in n for n in json.loads(gentle.output[gentle.output.index("{"):])["notes"])


def test_inspect_says_why_macs_are_unknown_for_a_symbolic_sequence(tmp_path):
    """Sweep 25: a Hugging Face BERT ([batch, seq] inputs) showed MACs/sample 'unknown' on every MatMul and the total,
    with no word why."""
    from tests.passes import _graphs as G

    model = G.matmul_mlp()
    assert "unknown" not in invoke("inspect", _save(model, tmp_path / "fixed.onnx")).output
    for v in (*model.graph.input, *model.graph.output):
        v.type.tensor_type.shape.dim[1].dim_param = "seq"
    res = invoke("inspect", _save(model, tmp_path / "seq.onnx"))
    assert res.exit_code == 0, res.output
    assert "MACs/sample unknown for 2 of 2 layers" in " ".join(res.output.split())


def _save(model, path):
    onnx.save(model, path)
    return path


def test_inspect_says_a_loop_bodys_layers_run_once_an_iteration(tmp_path):
    """A scripted loop over a static input (sweep 27: LSTM cell over the 28 rows of [N, 28, 28]) was told its MACs
    were unknown because of "an input with a symbolic axis besides the batch", which it does not have."""
    from onnxprune.models.third_party_builders import cond_while_rnn

    onnx.save(cond_while_rnn(), tmp_path / "loop.onnx")
    res = invoke("inspect", tmp_path / "loop.onnx")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "MACs/sample unknown for 2 of 3 layers inside a Loop/Scan body: they run once an iteration" in text
    assert "symbolic axis" not in text
    info = json.loads(invoke("inspect", tmp_path / "loop.onnx", "--json").output)
    assert [r["in_loop"] for r in info["layers"]] == [False, True, True]


def test_inspect_says_ops_shape_inference_does_not_know_where_no_input_has_a_symbolic_axis(tmp_path):
    """onnxruntime's saved optimized ViT (input [N, 1, 28, 28], sweep 28) was told its MACs were unknown because of
    "an input with a symbolic axis besides the batch"; what stopped shape inference were its com.microsoft.nchwc ops.
    A model with a symbolic length is still told of it."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def model(shape, source="x"):
        nodes = [helper.make_node("Blocked", [source], ["b"], domain="com.example.layout", name="blocked"),
                 helper.make_node("MatMul", ["b", "W"], ["y"], name="fc")]
        if source != "x":
            nodes.insert(0, helper.make_node("Scaler", ["x"], [source], domain="ai.onnx.ml", name="scaler",
                                             offset=[0.0] * 8, scale=[1.0] * 8))
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "?", 4])],
                                  [numpy_helper.from_array(np.ones((8, 4), np.float32), "W")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3),
                                                       helper.make_opsetid("com.example.layout", 1)], ir_version=8)

    onnx.save(model(["N", 6, 8]), tmp_path / "blocked.onnx")
    text = " ".join(invoke("inspect", tmp_path / "blocked.onnx").output.split())
    assert ("MACs/sample unknown for 1 of 1 layers: shape inference gives no size for an axis of their input other "
            "than the batch (onnx's shape inference gives no sizes after com.example.layout.Blocked, on the way to "
            "them)") in text, text
    assert "symbolic axis" not in text
    info = json.loads(invoke("inspect", tmp_path / "blocked.onnx", "--json").output)
    assert info["foreign_ops"] == info["shape_stops"] == ["com.example.layout.Blocked"]
    # ai.onnx.ml's Scaler before it: onnx's own inference gives no sizes after a Scaler, but the MACs' inference
    # (passes.shapes) passes through it, so the stop named is still the op the MACs' sizes stop at
    onnx.save(model(["N", 6, 8], "scaled"), tmp_path / "scaler.onnx")
    text = " ".join(invoke("inspect", tmp_path / "scaler.onnx").output.split())
    assert "(onnx's shape inference gives no sizes after com.example.layout.Blocked, on the way to them)" in text, text
    assert "Scaler" not in text.split("MACs/sample unknown")[1]
    onnx.save(model(["N", "S", 8]), tmp_path / "symbolic.onnx")  # a symbolic length: that is said
    text = " ".join(invoke("inspect", tmp_path / "symbolic.onnx").output.split())
    assert "an input with a symbolic axis besides the batch" in text


def test_inspect_names_the_if_branches_no_input_of_the_declared_shapes_can_take(tmp_path):
    """converter/coverage.static_conditions, said before any data: silero-vad's no-state LSTM branch (its state is
    declared [2, batch, 128]) never runs, and prune prunes what it shares with the branch that does."""
    from onnxprune.models.third_party_builders import scripted_lstm

    for static, want in ((True, ["If '/select'/else_branch"]), (False, [])):
        path = tmp_path / f"scripted_{static}.onnx"
        onnx.save(scripted_lstm(in_if=True, static_if=static), path)
        doc = json.loads(invoke("inspect", path, "--json").output)
        assert doc["dead_branches"] == want
        text = invoke("inspect", path).output
        assert ("1 If branch(es) can take no input of the shapes the model declares (If '/select'/else_branch"
                in text) == static


def test_inspects_numpy_line_sizes_a_dim_named_by_arithmetic_as_that_arithmetic(tmp_path):
    """torch dynamo's decoding step declares 'attention_mask' [N, P + 1] beside 'past' [N, 2, P, 16]: the
    line gives the mask P + 1 positions for the past's P, whichever input comes first."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["past", "W"], ["y"], name="fc"), helper.make_node("Identity", ["mask"], ["m"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", "P + 1"]),
                                           helper.make_tensor_value_info("past", TensorProto.FLOAT, ["N", 2, "P", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "P", 4]),
                               helper.make_tensor_value_info("m", TensorProto.INT64, ["N", "P + 1"])],
                              [numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    line = json.loads(invoke("inspect", tmp_path / "m.onnx", "--json").output)["npz_example"]
    assert "mask=np.zeros((64, 9), np.int64)" in line and "past=np.zeros((64, 2, 8, 4), np.float32)" in line, line
