"""A transformer-encoder classifier holding an opset-23 Attention node, as torch dynamo exports
nn.TransformerEncoder (projections as MatMul, heads split by Reshape/Transpose around a 4-D Attention): the bridge runs
it as onnxruntime does, sgd retrains it label-free within a budget, and dead-neuron removal leaves the channels
Attention reads alone (it has no channel rule) while it removes the feed-forward's dead ones."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxprune.converter.bridge import OnnxModule
from onnxprune.passes.dead_neurons import remove_dead_neurons
from tests.oracle import onnxruntime_since

S, F, D, H, FF, C = 6, 8, 16, 2, 32, 4  # positions, input features, model width, heads, feed-forward width, classes


def encoder_classifier(form: str = "4d", seed: int = 0, dead_v: int | None = None,
                       dead_ff: int | None = None) -> onnx.ModelProto:
    """x [N, S, F] -> embed -> one post-norm encoder layer (self-attention, ReLU feed-forward) -> mean over
    positions -> Gemm -> logits [N, C]. `form` "4d": heads split by Reshape/Transpose around a 4-D Attention, as
    torch dynamo writes; "3d": the projections read by a 3-D Attention directly, one KV head for H query heads
    (multi-query). `dead_v`: that output channel of the V projection has zero weights and bias; `dead_ff`: that
    feed-forward unit has zero incoming weights and a negative bias (ReLU: always 0)."""
    rng = np.random.default_rng(seed)
    kv = D if form == "4d" else D // H

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    inits = {"W_in": w(F, D), "b_in": w(D) * 0.1, "Wq": w(D, D), "Wk": w(D, kv), "Wv": w(D, kv), "bv": w(kv) * 0.1,
             "Wo": w(D, D), "ln_g": np.ones(D, np.float32), "ln_b": np.zeros(D, np.float32), "W1": w(D, FF),
             "b1": w(FF) * 0.1, "W2": w(FF, D), "Wh": w(C, D), "bh": np.zeros(C, np.float32),
             "heads": np.array([0, 0, H, D // H], np.int64), "merged": np.array([0, 0, D], np.int64),
             "positions": np.array([1], np.int64)}
    if dead_v is not None:
        inits["Wv"][:, dead_v] = 0.0
        inits["bv"][dead_v] = 0.0
    if dead_ff is not None:
        inits["W1"][:, dead_ff] = 0.0
        inits["b1"][dead_ff] = -1.0
    def n(op, ins, outs, **attrs):
        return helper.make_node(op, ins, outs, name=f"{op}_{outs[0]}", **attrs)

    nodes = [n("MatMul", ["x", "W_in"], ["e0"]), n("Add", ["e0", "b_in"], ["h"]),
             n("MatMul", ["h", "Wq"], ["q"]), n("MatMul", ["h", "Wk"], ["k"]), n("MatMul", ["h", "Wv"], ["v0"]),
             n("Add", ["v0", "bv"], ["v"])]
    if form == "4d":
        for t in "qkv":
            nodes += [n("Reshape", [t, "heads"], [f"{t}_split"]),
                      n("Transpose", [f"{t}_split"], [f"{t}_heads"], perm=[0, 2, 1, 3])]
        nodes += [n("Attention", ["q_heads", "k_heads", "v_heads"], ["att"]),
                  n("Transpose", ["att"], ["att_t"], perm=[0, 2, 1, 3]), n("Reshape", ["att_t", "merged"], ["att_m"])]
    else:
        nodes += [n("Attention", ["q", "k", "v"], ["att_m"], q_num_heads=H, kv_num_heads=1)]
    nodes += [n("MatMul", ["att_m", "Wo"], ["o"]), n("Add", ["h", "o"], ["r"]),
              n("LayerNormalization", ["r", "ln_g", "ln_b"], ["nrm"]),
              n("MatMul", ["nrm", "W1"], ["f0"]), n("Add", ["f0", "b1"], ["f1"]), n("Relu", ["f1"], ["f2"]),
              n("MatMul", ["f2", "W2"], ["f3"]), n("Add", ["nrm", "f3"], ["r2"]),
              n("ReduceMean", ["r2", "positions"], ["pooled"], keepdims=0),
              n("Gemm", ["pooled", "Wh", "bh"], ["logits"], transB=1)]
    if form != "4d":
        del inits["heads"], inits["merged"]
    graph = helper.make_graph(
        nodes, f"encoder_classifier_{form}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", S, F])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", C])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def inputs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, S, F)).astype(np.float32)


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]


@pytest.mark.parametrize("form", ["4d", "3d"])
@onnxruntime_since("1.23.2", "ONNX's Attention (opset 23)")
def test_the_bridge_runs_the_encoder_as_onnxruntime_and_reaches_every_weight(form):
    model, x = encoder_classifier(form), inputs(16)
    module = OnnxModule(model, trainable=["W_in", "Wq", "Wk", "Wv", "Wo", "W1", "W2", "Wh"])
    got = module(x=torch.from_numpy(x))[0]
    np.testing.assert_allclose(got.detach().numpy(), run_ort(model, x), rtol=1e-4, atol=1e-5)
    got.square().sum().backward()
    for name, p in module.onnx_parameters().items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("form, blocker", [("4d", "consumer Reshape 'Reshape_v_split'"),
                                           ("3d", "consumer Attention 'Attention_att_m' (op Attention) has no "
                                                  "channel rule")])
@onnxruntime_since("1.23.2", "ONNX's Attention (opset 23)")
def test_dead_neuron_removal_keeps_the_dead_value_channel_attention_reads(form, blocker):
    """A V channel that carries nothing could only leave with a rule proving it safe (dropping it would change the
    head size, and with it the default 1/sqrt(head size) scale): the channel stays, and the note names the node that
    kept it. The feed-forward's dead unit goes. The shrunk model computes what the input model does."""
    model = encoder_classifier(form, dead_v=3, dead_ff=5)
    shrunk, report = remove_dead_neurons(model)
    shapes = {t.name: list(t.dims) for t in shrunk.graph.initializer}
    kv = D if form == "4d" else D // H
    assert shapes["Wv"] == [D, kv] and shapes["bv"] == [kv]
    assert shapes["W1"] == [D, FF - 1] and shapes["W2"] == [FF - 1, D]
    assert any(line.startswith(f"channels of MatMul 'MatMul_v0' kept: {blocker}") and "(1 dead kept)" in line
               for line in report.blocked), report.blocked
    onnx.checker.check_model(shrunk, full_check=True)
    x = inputs(64)
    np.testing.assert_allclose(run_ort(shrunk, x), run_ort(model, x), rtol=1e-4, atol=1e-5)


@onnxruntime_since("1.23.2", "ONNX's Attention (opset 23)")
def test_sgd_retrains_an_attention_model_label_free_within_the_budget(tmp_path):
    """The recovery the report names is sgd, its rounds ran (retraining through the bridge: before Attention was
    there, --recovery sgd stopped with 'the torch bridge cannot run 1 node(s)'), the written model passes the full
    checker and the tool's own parity check against onnxruntime, which this test repeats."""
    import onnxprune

    model = encoder_classifier("4d")
    onnx.save(model, tmp_path / "encoder.onnx")
    x = inputs(1200)  # 400 samples decide on 300, which cannot certify the stricter rule after an undone round
    result = onnxprune.prune(str(tmp_path / "encoder.onnx"), output=str(tmp_path / "out.onnx"), data={"x": x},
                             max_loss=1, recovery="sgd", time_budget=30, seed=0)
    report = result.report
    assert report["auto"]["choices"]["recovery"]["value"] == "sgd"
    assert not any("cannot run" in note for note in report["notes"] + report["auto"]["notes"])
    rounds = [h for h in result.history if h.get("phase") in ("weights", "neurons", "polish")]
    assert rounds and all(h["seconds"] > 0 for h in rounds)  # retraining rounds ran (here 13, 2 kept, in 14 s)
    assert report["budget"]["met"] and report["parity"]["batches"] >= 1
    assert report["parity"]["max_abs_diff"] <= 1e-5 * max(1.0, float(np.abs(run_ort(model, x)).max()))
    written = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(written, full_check=True)
    assert [nd.op_type for nd in written.graph.node].count("Attention") == 1
    np.testing.assert_allclose(run_ort(written, x), run_ort(result.dense_model, x), rtol=1e-4, atol=1e-5)
