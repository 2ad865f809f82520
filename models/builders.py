"""Small seeded ONNX graphs for tests (numpy + onnx.helper only, no torch).

Every builder returns an `onnx.ModelProto` with ir_version 8, opset 17, float32 tensors, a
dynamic batch axis "N", and random weights from `np.random.default_rng(seed)` scaled by
1/sqrt(fan_in) so activations stay O(1). Names follow the torch exporter: node
"/fc1/Gemm", output "/fc1/Gemm_output_0", initializers "fc1.weight" / "fc1.bias".
Graph input is "input"; graph output is "output" ("logits" for the LeNet look-alikes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
BATCH = "N"


class _Graph:
    """Accumulates nodes and initializers; helpers return the name of the produced tensor."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def weight(self, name: str, shape: Sequence[int], fan_in: int) -> str:
        return self.const(name, self.rng.standard_normal(shape) / math.sqrt(fan_in))

    def bias(self, name: str, size: int) -> str:
        return self.const(name, 0.1 * self.rng.standard_normal(size))

    def op(self, op_type: str, scope: str, inputs: Sequence[str], **attrs) -> str:
        name = f"/{scope}/{op_type}" if scope else f"/{op_type}"
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def gemm(self, x: str, scope: str, fan_in: int, fan_out: int) -> str:
        w = self.weight(f"{scope}.weight", (fan_out, fan_in), fan_in)
        return self.op("Gemm", scope, [x, w, self.bias(f"{scope}.bias", fan_out)], transB=1)

    def matmul(self, x: str, scope: str, fan_in: int, fan_out: int, transposed: bool = False) -> str:
        if transposed:  # weight stored [out, in], reaches MatMul through Transpose
            w = self.weight(f"{scope}.weight", (fan_out, fan_in), fan_in)
            w = self.op("Transpose", f"{scope}/weight", [w], perm=[1, 0])
        else:
            w = self.weight(f"{scope}.weight", (fan_in, fan_out), fan_in)
        y = self.op("MatMul", scope, [x, w])
        return self.op("Add", scope, [y, self.bias(f"{scope}.bias", fan_out)])

    def conv(self, x: str, scope: str, c_in: int, c_out: int, k: int, *, group: int = 1, pad: bool = True) -> str:
        fan_in = c_in // group * k * k
        w = self.weight(f"{scope}.weight", (c_out, c_in // group, k, k), fan_in)
        p = k // 2 if pad else 0
        return self.op("Conv", scope, [x, w, self.bias(f"{scope}.bias", c_out)],
                       kernel_shape=[k, k], pads=[p, p, p, p], strides=[1, 1], group=group)

    def batchnorm(self, x: str, scope: str, c: int) -> str:
        r = self.rng
        ins = [x, self.const(f"{scope}.weight", r.uniform(0.5, 1.5, c)), self.const(f"{scope}.bias", 0.1 * r.standard_normal(c)),
               self.const(f"{scope}.running_mean", 0.1 * r.standard_normal(c)),
               self.const(f"{scope}.running_var", r.uniform(0.5, 1.5, c))]
        return self.op("BatchNormalization", scope, ins, epsilon=1e-5)

    def relu(self, x: str, scope: str) -> str:
        return self.op("Relu", scope, [x])

    def model(self, name: str, input_shape: Sequence, output: str, output_shape: Sequence,
              output_name: str = "output") -> onnx.ModelProto:
        last = self.nodes[-1]
        assert last.output[0] == output, f"graph output '{output}' must come from the last node"
        last.output[0] = output_name
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [BATCH, *input_shape])],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [BATCH, *output_shape])],
            initializer=self.initializers,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                 ir_version=IR_VERSION, producer_name="onnxprune.models.builders")


def mlp_gemm(*, in_features: int = 16, hidden: Sequence[int] = (32, 16), out_features: int = 10,
             seed: int = 0) -> onnx.ModelProto:
    """[N, in] -> (Gemm transB=1, Relu)* -> Gemm -> [N, out]."""
    g, x, sizes = _Graph(seed), "input", [in_features, *hidden, out_features]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        x = g.gemm(x, f"fc{i}", a, b)
        if i < len(sizes) - 1:
            x = g.relu(x, f"relu{i}")
    return g.model("mlp_gemm", [in_features], x, [out_features])


def mlp_matmul(*, in_features: int = 16, hidden: Sequence[int] = (32, 16), out_features: int = 10,
               transposed_weights: bool = False, seed: int = 0) -> onnx.ModelProto:
    """tf2onnx style: MatMul + Add bias, Relu between; weights optionally through Transpose."""
    g, x, sizes = _Graph(seed), "input", [in_features, *hidden, out_features]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        x = g.matmul(x, f"fc{i}", a, b, transposed=transposed_weights)
        if i < len(sizes) - 1:
            x = g.relu(x, f"relu{i}")
    return g.model("mlp_matmul", [in_features], x, [out_features])


def conv_bn_relu(*, in_channels: int = 3, out_channels: int = 8, kernel: int = 3, size: int = 8,
                 seed: int = 0) -> onnx.ModelProto:
    """Conv (same padding) -> BatchNormalization -> Relu."""
    g = _Graph(seed)
    x = g.relu(g.batchnorm(g.conv("input", "conv", in_channels, out_channels, kernel), "bn", out_channels), "relu")
    return g.model("conv_bn_relu", [in_channels, size, size], x, [out_channels, size, size])


def residual_block(*, in_channels: int = 3, channels: int = 8, size: int = 8, seed: int = 0) -> onnx.ModelProto:
    """Stem conv-relu, then conv-bn-relu-conv-bn + Add(skip) -> Relu."""
    g = _Graph(seed)
    stem = g.relu(g.conv("input", "stem", in_channels, channels, 3), "stem")
    x = g.relu(g.batchnorm(g.conv(stem, "conv1", channels, channels, 3), "bn1", channels), "relu1")
    x = g.batchnorm(g.conv(x, "conv2", channels, channels, 3), "bn2", channels)
    x = g.relu(g.op("Add", "add", [x, stem]), "relu2")
    return g.model("residual_block", [in_channels, size, size], x, [channels, size, size])


def concat_branches(*, in_channels: int = 3, branch_channels: tuple[int, int] = (4, 6), out_channels: int = 8,
                    size: int = 8, seed: int = 0) -> onnx.ModelProto:
    """Branch A conv1x1-relu, branch B conv3x3-relu, Concat on channels, then conv1x1."""
    g, (ca, cb) = _Graph(seed), branch_channels
    a = g.relu(g.conv("input", "branch_a", in_channels, ca, 1), "branch_a")
    b = g.relu(g.conv("input", "branch_b", in_channels, cb, 3), "branch_b")
    x = g.op("Concat", "concat", [a, b], axis=1)
    x = g.conv(x, "head", ca + cb, out_channels, 1)
    return g.model("concat_branches", [in_channels, size, size], x, [out_channels, size, size])


def depthwise_separable(*, in_channels: int = 3, channels: int = 8, out_channels: int = 16, size: int = 8,
                        seed: int = 0) -> onnx.ModelProto:
    """Stem conv-relu, depthwise conv3x3 (group=channels)-relu, pointwise conv1x1."""
    g = _Graph(seed)
    x = g.relu(g.conv("input", "stem", in_channels, channels, 3), "stem")
    x = g.relu(g.conv(x, "depthwise", channels, channels, 3, group=channels), "depthwise")
    x = g.conv(x, "pointwise", channels, out_channels, 1)
    return g.model("depthwise_separable", [in_channels, size, size], x, [out_channels, size, size])


def strided_convs(*, in_channels: int = 4, channels: int = 6, size: int = 11, seed: int = 0) -> onnx.ModelProto:
    """Convs with every im2col case: stride 2 and asymmetric pads, dilation 2 with group 2, 3x3 depthwise, 2x1."""
    g = _Graph(seed)
    w1 = g.weight("s2.weight", (channels, in_channels, 3, 3), in_channels * 9)
    x = g.relu(g.op("Conv", "s2", ["input", w1, g.bias("s2.bias", channels)], kernel_shape=[3, 3],
                    strides=[2, 2], pads=[1, 0, 2, 1]), "s2")
    w2 = g.weight("dil.weight", (channels, channels // 2, 3, 3), channels // 2 * 9)
    x = g.relu(g.op("Conv", "dil", [x, w2], kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2], group=2), "dil")
    x = g.relu(g.conv(x, "dw", channels, channels, 3, group=channels), "dw")
    w4 = g.weight("tall.weight", (8, channels, 2, 1), channels * 2)
    x = g.op("Conv", "tall", [x, w4, g.bias("tall.bias", 8)], kernel_shape=[2, 1])
    h = (size + 3 - 3) // 2 + 1
    w = (size + 1 - 3) // 2 + 1
    return g.model("strided_convs", [in_channels, size, size], x, [8, h - 1, w])


def conv_transposes(*, in_channels: int = 4, channels: int = 6, size: int = 5, seed: int = 0) -> onnx.ModelProto:
    """ConvTransposes with every geometry the refit reads (a decoder's upsampling): stride 2 with pads 1 and
    output_padding 1 (a U-Net's 2x), dilation 2 with group 2 and asymmetric pads, auto_pad VALID with stride 3 and no
    bias, then a 1x1 Conv: [N, in, size, size] -> [N, 3, H, W]."""
    g = _Graph(seed)
    w1 = g.weight("up.weight", (in_channels, channels, 3, 3), in_channels * 9)
    x = g.relu(g.op("ConvTranspose", "up", ["input", w1, g.bias("up.bias", channels)], kernel_shape=[3, 3],
                    strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]), "up")
    h = 2 * size
    w2 = g.weight("dil.weight", (channels, channels // 2, 3, 3), channels // 2 * 9)
    x = g.relu(g.op("ConvTranspose", "dil", [x, w2, g.bias("dil.bias", channels)], kernel_shape=[3, 3],
                    dilations=[2, 2], pads=[1, 0, 2, 1], group=2), "dil")
    hh, ww = h + 4 - 3, h + 4 - 1
    w3 = g.weight("valid.weight", (channels, channels, 2, 3), channels * 6)
    x = g.relu(g.op("ConvTranspose", "valid", [x, w3], kernel_shape=[2, 3], strides=[3, 3], auto_pad="VALID"),
               "valid")
    hh, ww = 3 * (hh - 1) + 2, 3 * (ww - 1) + 3
    x = g.conv(x, "head", channels, 3, 1)
    return g.model("conv_transposes", [in_channels, size, size], x, [3, hh, ww])


def auto_pad_convs(*, explicit: bool = False, in_channels: int = 3, channels: int = 6, size: int = 11,
                   seed: int = 0) -> onnx.ModelProto:
    """Convs padded by auto_pad, as keras2onnx writes them: SAME_UPPER (kernel 4x3, stride 2x1: odd pads, the extra
    at the end), SAME_LOWER (kernel 2x2: the pad at the start), VALID. `explicit`: the same graph and weights with
    the equivalent explicit pads instead (on a size x size input)."""
    g = _Graph(seed)
    layers = [("up", (4, 3), [2, 1], "SAME_UPPER", [1, 1, 2, 1]), ("low", (2, 2), [1, 1], "SAME_LOWER", [1, 1, 0, 0]),
              ("valid", (3, 3), [1, 1], "VALID", [0, 0, 0, 0])]
    x, c = "input", in_channels
    for scope, k, strides, auto_pad, pads in layers:
        w = g.weight(f"{scope}.weight", (channels, c, *k), c * k[0] * k[1])
        pad = {"pads": pads} if explicit else {"auto_pad": auto_pad}
        x = g.op("Conv", scope, [x, w, g.bias(f"{scope}.bias", channels)], kernel_shape=list(k), strides=strides,
                 **pad)
        x = g.relu(x, scope) if scope != "valid" else x
        c = channels
    h = -(-size // 2)
    return g.model("auto_pad_convs", [in_channels, size, size], x, [channels, h - 2, size - 2])


def tied_cell(*, in_features: int = 16, hidden: int = 12, out_features: int = 4, steps: int = 3,
              copies: bool = False, seed: int = 0) -> onnx.ModelProto:
    """One cell applied `steps` times (a legacy export of a module called in a loop): Gemm inp -> Relu -> (Gemm
    'cellK' with the one weight 'cell.W' and bias 'cell.b', Relu)*steps -> Gemm out -> [N, out]. With `copies`,
    each step reads its own bit-identical copy 'cell.W.K' and 'cell.b.K' (how torch's dynamo exporter unrolls
    nn.RNN)."""
    g = _Graph(seed)
    x = g.relu(g.gemm("input", "inp", in_features, hidden), "inp")
    w = g.rng.standard_normal((hidden, hidden)) / math.sqrt(hidden)
    b = 0.1 * g.rng.standard_normal(hidden)
    if not copies:
        g.const("cell.W", w), g.const("cell.b", b)
    for k in range(steps):
        names = (f"cell.W.{k}", f"cell.b.{k}") if copies else ("cell.W", "cell.b")
        if copies:
            g.const(names[0], w), g.const(names[1], b)
        out = f"/cell{k}/Gemm_output_0"
        g.nodes.append(helper.make_node("Gemm", [x, *names], [out], name=f"cell{k}", transB=1))
        x = g.relu(out, f"cell{k}")
    return g.model("tied_cell", [in_features], g.gemm(x, "out", hidden, out_features), [out_features])


def transposed_gemm(*, in_features: int = 16, hidden: int = 12, out_features: int = 4, seed: int = 0) -> onnx.ModelProto:
    """A linear layer written as a transposed product, the weight Gemm's A operand (Transpose(W·x^T) = x·W^T):
    Transpose(x) -> Gemm(W1, x^T) -> Transpose -> Add b1 -> Relu -> Gemm fc2 -> [N, out]."""
    g = _Graph(seed)
    xt = g.op("Transpose", "x_t", ["input"], perm=[1, 0])
    w = g.weight("fc1.weight", (hidden, in_features), in_features)
    h = g.op("Transpose", "fc1/t", [g.op("Gemm", "fc1", [w, xt])], perm=[1, 0])
    h = g.relu(g.op("Add", "fc1", [h, g.bias("fc1.bias", hidden)]), "fc1")
    return g.model("transposed_gemm", [in_features], g.gemm(h, "fc2", hidden, out_features), [out_features])


def tiny_attention(*, seq_len: int = 4, d_model: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Single-head self-attention on [N, T, d]: LayerNorm(x + Wo·softmax(QK^T/sqrt(d))V)."""
    g = _Graph(seed)
    q, k, v = (g.matmul("input", s, d_model, d_model) for s in ("q_proj", "k_proj", "v_proj"))
    kt = g.op("Transpose", "k_t", [k], perm=[0, 2, 1])
    scores = g.op("Div", "scale", [g.op("MatMul", "scores", [q, kt]), g.const("scale.value", math.sqrt(d_model))])
    ctx = g.op("MatMul", "context", [g.op("Softmax", "attn", [scores], axis=-1), v])
    x = g.op("Add", "residual", ["input", g.matmul(ctx, "out_proj", d_model, d_model)])
    scale = g.const("ln.weight", g.rng.uniform(0.5, 1.5, d_model))
    x = g.op("LayerNormalization", "ln", [x, scale, g.bias("ln.bias", d_model)], axis=-1, epsilon=1e-5)
    return g.model("tiny_attention", [seq_len, d_model], x, [seq_len, d_model])


def log_filterbank(*, in_features: int = 24, bins: int = 16, bands: int = 6, seed: int = 0) -> onnx.ModelProto:
    """A log-energy front end, as a log-mel one: MatMul (a basis of either sign) -> square -> MatMul by a
    nonnegative triangular filterbank -> + 1e-6 -> Log -> [N, bands]. The Log is finite only while the filterbank's
    outputs stay >= 0 (the refit must keep that layer nonnegative)."""
    g = _Graph(seed)
    basis = g.const("basis.weight", g.rng.standard_normal((in_features, bins)) / math.sqrt(in_features))
    y = g.op("MatMul", "basis", ["input", basis])
    power = g.op("Mul", "power", [y, y])
    centres = np.linspace(0, bins - 1, bands + 2)
    k = np.arange(bins)[:, None]
    lo, c, hi = centres[:-2][None], centres[1:-1][None], centres[2:][None]
    bank = np.clip(np.minimum((k - lo) / (c - lo), (hi - k) / (hi - c)), 0, None) + 0.05 * (g.rng.random((bins, bands)))
    e = g.op("MatMul", "bank", [power, g.const("bank.weight", bank)])
    e = g.op("Add", "floor", [e, g.const("floor", np.array(1e-6))])
    return g.model("log_filterbank", [in_features], g.op("Log", "log", [e]), [bands])


def lenet300_like(*, hidden: tuple[int, int] = (300, 100), seed: int = 0) -> onnx.ModelProto:
    """Same graph as models/lenet300.onnx (Flatten, Gemm-Relu-Gemm-Relu-Gemm) with random weights."""
    g = _Graph(seed)
    x = g.op("Flatten", "flatten", ["input"], axis=1)
    x = g.relu(g.gemm(x, "fc1", 784, hidden[0]), "relu1")
    x = g.relu(g.gemm(x, "fc2", hidden[0], hidden[1]), "relu2")
    x = g.gemm(x, "fc3", hidden[1], 10)
    return g.model("lenet300_like", [1, 28, 28], x, [10], output_name="logits")


def lenet5_like(*, conv_channels: tuple[int, int] = (20, 50), fc_units: int = 500, seed: int = 0) -> onnx.ModelProto:
    """Same graph as models/lenet5.onnx (Caffe LeNet-5: no ReLU after the convs) with random weights."""
    g, (c1, c2) = _Graph(seed), conv_channels
    pool = dict(kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("MaxPool", "pool1", [g.conv("input", "conv1", 1, c1, 5, pad=False)], **pool)
    x = g.op("MaxPool", "pool2", [g.conv(x, "conv2", c1, c2, 5, pad=False)], **pool)
    x = g.op("Flatten", "flatten", [x], axis=1)
    x = g.relu(g.gemm(x, "fc1", c2 * 4 * 4, fc_units), "relu1")
    x = g.gemm(x, "fc2", fc_units, 10)
    return g.model("lenet5_like", [1, 28, 28], x, [10], output_name="logits")



def conv_sigmoid_head(*, in_channels: int = 3, channels: int = 32, blocks: int = 3, size: int = 16,
                      dead: float = 0.25, logit_bias: float = -12.0, seed: int = 0) -> onnx.ModelProto:
    """A text-detector-like stack ending in a saturating Sigmoid, with dead channels as pruning leaves them.

    Stem conv3x3-relu, then `blocks` x (conv3x3-BN-relu, conv1x1-relu), then conv1x1 to one channel + Sigmoid. In
    every block a `dead` fraction of the conv3x3's filters is zero (constant channels relu(BN(bias)) that the
    conv1x1 after it folds into its bias) and so is the same fraction of the conv1x1's filters, with the inputs the
    next conv3x3 reads from them (unread channels). `logit_bias` puts the map in the Sigmoid's tail (~1e-4)."""
    g = _Graph(seed)
    x, n_dead = g.relu(g.conv("input", "stem", in_channels, channels, 3), "stem"), round(dead * channels)
    for b in range(blocks):
        x = g.relu(g.batchnorm(g.conv(x, f"block{b}.conv3", channels, channels, 3), f"block{b}.bn", channels),
                   f"block{b}.conv3")
        x = g.relu(g.conv(x, f"block{b}.conv1", channels, channels, 1), f"block{b}.conv1")
    w = g.weight("head.weight", (1, channels, 1, 1), channels)
    x = g.op("Conv", "head", [x, w, g.const("head.bias", [logit_bias])], kernel_shape=[1, 1])
    x = g.op("Sigmoid", "sigmoid", [x])
    weights = {t.name: t for t in g.initializers}
    for b in range(blocks):
        rows3, rows1 = (g.rng.choice(channels, n_dead, replace=False) for _ in range(2))
        _zero(weights[f"block{b}.conv3.weight"], rows3, 0)
        _zero(weights[f"block{b}.conv1.weight"], rows1, 0)
        _zero(weights[f"block{b + 1}.conv3.weight" if b + 1 < blocks else "head.weight"], rows1, 1)
    return g.model("conv_sigmoid_head", [in_channels, size, size], x, [1, size, size])


def _zero(tensor: onnx.TensorProto, index, axis: int) -> None:
    a = numpy_helper.to_array(tensor).copy()
    np.moveaxis(a, axis, 0)[index] = 0.0
    tensor.CopyFrom(numpy_helper.from_array(a, tensor.name))


BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {
    f.__name__: f
    for f in (mlp_gemm, mlp_matmul, conv_bn_relu, residual_block, concat_branches, depthwise_separable,
              tiny_attention, lenet300_like, lenet5_like)
}


def as_constant_nodes(model: onnx.ModelProto, suffix: str = ".weight") -> onnx.ModelProto:
    """paddle2onnx style: the initializers whose name ends with `suffix` become Constant nodes at the front."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    moved = [t for t in out.graph.initializer if t.name.endswith(suffix)]
    keep = [t for t in out.graph.initializer if not t.name.endswith(suffix)]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    consts = [helper.make_node("Constant", [], [t.name], value=t, name=f"const/{t.name}") for t in moved]
    nodes = consts + list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def as_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A whole-model float16 copy (weights, inputs, outputs), as `model.half()` then export writes it."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for v in [*out.graph.input, *out.graph.output]:
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
    del out.graph.value_info[:]
    return out


def random_input(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """A seeded float32 feed for a builder's model, batch axis set to `batch`."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in model.graph.input:
        dims = [batch if d.dim_param else d.dim_value for d in inp.type.tensor_type.shape.dim]
        feeds[inp.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds
