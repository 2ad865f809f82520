"""contrib-qdq: onnxruntime's com.microsoft QuantizeLinear/DequantizeLinear are read as the ai.onnx ops they equal,
so a model quantized with `UseQDQContribOps` is pruned on its grid (sweep 32: refused, "no prunable weights")."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.passes.base import PruneState
from onnxprune.passes.contrib_qdq import ContribQDQ, standard
from onnxprune.passes.weights import find_prunable
from tests.passes import _graphs as G
from tests.oracle import needs_quantization_tool, onnxruntime_since

X = np.random.default_rng(0).random((16, 1, 28, 28)).astype(np.float32)


def contrib_lenet(tmp_path, per_channel: bool = True) -> onnx.ModelProto:
    """onnxruntime's own quantize_static output with its contrib Q/DQ ops (QDQ format, int8 weights)."""
    needs_quantization_tool()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"x": X[i:i + 4]} for i in range(0, 16, 4)])

        def get_next(self):
            return next(self.feeds, None)

    src, dst = tmp_path / "float.onnx", tmp_path / f"contrib_{per_channel}.onnx"
    onnx.save(G.lenet5(seed=0), src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                    extra_options={"UseQDQContribOps": True})
    return onnx.load(dst)


def run(model: onnx.ModelProto) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        None, {"x": X})[0]


@pytest.mark.parametrize("per_channel", [True, False])
def test_contrib_qdq_nodes_become_standard_ones_with_the_same_outputs(tmp_path, per_channel):
    model = contrib_lenet(tmp_path, per_channel)
    contrib = [n for n in model.graph.node if n.domain == "com.microsoft"]
    assert contrib and all(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in contrib)
    assert not find_prunable(model).prunable  # before: every weight "behind a DequantizeLinear (quantized weight)"
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert ContribQDQ()(rewritten, PruneState()).modified
    onnx.checker.check_model(rewritten, full_check=True)
    assert not any(n.domain == "com.microsoft" for n in rewritten.graph.node)
    assert [n.op_type for n in rewritten.graph.node] == [n.op_type for n in model.graph.node]
    np.testing.assert_array_equal(run(rewritten), run(model))  # the same kernels: bit for bit


@onnxruntime_since("1.19.2", "the quantize_static of 1.17 and 1.18 fails beside onnx >= 1.19")
def test_prune_writes_a_contrib_quantized_model_with_pruned_weights_on_their_grid(tmp_path):
    import onnxprune

    model = contrib_lenet(tmp_path)
    onnx.save(model, tmp_path / "q.onnx")
    result = onnxprune.prune(str(tmp_path / "q.onnx"), output=str(tmp_path / "out.onnx"), sparsity=0.5)
    written = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(written, full_check=True)
    original = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    pruned = 0
    for t in written.graph.initializer:
        q = numpy_helper.to_array(t)
        if q.ndim >= 2 and t.name in original and original[t.name].dtype == np.int8:
            assert q.dtype == np.int8 and 0.4 <= (q == 0).mean() <= 0.6, t.name  # half at the zero point (0)
            pruned += 1
    assert pruned == 5  # c1, c2, fc1, fc2, fc3
    # the written file computes what the input model computes with the same integers zeroed
    oracle = onnx.ModelProto()
    oracle.CopyFrom(model)
    kept = {t.name: numpy_helper.to_array(t) for t in written.graph.initializer}
    for t in oracle.graph.initializer:
        if t.name in kept and kept[t.name].shape == tuple(t.dims):
            t.CopyFrom(numpy_helper.from_array(kept[t.name], t.name))
    np.testing.assert_allclose(run(written), run(oracle), rtol=1e-5, atol=1e-6)
    assert any("integer-quantized" in n for n in result.report["notes"])


def _dq(scale_dims, zero_type, opset_scale=TensorProto.FLOAT, axis=None):
    inits = {"w": helper.make_tensor("w", zero_type, [4, 3], [0] * 12),
             "s": helper.make_tensor("s", opset_scale, scale_dims, [0.5] * int(np.prod(scale_dims or [1]))),
             "z": helper.make_tensor("z", zero_type, scale_dims, [0] * int(np.prod(scale_dims or [1])))}
    node = helper.make_node("DequantizeLinear", ["w", "s", "z"], ["y"], domain="com.microsoft",
                            **({"axis": axis} if axis is not None else {}))
    return node, inits


def test_a_contrib_node_the_opset_cannot_express_is_left_as_it_was():
    node, inits = _dq([4], TensorProto.INT8, axis=0)
    assert standard(node, inits, 12) is None  # per-axis needs opset 13
    new = standard(node, inits, 13)
    assert new.domain == "" and [a.name for a in new.attribute] == ["axis"]
    node, inits = _dq([], TensorProto.INT16, axis=1)
    assert standard(node, inits, 20) is None and standard(node, inits, 21) is not None  # 16-bit from 21
    node, inits = _dq([], TensorProto.INT8, axis=1)
    assert list(standard(node, inits, 10).attribute) == []  # opset 10 has no axis attribute: one scale reads none
    node, inits = _dq([], TensorProto.INT8, TensorProto.FLOAT16)
    assert standard(node, inits, 18) is None and standard(node, inits, 19) is not None  # float16 scale from 19
    node, inits = _dq([], TensorProto.INT8)
    del inits["z"]
    inits["w"] = helper.make_tensor("w", TensorProto.INT8, [4, 3], [0] * 12)
    assert standard(node, {k: v for k, v in inits.items() if k != "w"}, 17) is None  # type unknown: left
