"""Seeded test-graph builders: valid ONNX, run in onnxruntime, right shapes, reproducible."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxprune.models import builders
from onnxprune.models.builders import BUILDERS, random_input

EXPECTED_OPS = {
    "mlp_gemm": ["Gemm", "Relu", "Gemm", "Relu", "Gemm"],
    "mlp_matmul": ["MatMul", "Add", "Relu", "MatMul", "Add", "Relu", "MatMul", "Add"],
    "conv_bn_relu": ["Conv", "BatchNormalization", "Relu"],
    "residual_block": ["Conv", "Relu", "Conv", "BatchNormalization", "Relu", "Conv", "BatchNormalization", "Add", "Relu"],
    "concat_branches": ["Conv", "Relu", "Conv", "Relu", "Concat", "Conv"],
    "depthwise_separable": ["Conv", "Relu", "Conv", "Relu", "Conv"],
    "tiny_attention": ["MatMul", "Add", "MatMul", "Add", "MatMul", "Add", "Transpose", "MatMul", "Div", "Softmax",
                       "MatMul", "MatMul", "Add", "Add", "LayerNormalization"],
    "lenet300_like": ["Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm"],
    "lenet5_like": ["Conv", "MaxPool", "Conv", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm"],
}
EXPECTED_OUTPUT = {  # without the batch axis
    "mlp_gemm": [10], "mlp_matmul": [10], "conv_bn_relu": [8, 8, 8], "residual_block": [8, 8, 8],
    "concat_branches": [8, 8, 8], "depthwise_separable": [16, 8, 8], "tiny_attention": [4, 16],
    "lenet300_like": [10], "lenet5_like": [10],
}


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def test_every_builder_has_expectations():
    assert set(BUILDERS) == set(EXPECTED_OPS) == set(EXPECTED_OUTPUT)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_is_valid_and_runs(name):
    model = BUILDERS[name](seed=3)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [n.op_type for n in model.graph.node] == EXPECTED_OPS[name]
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert value.type.tensor_type.shape.dim[0].dim_param == "N"
    for batch in (1, 3):
        out = run_ort(model, random_input(model, batch=batch, seed=batch))
        assert out.shape == (batch, *EXPECTED_OUTPUT[name]), name
        assert out.dtype == np.float32 and np.isfinite(out).all()
        assert out.std() > 1e-3, f"{name}: output is (nearly) constant"


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_is_reproducible_and_seed_matters(name):
    build = BUILDERS[name]
    assert build(seed=5).SerializeToString() == build(seed=5).SerializeToString()
    a = {i.name: onnx.numpy_helper.to_array(i) for i in build(seed=5).graph.initializer}
    b = {i.name: onnx.numpy_helper.to_array(i) for i in build(seed=6).graph.initializer}
    assert a.keys() == b.keys()
    assert any(not np.array_equal(a[k], b[k]) for k in a if a[k].size > 1)


def test_mlp_matmul_transposed_weights_feed_matmul_through_transpose_of_initializer():
    model = builders.mlp_matmul(transposed_weights=True, seed=2)
    onnx.checker.check_model(model, full_check=True)
    inits = {i.name for i in model.graph.initializer}
    transposes = [n for n in model.graph.node if n.op_type == "Transpose"]
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert len(transposes) == len(matmuls) == 3
    assert all(t.input[0] in inits and t.output[0] in m.input for t, m in zip(transposes, matmuls))


def test_mlp_matmul_transposed_computes_the_same_as_mlp_gemm_with_the_same_seed():
    gemm, matmul = builders.mlp_gemm(seed=4), builders.mlp_matmul(transposed_weights=True, seed=4)
    feeds = random_input(gemm, batch=4, seed=0)
    np.testing.assert_allclose(run_ort(matmul, feeds), run_ort(gemm, feeds), rtol=1e-5, atol=1e-5)


def test_depthwise_conv_has_one_group_per_channel():
    model = builders.depthwise_separable(channels=6, seed=0)
    dw = next(n for n in model.graph.node if n.name == "/depthwise/Conv")
    group = next(a.i for a in dw.attribute if a.name == "group")
    weight = next(i for i in model.graph.initializer if i.name == dw.input[1])
    assert group == 6 and list(weight.dims) == [6, 1, 3, 3]


def test_residual_add_joins_block_output_and_stem():
    model = builders.residual_block(seed=0)
    add = next(n for n in model.graph.node if n.op_type == "Add")
    assert list(add.input) == ["/bn2/BatchNormalization_output_0", "/stem/Relu_output_0"]


@pytest.mark.parametrize("name, kwargs, out_shape", [
    ("mlp_gemm", dict(in_features=5, hidden=(7,), out_features=3), (2, 3)),
    ("mlp_matmul", dict(in_features=5, hidden=(), out_features=4), (2, 4)),
    ("conv_bn_relu", dict(in_channels=2, out_channels=5, kernel=1, size=6), (2, 5, 6, 6)),
    ("residual_block", dict(in_channels=1, channels=4, size=5), (2, 4, 5, 5)),
    ("concat_branches", dict(in_channels=2, branch_channels=(3, 2), out_channels=7, size=4), (2, 7, 4, 4)),
    ("depthwise_separable", dict(in_channels=1, channels=5, out_channels=3, size=4), (2, 3, 4, 4)),
    ("tiny_attention", dict(seq_len=6, d_model=8), (2, 6, 8)),
    ("lenet300_like", dict(hidden=(12, 8)), (2, 10)),
    ("lenet5_like", dict(conv_channels=(4, 6), fc_units=12), (2, 10)),
])
def test_builder_size_keywords(name, kwargs, out_shape):
    model = BUILDERS[name](seed=1, **kwargs)
    onnx.checker.check_model(model, full_check=True)
    assert run_ort(model, random_input(model, batch=2)).shape == out_shape
