"""onnxruntime's fused kernels whose weight is a linear layer's (com.microsoft Attention's packed QKV, FusedMatMul)
are pruned by magnitude, scanned and budgeted like a MatMul; the refit leaves them as pruned and dead-neuron removal
does not shrink them, each said.

Before, `inspect` listed them as "a weight of onnxruntime's fused com.microsoft.Attention ..., which these passes do
not take apart": a MiniLM encoder after onnxruntime.transformers.optimizer kept 2.65M of its weights (six packed
384x1152 QKV matrices) out of reach."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from onnxprune.models.third_party_builders import ort_fused_conv_net, ort_fused_encoder, ort_fused_gemm_mlp
from onnxprune.passes.weights import find_prunable
from tests.hardening.helpers import invoke
from tests.oracle import check_full


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]


def test_attention_and_fused_matmul_weights_are_prunable_with_their_channel_axes_and_macs():
    inv = find_prunable(ort_fused_encoder(seq=6, hidden=16))
    rows = {w.name: w for w in inv.prunable}
    assert set(rows) == {"qkv_weight", "o.weight", "up.weight", "head.weight"}, [s.name for s in inv.skipped]
    qkv, up = rows["qkv_weight"], rows["up.weight"]
    assert qkv.op_type == "Attention" and qkv.kind == "fc" and qkv.shape[qkv.out_axis] == 48  # Q, K and V columns
    assert qkv.macs == 16 * 48 * 6  # once a position, as a MatMul over [N, 6, 16]
    assert up.op_type == "FusedMatMul" and up.shape[up.out_axis] == 32  # transB=1: [out, in]
    assert up.macs == 32 * 16 * 6  # its rows from its input (onnx's shape inference has no FusedMatMul)
    assert {s.name for s in inv.skipped} >= {"qkv_bias"}


def test_a_hand_recipe_prunes_the_fused_kernels_weights_and_says_what_it_left(tmp_path):
    model = ort_fused_encoder(seed=1)
    onnx.save(model, tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((64, 6, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", input=x)
    res = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx", "--data", tmp_path / "calib.npz",
                 "--sparsity", "0.5", "--iterations", "1", "--epochs", "1")
    assert res.exit_code == 0, res.output
    assert "is a fused kernel (its output is not x @ W); left as pruned" in res.output, res.output
    out = onnx.load(tmp_path / "out.onnx")
    check_full(out)
    written = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    written.update({n.output[0]: numpy_helper.to_array(a.t) for n in out.graph.node if n.op_type == "Constant"
                    for a in n.attribute if a.name == "value"})
    for name in ("qkv_weight", "up.weight"):
        assert abs((written[name] == 0).mean() - 0.5) < 0.02, name
    # the output computes what the input model computes with the written weights (onnxruntime on both)
    oracle = onnx.ModelProto()
    oracle.CopyFrom(model)
    for t in oracle.graph.initializer:
        if t.name in written and written[t.name].shape == tuple(t.dims):
            t.CopyFrom(numpy_helper.from_array(written[t.name], t.name))
    held_out = np.random.default_rng(7).standard_normal((16, 6, 16)).astype(np.float32)
    np.testing.assert_allclose(run(out, held_out), run(oracle, held_out), rtol=1e-5, atol=1e-6)


def test_a_budgeted_run_prunes_a_fused_encoder_within_its_budget(tmp_path):
    model = ort_fused_encoder(seed=2)
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz",
             input=np.random.default_rng(0).standard_normal((400, 6, 16)).astype(np.float32))
    res = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx", "--data", tmp_path / "calib.npz",
                 "--max-loss", "1", "--metric", "logits=rel_l2", "--time-budget", "40s", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["budget"]["met"]
    pruned = {row["weight"]: row for row in report["layers"]}
    assert "qkv_weight" in pruned and "up.weight" in pruned
    check_full(onnx.load(tmp_path / "out.onnx"))


def test_a_fused_gemm_of_a_saved_optimized_model_is_pruned_and_computes_its_written_weights(tmp_path):
    """Sweep 28: LeNet-5 saved by an onnxruntime session at ORT_ENABLE_ALL has fc1 as com.microsoft.FusedGemm (Gemm
    and Relu): 400K of its 405K weights were "a weight of onnxruntime's fused com.microsoft.FusedGemm ..., which
    these passes do not take apart: prune the model before onnxruntime's transformer optimizer fuses it" (no
    transformer optimizer had run). It is a Gemm's weight: pruned by magnitude with its MACs, neither refit nor
    shrunk."""
    model = ort_fused_gemm_mlp()
    inv = find_prunable(model)
    fc1 = inv.by_name()["fc1.weight"]
    assert fc1.op_type == "FusedGemm" and fc1.shape[fc1.out_axis] == 16 and fc1.macs == 16 * 12
    assert "bias of FusedGemm 'fused /fc1/Gemm'" in {s.reason for s in inv.skipped}
    out, written = _pruned_half(model, (64, 12), tmp_path)
    w1, b1, w2, b2 = (written[k] for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"))
    assert abs((w1 == 0).mean() - 0.5) < 0.02
    held_out = np.random.default_rng(7).standard_normal((16, 12)).astype(np.float32)
    np.testing.assert_allclose(run(out, held_out), np.maximum(held_out @ w1.T + b1, 0) @ w2.T + b2,
                               rtol=1e-5, atol=1e-5)


def _pruned_half(model, shape, tmp_path):
    """`prune --sparsity 0.5` on seeded data of `shape` through the CLI: the written model (full check passed) and
    its dense constants by name."""
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", input=np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    res = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx", "--data", tmp_path / "calib.npz",
                 "--sparsity", "0.5")
    assert res.exit_code == 0, res.output
    out = onnx.load(tmp_path / "out.onnx")
    check_full(out)
    written = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    written.update({n.output[0]: numpy_helper.to_array(a.t) for n in out.graph.node if n.op_type == "Constant"
                    for a in n.attribute if a.name == "value"})
    return out, written


def test_a_fused_conv_of_a_saved_optimized_model_is_pruned_and_computes_its_written_weights(tmp_path):
    """Sweep 30: ShuffleNet saved by an onnxruntime session at ORT_ENABLE_EXTENDED has 37 of its 56 convolutions as
    com.microsoft.FusedConv (Conv and Relu): 325K of its 344K weights were out of reach and a --max-loss run wrote
    "1.00x". It is a Conv's weight (groups too): pruned by magnitude with its MACs, neither refit nor shrunk."""
    model = ort_fused_conv_net()
    inv = find_prunable(model)
    rows = inv.by_name()
    c1, dw = rows["c1.weight"], rows["dw.weight"]
    assert c1.op_type == "FusedConv" and c1.kind == "conv" and c1.shape[c1.out_axis] == 8
    assert c1.macs == 8 * 2 * 9 * 36  # a sample, as a Conv at 6x6 (from its input's shape and its attributes)
    assert dw.op_type == "FusedConv" and dw.shape == (8, 1, 3, 3)  # group=8
    assert "bias of FusedConv 'fused /c1/Conv'" in {s.reason for s in inv.skipped}
    out, written = _pruned_half(model, (64, 2, 6, 6), tmp_path)
    assert abs((written["c1.weight"] == 0).mean() - 0.5) < 0.05
    # the output computes what the input model computes with the written weights (onnxruntime on both)
    oracle = onnx.ModelProto()
    oracle.CopyFrom(model)
    for t in oracle.graph.initializer:
        if t.name in written and written[t.name].shape == tuple(t.dims):
            t.CopyFrom(numpy_helper.from_array(written[t.name], t.name))
    held_out = np.random.default_rng(7).standard_normal((16, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run(out, held_out), run(oracle, held_out), rtol=1e-5, atol=1e-6)


def test_a_layout_blocked_kernel_of_a_saved_optimized_model_is_named_with_its_domain(tmp_path):
    """The same LeNet-5's convolutions became com.microsoft.nchwc.Conv (weights in a blocked layout for this CPU):
    their weights read "not a weight of Conv/ConvTranspose/Gemm/... (used by Conv)", their biases "bias of Conv";
    they are named as onnxruntime's NCHWc kernels, with what to do. (Where this CPU gets no NCHWc transform the
    saved model has none, and there is nothing to check.)"""
    from onnxprune.models import builders

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(builders.lenet5_like().SerializeToString(), options, providers=["CPUExecutionProvider"])
    saved = onnx.load(tmp_path / "opt.onnx")
    blocked = [n for n in saved.graph.node if n.domain == "com.microsoft.nchwc" and n.op_type == "Conv"]
    if not blocked:
        import pytest

        pytest.skip("onnxruntime wrote no NCHWc kernel on this CPU")
    why = {s.name: s.reason for s in find_prunable(saved).skipped}
    for node in blocked:
        for name in node.input[1:3]:
            if name in why:
                assert why[name].startswith(f"a weight of onnxruntime's com.microsoft.nchwc.Conv '{node.name}', stored "
                                            "in the blocked (NCHWc) layout"), why[name]
