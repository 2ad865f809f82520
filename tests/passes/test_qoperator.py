"""QOperator layers (QLinearConv, QLinearMatMul, com.microsoft QGemm) are read as the QDQ layers they are, exactly.

The models are onnxruntime's own `quantize_static` output in QOperator format (per-channel and per-tensor, signed
and unsigned weights) of a small LeNet-5 and an MLP of MatMuls: what a user's quantization tool writes, and what the
ONNX model zoo's int8 models hold. Before, every such weight was "integer dtype ... not supported" and the model had
nothing to prune (sweeps 18 and 29)."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxprune.models import builders
from onnxprune.passes.base import PruneState
from onnxprune.passes.qoperator import QOperatorToQDQ
from tests.hardening.helpers import invoke
from tests.passes import _graphs as G
from tests.oracle import needs_quantization_tool

X = np.random.default_rng(0).random((16, 1, 28, 28)).astype(np.float32)


def qoperator(tmp_path, model: onnx.ModelProto, x: np.ndarray, per_channel: bool, weight_type: str = "QInt8",
              name: str = "m") -> onnx.ModelProto:
    needs_quantization_tool()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    feed = model.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{feed: x[i:i + 4]} for i in range(0, len(x), 4)])

        def get_next(self):
            return next(self.feeds, None)

    src, dst = tmp_path / f"{name}_float.onnx", tmp_path / f"{name}_qop_{per_channel}_{weight_type}.onnx"
    onnx.save(model, src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QOperator, per_channel=per_channel,
                    weight_type=getattr(QuantType, weight_type), activation_type=QuantType.QUInt8)
    return onnx.load(dst)


def run(model: onnx.ModelProto, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


@pytest.mark.parametrize("per_channel, weight_type", [(True, "QInt8"), (False, "QInt8"), (False, "QUInt8")])
def test_qoperator_lenet_becomes_its_qdq_form_exactly(tmp_path, per_channel, weight_type):
    m = qoperator(tmp_path, G.lenet5(), X, per_channel, weight_type)
    assert ops(m)["QLinearConv"] == 2 and ops(m)["QGemm"] >= 1
    converted = onnx.ModelProto()
    converted.CopyFrom(m)
    state = PruneState()
    assert QOperatorToQDQ()(converted, state).modified
    onnx.checker.check_model(converted, full_check=True)
    assert not {"QLinearConv", "QGemm", "QLinearMatMul"} & set(ops(converted))
    assert "QOperator node(s)" in state.notes[-1] and "are read as their QDQ form" in state.notes[-1]
    for optimize in (True, False):  # fused back into the integer kernels, and run as written: the same outputs
        np.testing.assert_array_equal(run(converted, X, optimize), run(m, X, optimize))
    opts = ort.SessionOptions()  # onnxruntime fuses the QDQ groups back into its integer kernels
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(converted.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    fused = ops(onnx.load(tmp_path / "optimized.onnx"))
    assert fused["QLinearConv"] == 2 and "Conv" not in fused


@pytest.mark.parametrize("per_channel", [False, True])  # per column of B [K, N]: the DequantizeLinear's axis 1
def test_qlinear_matmul_becomes_its_qdq_form_exactly(tmp_path, per_channel):
    x = np.random.default_rng(1).standard_normal((16, 16)).astype(np.float32)
    m = qoperator(tmp_path, builders.mlp_matmul(), x, per_channel=per_channel, name="mlp")
    assert ops(m)["QLinearMatMul"] >= 2
    converted = onnx.ModelProto()
    converted.CopyFrom(m)
    assert QOperatorToQDQ()(converted, PruneState()).modified
    assert "QLinearMatMul" not in ops(converted)
    for optimize in (True, False):
        np.testing.assert_array_equal(run(converted, x, optimize), run(m, x, optimize))


def test_a_qoperator_model_is_pruned_on_its_grid_and_verified(tmp_path):
    """inspect lists its layers as prunable; prune prunes them, writes back int8 weights on their own grid (a pruned
    weight is the zero point) and verifies the written model against the dense model with the same weights."""
    m = qoperator(tmp_path, G.lenet5(), X, per_channel=True)
    path = tmp_path / "qop.onnx"
    onnx.save(m, path)
    info = invoke("inspect", path)
    assert info.exit_code == 0 and "int8 + DequantizeLinear" in info.output and "No prunable weights" not in info.output
    res = invoke("prune", path, "-o", tmp_path / "out.onnx", "--sparsity", "0.6")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "QOperator node(s) (QGemm, QLinearConv) are read as their QDQ form" in text
    assert "verified in onnxruntime" in text
    out = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(out, full_check=True)
    weights = [t for t in out.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
    assert weights and all(np.mean(onnx.numpy_helper.to_array(t) == 0) >= 0.5 for t in weights)  # int8: zp 0
    assert run(out, X).shape == run(m, X).shape


def test_a_qoperator_model_kept_unpruned_is_written_as_it_was_given(tmp_path):
    """Sweep 30's L2: read in its QDQ form, a QOperator model the search kept unpruned was written in that form, a
    larger file (65.84 KB -> 71.09 KB) for 1.00x. Kept unpruned, its file smaller than the rewritten one, it is written
    as given (the same bytes, so the same outputs) and the note says why; the figures count the file written."""
    m = qoperator(tmp_path, G.lenet5(), X, per_channel=True)
    path, out = tmp_path / "qop.onnx", tmp_path / "out.onnx"
    onnx.save(m, path)
    np.savez(tmp_path / "few.npz", **{m.graph.input[0].name: X[:8]})  # 8 samples cannot certify 1 pp: kept
    res = invoke("prune", path, "-o", out, "--data", tmp_path / "few.npz", "--max-loss", "1", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["budget"]["kept_input"] and out.read_bytes() == path.read_bytes()
    assert report["file_size_after"] == report["file_size_before"] == path.stat().st_size
    assert any("written as it was given" in n for n in report["notes"])
    from onnxprune.passes.storage import describe_model

    assert report["storage"] == describe_model(m)  # the storage described is the file's (its QLinear ops' weights:
    # none in a storage format)
    np.testing.assert_array_equal(run(onnx.load(out), X), run(m, X))
    res = invoke("prune", path, "-o", out, "--sparsity", "0.6")  # pruned: its QDQ form, as before
    assert res.exit_code == 0 and "written as it was given" not in res.output
    assert ops(onnx.load(out))["DequantizeLinear"] > 0


def test_per_channel_layers_of_an_opset_below_13_are_left_as_they_are(tmp_path):
    """A per-channel scale needs DequantizeLinear's axis (opset 13); raising the model's opset would change other
    ops' meaning, so such a layer stays an integer op (and the inventory says why, as before)."""
    m = qoperator(tmp_path, G.lenet5(), X, per_channel=True)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 12
    state = PruneState()
    QOperatorToQDQ()(m, state)
    assert ops(m)["QLinearConv"] == 2  # per-channel: kept


def activation_cnn() -> onnx.ModelProto:
    """Conv -> LeakyRelu -> Conv, a residual Add, a Mul, a Concat, AveragePool, GlobalAveragePool, Gemm, Sigmoid: in
    QOperator format each of these is an integer op (QLinearAdd, QLinearConcat, ... com.microsoft)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = []

    def weight(name, *shape):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:])))
                                             .astype(np.float32), name))
        return name

    nodes = [helper.make_node("Conv", ["x", weight("c1", 8, 3, 3, 3)], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("LeakyRelu", ["a"], ["a1"], alpha=0.1),
             helper.make_node("Conv", ["a1", weight("c2", 8, 8, 3, 3)], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a1", "b"], ["s"]), helper.make_node("Mul", ["s", "a1"], ["mm"]),
             helper.make_node("Concat", ["mm", "a1"], ["cat"], axis=1),
             helper.make_node("AveragePool", ["cat"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["ap"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", weight("fc", 5, 16)], ["z"], transB=1),
             helper.make_node("Sigmoid", ["z"], ["y"])]
    graph = helper.make_graph(nodes, "acts", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_qoperator_activations_become_qdq_and_fuse_back(tmp_path):
    x = np.random.default_rng(5).standard_normal((64, 3, 8, 8)).astype(np.float32)
    m = qoperator(tmp_path, activation_cnn(), x, per_channel=True, name="acts")
    integer_ops = {"QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearLeakyRelu", "QLinearSigmoid",
                   "QLinearAveragePool", "QLinearGlobalAveragePool"}
    assert integer_ops <= set(ops(m))
    converted = onnx.ModelProto()
    converted.CopyFrom(m)
    QOperatorToQDQ()(converted, PruneState())
    onnx.checker.check_model(converted, full_check=True)
    assert not integer_ops & set(ops(converted)) and not any(n.domain for n in converted.graph.node)
    np.testing.assert_array_equal(run(converted, x), run(m, x))  # onnxruntime fuses them back: the same kernels
    unfused = run(converted, x, optimize=False)  # run op by op in float: within one step of the output's grid
    assert np.abs(unfused - run(m, x)).max() <= 1.5 / 255 + 1e-6
    path = tmp_path / "acts.onnx"
    onnx.save(m, path)
    np.savez(tmp_path / "calib.npz", x=x)
    res = invoke("prune", path, "-o", tmp_path / "out.onnx", "--data", tmp_path / "calib.npz", "--sparsity", "0.5",
                 "--iterations", "1")
    assert res.exit_code == 0, res.output
    assert "torch bridge cannot run" not in res.output  # the whole model is standard ops and Q/DQ pairs now
    onnx.checker.check_model(onnx.load(tmp_path / "out.onnx"), full_check=True)
