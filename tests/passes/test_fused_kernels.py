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

from onnxprune.models.third_party_builders import ort_fused_encoder
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
