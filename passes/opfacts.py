"""One table of op facts: what every part of the tool needs to know about an ONNX op type, written once.

Two kinds of fact:

* **Weight ops** (`WEIGHT_OPS`): which inputs may hold a prunable weight, the axes of that weight that hold the
  op's output and input channels (as the op sees the operand, before any Transpose that feeds it), the bias
  input, whether a ``group`` attribute splits the channels, and the layer kind the report uses::

      Conv          W[O, C/g, k…]          out 0, in 1          bias input 2, grouped
      ConvTranspose W[C, O/g, k…]          out 1, in 0          bias input 2, grouped
      Gemm          B[K, N] / B[N, K]      transB=0: out 1, in 0; transB=1: out 0, in 1     bias input 2
      MatMul        B[…, K, N]             out -1, in -2
      LSTM/GRU/RNN  W[dirs, gates·H, I]    out 1 (gates·hidden), in 2;  R[dirs, gates·H, H] the same;  bias B (3)

  Dynamic quantization's integer ops (onnxruntime's `quantize_dynamic`) hold their weights as integers; the load
  step folds them to float stand-ins (passes/quantized_weights.py), which these entries let the inventory see:

      ConvInteger / MatMulInteger                       as Conv / MatMul, not shrunk
      DynamicQuantizeMatMul, MatMulIntegerToFloat       B[K, N] as MatMul (com.microsoft), not shrunk
      DynamicQuantizeLSTM  W[dirs, I, 4H], R[dirs, H, 4H]   out 2, in 1 (com.microsoft), not shrunk

  onnxruntime's fused kernels (com.microsoft, written by onnxruntime.transformers.optimizer or by a session's saved
  optimized graph) whose weight is a plain linear layer's, so magnitude pruning, the scan and the budget take it;
  their output is not x @ W, so the layer-wise refit does not fit them and dead-neuron removal does not shrink them:

      Attention    W[hidden, 3·hidden] (Q, K and V packed)   as MatMul, bias input 2
      FusedMatMul  B[K, N] / B[N, K]                         transB=0: as MatMul; transB=1: out -2, in -1
      FusedGemm    as Gemm;  FusedConv  as Conv (a session's saved optimized model: the op and its activation)

  and **lookup ops** (`LOOKUP_OPS`): Gather's table T[V, D…] read on axis 0 with ids from the data (an embedding):
  input 0, no MACs, not refit; no output-channel axis for the criteria, but channel groups follow its columns (a
  dead feature leaves the table).

* **Data ops**: what an op does to the values it carries. `ELEMENTWISE_UNARY` (one tensor in, same shape out,
  element by element), `ARITHMETIC` (element-wise binary with broadcasting), `CHANNELWISE` (a per-channel affine
  map with parameters: BatchNormalization, PRelu), `NORM_OPS`, `POOL_OPS`, `SOFTMAX_OPS`, `LAYOUT_OPS` (only
  move data: Transpose, Reshape, …), `REDUCE_OPS`, `SUBGRAPH_OPS` (own a graph attribute), `QUANTIZED_WEIGHT_OPS`
  (integer weights, with what pruning them would take).

Readers: `passes/weights.py` (inventory), `passes/channel_groups` (producers, rules), `converter/finetune.py`
(biases, Dropout's feeding layer), `calibration/activations.py` (a layer's element-wise chain), and the torch
bridge's and channel groups' per-op implementations are checked against these sets in the tests
(tests/passes/test_opfacts.py). The table is pure data: no torch, no onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import onnx

Axes = tuple[Optional[int], Optional[int]]


def attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


# Storage-independent axes of the weight operand, as the consumer sees it: (out_axis, in_axis).
def _conv_axes(node, index, rank) -> Axes:
    return (0, 1) if index == 1 else (None, None)


def _conv_transpose_axes(node, index, rank) -> Axes:
    return (1, 0) if index == 1 else (None, None)


def _gemm_axes(node, index, rank) -> Axes:
    if index == 1:
        return (0, 1) if attr(node, "transB", 0) else (1, 0)
    return (None, None)  # a constant A (or C): prunable by magnitude, no channel mapping


def _matmul_axes(node, index, rank) -> Axes:
    if index == 1:
        return (rank - 1, rank - 2) if rank >= 2 else (None, None)
    return (None, None)


def _fused_matmul_axes(node, index, rank) -> Axes:
    if index == 1 and rank >= 2:
        return (rank - 2, rank - 1) if attr(node, "transB", 0) else (rank - 1, rank - 2)
    return (None, None)


def _recurrent_axes(node, index, rank) -> Axes:
    return (1, 2) if index in (1, 2) and rank == 3 else (None, None)


def _dq_recurrent_axes(node, index, rank) -> Axes:  # DynamicQuantizeLSTM stores W, R transposed: [dirs, I, 4H]
    return (2, 1) if index in (1, 2) and rank == 3 else (None, None)


@dataclass(frozen=True)
class WeightFacts:
    """How an op holds its weights. `axes(node, input_index, rank)` -> (out_axis, in_axis) of that operand."""

    kind: str  # "conv", "fc" or "recurrent": the layer kind in reports and figures
    inputs: tuple[int, ...]  # inputs that may hold a prunable weight
    axes: Callable[[onnx.NodeProto, int, int], Axes]
    bias: Optional[int] = None  # input index of the bias (a vector over the output channels), if any
    grouped: bool = False  # a 'group' attribute splits input and output channels into blocks
    shrinkable: bool = True  # dead-neuron removal may slice its output channels (False: blocked, with a note)
    domain: str = ""  # the op's domain ("": ai.onnx)
    refit: bool = True  # the layer-wise refit may fit it (False: a fused kernel whose output is not x @ W)

    def of(self, node: onnx.NodeProto) -> bool:
        """Whether `node` is this op in its domain (a custom op of the same name is not)."""
        return (node.domain or "") in ((self.domain,) if self.domain else ("", "ai.onnx"))


WEIGHT_OPS: dict[str, WeightFacts] = {
    "Conv": WeightFacts("conv", (1,), _conv_axes, bias=2, grouped=True),
    "ConvTranspose": WeightFacts("conv", (1,), _conv_transpose_axes, bias=2, grouped=True),
    # a deformable Conv (opset 19): W over taps read at learned offsets; pruned by magnitude and retrained by sgd,
    # neither refit (its product is not W times a stored input) nor shrunk (no channel rule)
    "DeformConv": WeightFacts("conv", (1,), _conv_axes, bias=3, grouped=True, shrinkable=False, refit=False),
    "Gemm": WeightFacts("fc", (0, 1), _gemm_axes, bias=2),
    "MatMul": WeightFacts("fc", (0, 1), _matmul_axes),
    # W (input) and R (recurrent) matrices; B, sequence_lens, initial states and peepholes are not weights.
    "LSTM": WeightFacts("recurrent", (1, 2), _recurrent_axes, bias=3),
    "GRU": WeightFacts("recurrent", (1, 2), _recurrent_axes, bias=3),
    "RNN": WeightFacts("recurrent", (1, 2), _recurrent_axes, bias=3),
    # Dynamic quantization: integer weights, seen as their float stand-ins (DYNAMIC_QUANT_WEIGHTS below)
    "ConvInteger": WeightFacts("conv", (1,), _conv_axes, grouped=True, shrinkable=False),
    "MatMulInteger": WeightFacts("fc", (1,), _matmul_axes, shrinkable=False),
    "DynamicQuantizeMatMul": WeightFacts("fc", (1,), _matmul_axes, bias=4, shrinkable=False, domain="com.microsoft"),
    "MatMulIntegerToFloat": WeightFacts("fc", (1,), _matmul_axes, bias=6, shrinkable=False, domain="com.microsoft"),
    "DynamicQuantizeLSTM": WeightFacts("recurrent", (1, 2), _dq_recurrent_axes, bias=3, shrinkable=False,
                                       domain="com.microsoft"),
    # onnxruntime's fused kernels: pruned by magnitude, neither refit nor shrunk (the table above)
    "Attention": WeightFacts("fc", (1,), _matmul_axes, bias=2, shrinkable=False, domain="com.microsoft", refit=False),
    "FusedMatMul": WeightFacts("fc", (1,), _fused_matmul_axes, shrinkable=False, domain="com.microsoft", refit=False),
    # a Gemm and its activation, as a session's saved optimized model writes it (ORT_ENABLE_EXTENDED and above)
    "FusedGemm": WeightFacts("fc", (1,), _gemm_axes, bias=2, shrinkable=False, domain="com.microsoft", refit=False),
    # ... and a Conv and its activation (sweep 30: ShuffleNet at ORT_ENABLE_EXTENDED, 37 of 56 convolutions)
    "FusedConv": WeightFacts("conv", (1,), _conv_axes, bias=2, grouped=True, shrinkable=False, domain="com.microsoft",
                             refit=False),
}
# A lookup table: Gather(table, ids) on axis 0 with ids computed from the data (an embedding). Its rows are
# read, not multiplied: no MACs, nothing to refit; pruned by magnitude within the table. Its columns are the features
# of what it returns: channel groups follow them (`channel_groups.rules_layout._lookup`), a dead one leaves the table.
LOOKUP_OPS: dict[str, WeightFacts] = {
    "Gather": WeightFacts("embedding", (0,), lambda node, index, rank: (None, None), shrinkable=False),
}
# The weight ops whose output channels channel groups and dead-neuron removal know how to follow.
CHANNEL_PRODUCERS = frozenset(op for op, f in WEIGHT_OPS.items() if f.shrinkable)
BIAS_INPUT = {op: f.bias for op, f in WEIGHT_OPS.items() if f.bias is not None}  # trained with their weights

ELEMENTWISE_UNARY = frozenset({
    "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Relu", "Sigmoid", "Tanh", "Erf", "Floor", "Ceil", "Round",
    "Sign", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Softsign",
    "Softplus", "Mish", "HardSwish", "Not", "IsNaN", "IsInf", "Identity", "LeakyRelu", "Elu", "Selu", "Celu",
    "ThresholdedRelu", "HardSigmoid", "Shrink", "Gelu", "Clip",
    "QuickGelu",  # onnxruntime's (com.microsoft) x sigmoid(alpha x)
    "Dropout",  # the identity at inference
})
ARITHMETIC = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Mod"})
COMPARISON = frozenset({"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor"})
CHANNELWISE = frozenset({"BatchNormalization", "PRelu"})
NORM_OPS = frozenset({"BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization"})
POOL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"})
SOFTMAX_OPS = frozenset({"Softmax", "LogSoftmax", "Hardmax"})
# Only move data of one tensor: every output element is one input element.
LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Identity", "Cast", "Squeeze", "Unsqueeze", "Flatten"})
REDUCE_OPS = frozenset({"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                        "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin"})
SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})
# Integer weights (op -> input index of the integer weight): not pruned. What it would take, said once.
# QGemm is onnxruntime's (com.microsoft) QOperator Gemm, which quantize_static writes for a Linear: its B at input 3
# (sweep 18: a QOperator CNN's refusal counted its QLinearConvs only and never named its two QGemm layers).
QUANTIZED_WEIGHT_OPS = {"ConvInteger": 1, "MatMulInteger": 1, "QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3,
                        "DequantizeLinear": 0,
                        # onnxruntime's dynamic quantization (com.microsoft): W, R of an LSTM; B of a MatMul
                        "DynamicQuantizeLSTM": (1, 2), "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1}
QUANTIZED_HOW = ("dequantize to float, prune, requantize: not supported for integer weights of a QLinearConv/"
                 "QLinearMatMul/QGemm whose weight, scales or bias are computed or read by other nodes too (or a "
                 "per-channel one below opset 13, a QGemm with transA, or with alpha != 1 and a bias; the others are "
                 "read as their QDQ form, passes/qoperator.py), "
                 "of a ConvInteger/MatMulInteger whose scale the graph does not multiply in after it "
                 "(DynamicQuantizeLinear -> op -> Cast -> Mul(scale)) or divide by (Keras' int8: "
                 "Cast(Round(x * a)) -> op -> Cast -> Div(Mul(a, scale))), nor one several nodes read or a subgraph "
                 "holds, nor behind a DequantizeLinear that is block-wise, has computed scales or reads 4-bit "
                 "(INT4/UINT4) or float8 values; pass the float model, an 8-bit QDQ model (onnxruntime's "
                 "quantize_static) or a dynamically quantized one (quantize_dynamic), whose weights are pruned on "
                 "their own grid")
# Dynamic quantization's integer ops multiply as these float ops do (MACs: passes/weights.py).
MULTIPLIES_AS = {"DeformConv": "Conv",
                 "ConvInteger": "Conv", "MatMulInteger": "MatMul", "DynamicQuantizeMatMul": "MatMul",
                 "MatMulIntegerToFloat": "MatMul", "DynamicQuantizeLSTM": "LSTM", "Attention": "MatMul",
                 "FusedMatMul": "MatMul", "FusedGemm": "Gemm", "FusedConv": "Conv"}
# Ops whose output for one sample depends on the other samples of the batch: dynamic quantization computes one
# activation scale per tensor (the input model itself changed 1% of an LSTM's classes between batches of 300 and 64),
# so runs of such a model are evaluated a sample at a time (converter/steps/data.py).
BATCH_DEPENDENT_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul"})
# Dynamic quantization's integer weights, pruned on their own grid (passes/quantized_weights.py): (domain, op) ->
# per integer weight (weight input, scale input or None: the Mul(input scale, weight scale) after the op holds it,
# zero-point input, the weight's per-channel axis).
DYNAMIC_QUANT_WEIGHTS = {
    ("", "ConvInteger"): ((1, None, 3, 0),),
    ("", "MatMulInteger"): ((1, None, 3, -1),),
    ("com.microsoft", "DynamicQuantizeMatMul"): ((1, 2, 3, -1),),
    ("com.microsoft", "MatMulIntegerToFloat"): ((1, 3, 5, -1),),
    ("com.microsoft", "DynamicQuantizeLSTM"): ((1, 8, 9, 0), (2, 10, 11, 0)),
}

# A layer's activation is read after this chain (calibration/activations.py: bias Add, BN, Relu, …).
ACTIVATION_CHAIN = ELEMENTWISE_UNARY | ARITHMETIC | CHANNELWISE
# Ops between a layer and the Dropout it feeds that keep its connection count (converter/finetune.py).
CONNECTION_PRESERVING = ELEMENTWISE_UNARY | ARITHMETIC | NORM_OPS | POOL_OPS | SOFTMAX_OPS | LAYOUT_OPS


def weight_facts(op_type: str) -> Optional[WeightFacts]:
    return WEIGHT_OPS.get(op_type)


def is_bias(node: onnx.NodeProto, name: str) -> bool:
    """Whether tensor `name` is `node`'s bias input."""
    f = WEIGHT_OPS.get(node.op_type)
    return (f is not None and f.of(node) and f.bias is not None and len(node.input) > f.bias
            and node.input[f.bias] == name)


# onnxruntime runs models stamped with ai.onnx opset 7 and later (its Versioning.md); older ones load only where an
# op's old version is still implemented (onnx's pytorch-converted test models at opset 6: Gemm(6) is not)
ORT_OLDEST_OPSET = 7


def older_than_onnxruntime(model: onnx.ModelProto) -> int | None:
    """The model's ai.onnx opset when it is older than onnxruntime promises to run (ORT_OLDEST_OPSET), else None
    (also for a model that imports no ai.onnx opset). Read from the opsets alone: prune's refusal and inspect's note."""
    from onnxprune.passes.storage.graphs import default_opset

    opset = default_opset(model)
    return opset if 0 < opset < ORT_OLDEST_OPSET else None
