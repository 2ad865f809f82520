"""--neuron-sparsity / --neuron-layer / --crop-inputs through the pipeline (bad values: tests/hardening)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.calibration.runtime import make_session
from onnxprune.converter.pipeline import configure, run
from tests.converter._data import self_labelled
from tests.oracle import assert_same_outputs


@pytest.fixture(scope="module")
def teacher_data():
    """Self-labelled classifier data; the image border is blank, as in MNIST."""
    return self_labelled(blank_rows=3)


def hidden(report) -> dict[str, tuple[int, int]]:
    return {k: (v["before"], v["after"]) for k, v in report["neurons"]["layers"].items()}


def test_neuron_sparsity_removes_that_share_of_every_layer_and_stays_exact(teacher_data):
    model, data = teacher_data
    result = run(model, configure(sparsity=0.8, neuron_sparsity=0.5, iterations=2, epochs=1, lr=0.01,
                                     data=data, seed=0))
    assert hidden(result.report)["fc1.weight"] == (64, 32) and hidden(result.report)["fc2.weight"] == (32, 16)
    assert [h["neurons"] for h in result.history][-1] == {"Gemm '/fc1/Gemm'": 32, "Gemm '/fc2/Gemm'": 16,
                                                          "Gemm '/fc3/Gemm'": 10}
    assert result.history[0]["neurons"]["Gemm '/fc1/Gemm'"] > 32  # ramped on the schedule
    shapes = {t.name: tuple(t.dims) for t in result.model.graph.initializer}
    shapes.update({n.output[0]: tuple(a.t.dims) for n in result.model.graph.node if n.op_type == "Constant"
                   for a in n.attribute if a.name == "value"})
    assert result.report["params_after_shrink"] < 784 * 32 + 32 * 16 + 16 * 10 + 1
    assert_same_outputs(result.model, result.dense_model, feeds=[{"input": data["input"][:16]}])
    onnx.checker.check_model(result.model)


def test_neuron_layer_overrides_the_share_for_matching_layers(teacher_data):
    model, data = teacher_data
    result = run(model, configure(sparsity=0.5, neuron_sparsity=0.5, neuron_layers={"fc2*": 0.25},
                                     iterations=1, epochs=1, lr=0.01, data=data, seed=0))
    assert hidden(result.report)["fc1.weight"] == (64, 32) and hidden(result.report)["fc2.weight"] == (32, 24)


def test_budgeted_rounds_ramp_the_neuron_share(teacher_data):
    model, data = teacher_data
    result = run(model, configure(max_loss=100.0, neuron_sparsity=0.5, iterations=3, epochs=1, lr=0.01,
                                     data=data, levels=(0.3, 0.5), seed=0))
    fc1 = [h["neurons"]["Gemm '/fc1/Gemm'"] for h in result.history]
    assert fc1 == [64 - int(64 * 0.5 / 3 + 1e-9), 64 - int(64 * 0.5 * 2 / 3 + 1e-9), 32]
    assert hidden(result.report)["fc1.weight"] == (64, 32)


def test_crop_inputs_cuts_the_blank_border_and_keeps_the_outputs(teacher_data):
    model, data = teacher_data
    model = _without_border_weights(model, rows=3)  # as after training on blank borders with weight decay
    result = run(model, configure(sparsity=0.9, neuron_sparsity=0.5, iterations=1, epochs=1, lr=0.01,
                                     data=data, crop_inputs=True, reg_strength=0.0, seed=0))
    ops = [n.op_type for n in result.model.graph.node]
    assert "Slice" in ops and "Gather" not in ops
    assert result.report["neurons"]["layers"]["input"]["after"] == 22 * 28
    assert_same_outputs(result.model, result.dense_model, feeds=[{"input": data["input"][:16]}])
    assert [i.name for i in result.model.graph.input] == ["input"]


def _without_border_weights(model: onnx.ModelProto, rows: int) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name == "fc1.weight":
            w = onnx.numpy_helper.to_array(t).copy().reshape(-1, 28, 28)
            w[:, :rows, :] = w[:, -rows:, :] = 0.0
            t.CopyFrom(onnx.numpy_helper.from_array(w.reshape(-1, 784), t.name))
    return out


def test_a_residual_bn_cnn_loses_half_its_channels_through_retraining():
    """Bridge training, masks across the residual Add, removal and verification, end to end."""
    from tests.passes import _graphs as G

    model = G.residual()  # stem ─┬─ conv a ─ BN ─ Relu ─ conv b ─ Add ─ Relu ─ GAP ─ Gemm head
    x = np.random.default_rng(1).standard_normal((128, 3, 8, 8)).astype(np.float32)
    labels = make_session(model).run(None, {"x": x})[0].argmax(1).astype(np.int64)
    result = run(model, configure(sparsity=0.5, neuron_sparsity=0.5, iterations=2, epochs=1, lr=0.01,
                                     data={"x": x, "labels": labels}, seed=0))
    layers = hidden(result.report)
    assert layers["stem.weight"] == (8, 4) and layers["b.weight"] == (8, 4) and layers["a.weight"] == (8, 4)
    assert_same_outputs(result.model, result.dense_model, feeds=[{"x": x[:16]}])
    onnx.checker.check_model(result.model)


def test_layers_neuron_sparsity_cannot_touch_are_named_with_the_reason():
    """Sweep 21's LeViT (dynamo): `--neuron-sparsity 0.5` masked the neurons of 3 of its 51 layers; the other 48
    feed the attention heads' Reshape, which blocks their removal, and the run said nothing. Here the stem's
    channels pass a Reshape to [N, 2, 4, 64], two heads of 4 (it splits the channels): the stem keeps its 8 neurons, b
    loses half, and a note names the stem and the Reshape. (A Reshape to [N, 8, 64] keeps the channel axis whole since
    sweep 39: the stem's neurons go through it.)"""
    from tests.passes import _graphs as G

    g = G.G(seed=2)
    s = g.op("Relu", "stem_relu", [g.conv("x", "stem", 3, 8, 3, pad=1)])
    r = g.op("Reshape", "rows", [s, g.init("rows.shape", np.array([0, 2, 4, -1], dtype=np.int64))])
    s = g.op("Reshape", "back", [r, g.init("back.shape", np.array([0, 8, 8, 8], dtype=np.int64))])
    b = g.op("Relu", "b_relu", [g.conv(s, "b", 8, 8, 3, pad=1)])
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [b])]), "head", 8, 5)
    g.nodes[-1].output[0] = "y"
    model = g.model({"x": ["N", 3, 8, 8]}, {"y": ["N", 5]})
    x = np.random.default_rng(1).standard_normal((128, 3, 8, 8)).astype(np.float32)
    labels = make_session(model).run(None, {"x": x})[0].argmax(1).astype(np.int64)
    result = run(model, configure(sparsity=0.5, neuron_sparsity=0.5, iterations=1, epochs=1, lr=0.01,
                                  data={"x": x, "labels": labels}, seed=0))
    layers = hidden(result.report)
    assert layers["stem.weight"] == (8, 8) and layers["b.weight"] == (8, 4)
    notes = [n for n in result.report["notes"] if n.startswith("--neuron-sparsity masked no neuron")]
    assert len(notes) == 1 and "1 of 3 layers" in notes[0] and "Conv 'stem'" in notes[0], result.report["notes"]
    assert "Reshape 'rows'" in notes[0], notes[0]
    assert_same_outputs(result.model, result.dense_model, feeds=[{"x": x[:16]}])


@pytest.mark.parametrize("form", ["legacy", "dynamo"])
def test_neuron_sparsity_shrinks_hf_conv1d_layers_behind_computed_reshapes(form):
    """Sweep 25, L1: GPT-2's Conv1D (Reshape -> Gemm -> Reshape to a shape computed from Shape ops) kept every neuron
    under --neuron-sparsity. Retrained and shrunk, each c_fc loses half its neurons (c_proj's are the residual
    stream's, a graph input's: kept), and the written model computes the masked dense one's outputs at batch and
    sequence sizes the data never had."""
    from onnxprune.models.third_party_builders import hf_conv1d_mlp

    data = {"x": np.random.default_rng(0).standard_normal((64, 6, 8)).astype(np.float32)}
    result = run(hf_conv1d_mlp(form=form), configure(sparsity=0.5, neuron_sparsity=0.5, iterations=1, epochs=1,
                                                     lr=0.01, data=data, seed=0))
    assert hidden(result.report) == {"h.0.mlp.c_fc.weight": (16, 8), "h.0.mlp.c_proj.weight": (8, 8),
                                     "h.1.mlp.c_fc.weight": (16, 8), "h.1.mlp.c_proj.weight": (8, 8)}
    onnx.checker.check_model(result.model, full_check=True)
    rng = np.random.default_rng(1)
    assert_same_outputs(result.model, result.dense_model, feeds=[
        {"x": rng.standard_normal((n, s, 8)).astype(np.float32)} for n, s in [(1, 1), (2, 5), (5, 11)]])


def test_a_dynamically_quantized_layer_is_named_among_those_neuron_sparsity_cannot_touch():
    """Sweep 26: the hand recipe (--neuron-sparsity 0.5) on all-MiniLM-L6-v2 through onnxruntime's quantize_dynamic
    masked no neuron of its 36 MatMulInteger layers (dead-neuron removal does not shrink them) and said nothing of
    it, where the float model lost 4608 FFN neurons."""
    from onnxprune.models.builders_control import matmul_integer
    from tests.oracle import check_full

    model = matmul_integer()
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    result = run(model, configure(sparsity=0.5, neuron_sparsity=0.5, iterations=1, epochs=1, data={"input": x},
                                  seed=0))
    notes = [n for n in result.report["notes"] if n.startswith("--neuron-sparsity masked no neuron")]
    assert len(notes) == 1 and "MatMulInteger '/fc1/MatMulInteger': MatMulInteger holds integer-quantized weights" \
        in notes[0], result.report["notes"]
    check_full(result.model)
    assert_same_outputs(result.model, result.dense_model, feeds=[{"input": x[:1]}])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_neuron_sparsity_shrinks_a_recurrent_layer_through_retraining(bidirectional):
    """LSTM hidden units are neurons too (passes/channel_groups/rules_layers._recurrent): retrained through the torch
    bridge with their gate rows and their column of R masked, then taken out of W, R and B by the shrink; the written
    model computes what the masked one does (the pipeline's verification, and here again)."""
    from onnxprune.models.builders_control import lstm_classifier

    model = lstm_classifier(hidden=16, bidirectional=bidirectional, seed=0)
    x = np.random.default_rng(0).standard_normal((256, 5, 8)).astype(np.float32)
    result = run(model, configure(sparsity=0.5, neuron_sparsity=0.5, iterations=1, epochs=1, lr=0.01,
                                     data={"input": x}, seed=0))
    assert hidden(result.report)["lstm.W"] == (16, 8)
    lstm = next(n for n in result.model.graph.node if n.op_type == "LSTM")
    assert next(a.i for a in lstm.attribute if a.name == "hidden_size") == 8
    assert result.report["parity"]["max_abs_diff"] <= 1e-5
    assert_same_outputs(result.model, result.dense_model, feeds=[{"input": x[:16]}])
    onnx.checker.check_model(result.model, full_check=True)
