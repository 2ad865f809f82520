"""The op-facts table is the one home of op-type knowledge: every per-op implementation agrees with it."""

import pytest
from onnx import helper

from onnxprune.calibration import activations
from onnxprune.passes import opfacts, weights
from onnxprune.passes.channel_groups import PRODUCERS, RULES
from onnxprune.passes.channel_groups.rules_elementwise import BINARY, COMPARE, UNARY


def test_channel_group_rules_agree_with_the_table():
    assert set(UNARY) <= opfacts.ELEMENTWISE_UNARY
    assert set(BINARY) <= opfacts.ARITHMETIC
    assert set(COMPARE) <= opfacts.COMPARISON
    assert PRODUCERS <= set(opfacts.WEIGHT_OPS) and PRODUCERS == opfacts.CHANNEL_PRODUCERS
    layout_rules = {"Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze"}
    assert layout_rules <= set(RULES) and layout_rules <= opfacts.LAYOUT_OPS


def test_bridge_unary_ops_are_elementwise_unary_in_the_table():
    pytest.importorskip("torch")
    from onnxprune.converter.bridge.ops.elementwise import _UNARY

    assert set(_UNARY) <= opfacts.ELEMENTWISE_UNARY


def test_readers_use_the_table():
    from onnxprune.converter import finetune

    assert weights.PASS_THROUGH is opfacts.LAYOUT_OPS and weights.WEIGHT_OPS is opfacts.WEIGHT_OPS
    assert activations.ELEMENTWISE is opfacts.ACTIVATION_CHAIN
    assert finetune.TRANSPARENT is opfacts.CONNECTION_PRESERVING and finetune.BIAS_INPUT is opfacts.BIAS_INPUT


@pytest.mark.parametrize("op, index, rank, attrs, expected", [
    ("Conv", 1, 4, {}, (0, 1)),
    ("ConvTranspose", 1, 4, {}, (1, 0)),
    ("Gemm", 1, 2, {"transB": 1}, (0, 1)),
    ("Gemm", 1, 2, {}, (1, 0)),
    ("Gemm", 0, 2, {}, (None, None)),
    ("MatMul", 1, 3, {}, (2, 1)),
    ("LSTM", 1, 3, {}, (1, 2)),
    ("GRU", 2, 3, {}, (1, 2)),
])
def test_weight_axes(op, index, rank, attrs, expected):
    node = helper.make_node(op, ["a", "b", "c"], ["y"], **attrs)
    assert opfacts.WEIGHT_OPS[op].axes(node, index, rank) == expected


def test_bias_inputs_are_known_per_op():
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"])
    lstm = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"])
    assert opfacts.is_bias(conv, "b") and not opfacts.is_bias(conv, "w")
    assert opfacts.is_bias(lstm, "B") and not opfacts.is_bias(lstm, "R")
    assert not opfacts.is_bias(helper.make_node("MatMul", ["x", "w"], ["y"]), "w")
    assert "LSTM" in opfacts.CHANNEL_PRODUCERS and "DynamicQuantizeLSTM" not in opfacts.CHANNEL_PRODUCERS


def test_quantized_ops_say_what_pruning_them_would_take():
    assert "float model" in opfacts.QUANTIZED_HOW
    assert {k: v for k, v in opfacts.QUANTIZED_WEIGHT_OPS.items() if not k.startswith("Dynamic")} == {
        "ConvInteger": 1, "MatMulInteger": 1, "QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3, "DequantizeLinear": 0,
        "MatMulIntegerToFloat": 1}
    assert opfacts.QUANTIZED_WEIGHT_OPS["DynamicQuantizeLSTM"] == (1, 2)  # sweep 8's int8 BiLSTM: W and R
