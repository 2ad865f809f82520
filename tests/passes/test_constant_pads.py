"""passes/constant_pads.py: a Pad's pads computed from constants become one initializer."""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.models.third_party_builders import causal_tcn
from onnxprune.passes.base import PruneState
from onnxprune.passes.constant_pads import ConstantPads, computed_pads
from onnxprune.passes.weights import find_prunable
from tests.oracle import assert_same_outputs, check_full, run


def _causal_conv(x, w, b, left, dilation=1):
    xp = np.pad(x, ((0, 0), (0, 0), (left, 0)))
    k = w.shape[2]
    t = xp.shape[2] - dilation * (k - 1)
    return np.stack([np.einsum("nck,ock->no", xp[:, :, s: s + dilation * (k - 1) + 1: dilation], w) for s in range(t)],
                    axis=2) + b[None, :, None]


def test_a_pad_whose_pads_a_constant_chain_computes_reads_one_initializer_with_the_same_outputs():
    """Sweep 24's TCN (torch legacy F.pad): the Convs behind such a Pad had MACs "unknown", and the channel analysis
    blocked every channel through it ("has pads, axes or a value that are not constants")."""
    model = causal_tcn(seed=0)
    check_full(model)
    assert sorted(computed_pads(model)) == ["/b0/Cast_output_0", "/b1/Cast_output_0"]
    folded = ConstantPads()(copy.deepcopy(model), PruneState()).model
    # onnxruntime's symbolic inference counts the MACs through the chain (6 steps of 72 weights), the fold keeps them
    macs = {w.name: w.macs for w in find_prunable(model).prunable}
    assert macs == {w.name: w.macs for w in find_prunable(folded).prunable} and macs["c1.weight"] == 6 * 72
    check_full(folded)
    inits = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    assert inits["/b0/Cast_output_0"].tolist() == [0, 0, 2, 0, 0, 0]
    assert inits["/b1/Cast_output_0"].tolist() == [0, 0, 4, 0, 0, 0]
    assert [n.op_type for n in folded.graph.node] == ["Pad", "Conv", "Relu", "Pad", "Conv", "Relu", "Gather", "Gemm"]
    assert_same_outputs(folded, model, rtol=1e-6)
    x = np.random.default_rng(1).standard_normal((3, 3, 6)).astype(np.float32)
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    h = np.maximum(_causal_conv(x, w["c1.weight"], w["c1.bias"], 2), 0)
    h = np.maximum(_causal_conv(h, w["c2.weight"], w["c2.bias"], 4, dilation=2), 0)[:, :, -1]
    np.testing.assert_allclose(run(folded, {"x": x})["logits"], h @ w["head.weight"].T + w["head.bias"], rtol=1e-4,
                               atol=1e-5)
    assert {w.name: w.macs for w in find_prunable(folded).prunable} == {"c1.weight": 6 * 72, "c2.weight": 6 * 192,
                                                                        "head.weight": 32}


def test_pads_read_from_the_data_stay_computed():
    model = causal_tcn(seed=0)
    cast = next(n for n in model.graph.node if n.output[0] == "/b0/Cast_output_0")
    model.graph.node.insert(0, onnx.helper.make_node("Shape", ["x"], ["x_shape"], name="shape"))
    model.graph.node.insert(1, onnx.helper.make_node("Add", [cast.input[0], "x_shape_pad"], ["data_pads"], name="add"))
    model.graph.node.insert(1, onnx.helper.make_node("Concat", ["x_shape", "x_shape"], ["x_shape_pad"], name="cat",
                                                     axis=0))
    cast.input[0] = "data_pads"
    assert "/b0/Cast_output_0" not in computed_pads(model) and "/b1/Cast_output_0" in computed_pads(model)


def _framed(hop: int = 256) -> onnx.ModelProto:
    """x [1, samples] -> a layer over samples [1, samples, 8] -> Slice to frames = max(samples // hop, 1) (SwiftF0's
    frame count, computed from Shape(x) and cut with a Slice) -> [1, frames, 8]."""
    h = onnx.helper
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32), "w")
    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for v, n in
              (([1], "one_ax"), (1, "one"), (hop, "hop"), ([0], "zero"), ([1], "axis1"), ([2], "ax2"))]
    nodes = [
        h.make_node("Unsqueeze", ["x", "ax2"], ["x3"]), h.make_node("MatMul", ["x3", "w"], ["y"], name="layer"),
        h.make_node("Shape", ["x"], ["shape"]), h.make_node("Gather", ["shape", "one"], ["n"], axis=0),
        h.make_node("Div", ["n", "hop"], ["q"]), h.make_node("Max", ["q", "one"], ["frames"]),
        h.make_node("Unsqueeze", ["frames", "zero"], ["end"]),
        h.make_node("Slice", ["y", "zero", "end", "axis1"], ["out"]),
    ]
    graph = h.make_graph(nodes, "framed", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, "samples"])],
                         [h.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, "frames", 8])], [w, *consts])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def test_a_slice_bound_computed_from_a_free_length_stays_computed():
    """Real models 52: SwiftF0 cuts its frames at max(samples // 256, 1) from Shape(audio). That chain gave 1 for
    each placeholder length (1, 2, 3), so it was folded to a Slice end of 1 and the model written ("the input model
    is kept", parity passed on the load passes' rewrite) returned one frame of every clip where the input returns 62.
    The bound stays computed: the model gives the input model's outputs in onnxruntime at every length."""
    model = _framed()
    check_full(model)
    folded = ConstantPads()(copy.deepcopy(model), PruneState()).model
    check_full(folded)
    assert [n.op_type for n in folded.graph.node] == [n.op_type for n in model.graph.node]
    rng = np.random.default_rng(2)
    for samples in (100, 700, 16000):
        x = rng.standard_normal((1, samples)).astype(np.float32)
        got, want = run(folded, {"x": x})["out"], run(model, {"x": x})["out"]
        assert got.shape == want.shape == (1, max(samples // 256, 1), 8)
        np.testing.assert_array_equal(got, want)


def test_an_input_model_kept_unpruned_is_written_as_given_though_its_rewrite_is_smaller(tmp_path):
    """Real models 52: SwiftF0 was kept unpruned and the load passes' rewrite, a smaller file (a chain folded), was
    written in its place; a fold defect (above) made that file return one frame a clip while the run said "the input
    model is kept". A kept input model with nothing shrunk is written as given, its bytes, whatever the sizes."""
    import json

    from tests.hardening.helpers import invoke

    model = causal_tcn(seed=0)
    folded = ConstantPads()(copy.deepcopy(model), PruneState()).model
    assert folded.ByteSize() < model.ByteSize()  # the rewrite is the smaller file
    path, out = tmp_path / "tcn.onnx", tmp_path / "out.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(4).standard_normal((8, 3, 6)).astype(np.float32)
    np.savez(tmp_path / "few.npz", x=x)  # 8 samples cannot certify 1 pp: the input model is kept
    res = invoke("prune", path, "-o", out, "--data", tmp_path / "few.npz", "--max-loss", "1", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["budget"]["kept_input"] and out.read_bytes() == path.read_bytes()
    assert any(n.startswith("the input model is written as it was given: nothing was pruned, and its outputs stay "
                            "the input's bit for bit") for n in report["notes"]), report["notes"]
    written = onnx.load(out)
    check_full(written)
    np.testing.assert_array_equal(run(written, {"x": x})["logits"], run(model, {"x": x})["logits"])


def test_a_load_pass_that_changes_the_outputs_is_caught_before_any_work(tmp_path, monkeypatch):
    """Real models 52's L2: the load passes' rewrite is every later step's reference (the search's metric, the
    parity check's oracle), so SwiftF0's wrong fold passed "verified, max abs diff 0" on itself. The read check runs
    the input as given beside the model as read on a few rows of the data: with the fold's old placeholders (1, 2,
    3), which made this model's frame count 1, the run stops in one line naming the output and writes nothing; with
    the fold as it is, the report holds the read check's figure."""
    import json

    from onnxprune.passes import constant_weights
    from tests.hardening.helpers import invoke

    model = _framed()
    path, out = tmp_path / "framed.onnx", tmp_path / "out.onnx"
    onnx.save(model, path)
    np.savez(tmp_path / "clip.npz", x=np.random.default_rng(3).standard_normal((1, 700)).astype(np.float32))
    args = ("prune", path, "-o", out, "--data", tmp_path / "clip.npz", "--sparsity", "0.5", "--json")
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["read_check"]["max_abs_diff"] == 0.0
    out.unlink()
    monkeypatch.setattr(constant_weights, "PLACEHOLDERS", (1, 2, 3))  # the defect real models 52 fixed
    res = invoke(*args)
    assert res.exit_code != 0 and not out.exists(), res.output
    line = json.loads(res.stdout)["error"]["message"]
    assert line.startswith("the model as onnxprune read it") and "output 'out' has shape (1, 1, 8) as onnxprune " \
        "read it, (1, 2, 8) expected" in line and "onnxprune defect" in line, line
    assert "Traceback" not in res.output


def test_a_run_without_data_checks_the_model_as_read_on_a_random_input(tmp_path):
    """Without --data the read check runs the input and the model as read on one random input at the run's chosen
    shapes (the parity check's own kind of input), and says so in report.json."""
    import json

    from tests.hardening.helpers import invoke

    path, out = tmp_path / "tcn.onnx", tmp_path / "out.onnx"
    onnx.save(causal_tcn(seed=0), path)
    res = invoke("prune", path, "-o", out, "--sparsity", "0.5", "--json")
    assert res.exit_code == 0, res.output
    read = json.loads(res.stdout)["read_check"]
    assert read["inputs"] == "random" and read["batches"] == 1 and read["max_abs_diff"] == 0.0
