"""Small seeded graphs and checks for the dead-neuron tests (onnx.helper + numpy; ir_version 8, opset 17, batch "N").

Weights are N(0, 1/fan_in), biases N(0, 0.1²); `zero(model, init, axis, idx)` kills channels afterwards:
kind (a) zeroes a consumer's input slice, kind (b) a producer's output slice.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.oracle import assert_same_outputs, check_full


class G:
    """Accumulates nodes and initializers; `op` returns the (first) output name."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, array) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, name: str, shape, fan_in: int) -> str:
        return self.init(name, (self.rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32))

    def bias(self, name: str, n: int) -> str:
        return self.init(name, (0.1 * self.rng.standard_normal(n)).astype(np.float32))

    def op(self, op_type: str, name: str, inputs, n_out: int = 1, **attrs) -> str:
        outs = [f"{name}_out{i}" if i else f"{name}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs[0]

    def gemm(self, x: str, name: str, n_in: int, n_out: int, trans_b: int = 1, bias: bool = True) -> str:
        shape = (n_out, n_in) if trans_b else (n_in, n_out)
        ins = [x, self.weight(f"{name}.weight", shape, n_in)] + ([self.bias(f"{name}.bias", n_out)] if bias else [])
        return self.op("Gemm", name, ins, transB=trans_b)

    def conv(self, x: str, name: str, c_in: int, c_out: int, k: int = 3, pad: int = 0, group: int = 1) -> str:
        w = self.weight(f"{name}.weight", (c_out, c_in // group, k, k), c_in // group * k * k)
        return self.op("Conv", name, [x, w, self.bias(f"{name}.bias", c_out)], pads=[pad] * 4, group=group,
                       kernel_shape=[k, k])

    def bn(self, x: str, name: str, c: int) -> str:
        r = self.rng
        ins = [self.init(f"{name}.{p}", v.astype(np.float32)) for p, v in (
            ("scale", 1 + 0.1 * r.standard_normal(c)), ("bias", 0.1 * r.standard_normal(c)),
            ("mean", 0.1 * r.standard_normal(c)), ("var", 1 + 0.1 * r.random(c)))]
        return self.op("BatchNormalization", name, [x, *ins])

    def model(self, inputs: dict[str, list], outputs: dict[str, list]) -> onnx.ModelProto:
        vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
        graph = helper.make_graph(self.nodes, "g", [vi(n, s) for n, s in inputs.items()],
                                  [vi(n, s) for n, s in outputs.items()], self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
        m.ir_version = 8
        helper.set_model_props(m, {"origin": "tests/passes/_graphs.py"})
        return m


# -- builders ---------------------------------------------------------------------------------------------------
def activation(g: G, x: str, name: str, act: str) -> str:
    """One activation; "GeluErf" is the exported pattern x·0.5·(1+erf(x/√2)), "Clip" is Clip(x, -0.05, 0.3)."""
    if act == "GeluErf":
        sqrt2 = g.init(f"{name}.sqrt2", np.float32(math.sqrt(2)))
        e = g.op("Erf", f"{name}_erf", [g.op("Div", f"{name}_div", [x, sqrt2])])
        one = g.op("Add", f"{name}_one", [e, g.init(f"{name}.one", np.float32(1))])
        half = g.init(f"{name}.half", np.float32(0.5))
        return g.op("Mul", f"{name}_half", [g.op("Mul", f"{name}_mul", [x, one]), half])
    if act == "GeluTanh":  # gelu_new, GPT-2/T5's form: x·0.5·(1+tanh(√(2/π)·(x+0.044715·x³))), x³ by Pow
        cube = g.op("Pow", f"{name}_pow", [x, g.init(f"{name}.three", np.float32(3))])
        inner = g.op("Add", f"{name}_inner", [x, g.op("Mul", f"{name}_k", [cube, g.init(f"{name}.k", np.float32(0.044715))])])
        t = g.op("Tanh", f"{name}_tanh", [g.op("Mul", f"{name}_c", [inner, g.init(f"{name}.c", np.float32(math.sqrt(2 / math.pi)))])])
        one = g.op("Add", f"{name}_one", [t, g.init(f"{name}.one", np.float32(1))])
        return g.op("Mul", f"{name}_mul", [g.op("Mul", f"{name}_half", [x, g.init(f"{name}.half", np.float32(0.5))]), one])
    if act == "Clip":
        return g.op("Clip", name, [x, g.init(f"{name}.min", np.float32(-0.05)), g.init(f"{name}.max", np.float32(0.3))])
    return g.op(act, name, [x])


def mlp(widths=(20, 12, 10, 4), trans_b: int = 1, seed: int = 0, act: str = "Relu", bias: bool = True,
        input_shape=None) -> onnx.ModelProto:
    """Gemm + activation chain; `input_shape` (e.g. [N, 1, 28, 28]) puts a Flatten in front."""
    g, x = G(seed), "x"
    if input_shape is not None:
        x = g.op("Flatten", "flat", [x], axis=1)
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        x = g.gemm(x, f"fc{i + 1}", a, b, trans_b, bias)
        if i < len(widths) - 2:
            x = activation(g, x, f"act{i + 1}", act)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": input_shape or ["N", widths[0]]}, {"y": ["N", widths[-1]]})


def matmul_mlp(widths=(16, 12, 5), transposed: bool = True, seed: int = 0, bias: bool = True) -> onnx.ModelProto:
    """MatMul + bias Add on [N, 3, features]; with `transposed` the weight is stored [out, in] behind a Transpose."""
    g, x = G(seed), "x"
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        n = f"fc{i + 1}"
        if transposed:
            w = g.op("Transpose", f"{n}_t", [g.weight(f"{n}.weight", (b, a), a)], perm=[1, 0])
        else:
            w = g.weight(f"{n}.weight", (a, b), a)
        x = g.op("MatMul", n, [x, w])
        if bias:
            x = g.op("Add", f"{n}_add", [x, g.bias(f"{n}.bias", b)])
        if i < len(widths) - 2:
            x = g.op("Relu", f"act{i + 1}", [x])
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, widths[0]]}, {"y": ["N", 3, widths[-1]]})


def column_major_mlp(widths=(20, 12, 10, 4), seed: int = 0, act: str = "Relu", bias: bool = True,
                     trans_a: int = 0) -> onnx.ModelProto:
    """The weights as Gemm's first operand (a column-major export): fc1 = Gemm(W1, x, b1 [h, 1], transB=1) gives
    [h1, N], the middle layers Gemm(W, h) (with `trans_a`, W stored [in, out]), the last one Gemm(h, W, transA=1,
    transB=1) back to [N, out]."""
    g, x, last = G(seed), "x", len(widths) - 2
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        n = f"fc{i + 1}"
        if i == last:
            ins = [x, g.weight(f"{n}.weight", (b, a), a)] + ([g.bias(f"{n}.bias", b)] if bias else [])
            x = g.op("Gemm", n, ins, transA=1, transB=1)
            continue
        first = i == 0 or not trans_a
        w = g.weight(f"{n}.weight", (b, a) if first else (a, b), a)
        c = [g.init(f"{n}.bias", (0.1 * g.rng.standard_normal((b, 1))).astype(np.float32))] if bias else []
        x = g.op("Gemm", n, [w, x, *c], **({"transB": 1} if i == 0 else {} if first else {"transA": 1}))
        x = activation(g, x, f"act{i + 1}", act)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", widths[0]]}, {"y": ["N", widths[-1]]})


def first_operand_matmul_mlp(widths=(16, 12, 5), seed: int = 0, bias: bool = True) -> onnx.ModelProto:
    """MatMul(W [out, in], X [N, in, 3]) + a column bias [out, 1]: the channels on axis -2 of every activation."""
    g = G(seed)
    x = g.op("Transpose", "t_in", ["x"], perm=[0, 2, 1])
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        n = f"fc{i + 1}"
        x = g.op("MatMul", n, [g.weight(f"{n}.weight", (b, a), a), x])
        if bias:
            column = (0.1 * g.rng.standard_normal((b, 1))).astype(np.float32)
            x = g.op("Add", f"{n}_add", [x, g.init(f"{n}.bias", column)])
        if i < len(widths) - 2:
            x = g.op("Relu", f"act{i + 1}", [x])
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, widths[0]]}, {"y": ["N", widths[-1], 3]})


def lenet5(seed: int = 0, flatten: str = "Flatten") -> onnx.ModelProto:
    """conv-bn-relu-pool ×2, flatten, three Gemms (28×28 input, 16×4×4 features)."""
    g = G(seed)
    x = g.op("MaxPool", "p1", [g.op("Relu", "r1", [g.bn(g.conv("x", "c1", 1, 6, 5), "bn1", 6)])],
             kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("MaxPool", "p2", [g.op("Relu", "r2", [g.bn(g.conv(x, "c2", 6, 16, 5), "bn2", 16)])],
             kernel_shape=[2, 2], strides=[2, 2])
    if flatten == "Flatten":
        x = g.op("Flatten", "flat", [x], axis=1)
    else:
        x = g.op("Reshape", "flat", [x, g.init("flat.shape", np.array([-1, 256], dtype=np.int64))])
    x = g.op("Relu", "r3", [g.gemm(x, "fc1", 256, 120)])
    x = g.op("Relu", "r4", [g.gemm(x, "fc2", 120, 84)])
    g.gemm(x, "fc3", 84, 10)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 1, 28, 28]}, {"y": ["N", 10]})


def residual(seed: int = 0, branch_k: int = 1) -> onnx.ModelProto:
    """stem conv 3×3 ─┬─ conv a ─ BN ─ Relu ─ conv b ─ Add ─ Relu ─ GAP ─ Flatten ─ Gemm head; 8 channels."""
    g, pad = G(seed), branch_k // 2
    s = g.op("Relu", "stem_relu", [g.conv("x", "stem", 3, 8, 3, pad=1)])
    a = g.op("Relu", "a_relu", [g.bn(g.conv(s, "a", 8, 8, branch_k, pad=pad), "a_bn", 8)])
    x = g.op("Relu", "res_relu", [g.op("Add", "res_add", [s, g.conv(a, "b", 8, 8, branch_k, pad=pad)])])
    x = g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [x])])
    g.gemm(x, "head", 8, 5)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, 8, 8]}, {"y": ["N", 5]})


def concat_split(seed: int = 0) -> onnx.ModelProto:
    """Two branches (p: 4, q: 6 channels) concatenated into r (1×1, 10 channels), split [4, 6] into u and v, added."""
    g = G(seed)
    p = g.op("Relu", "p_relu", [g.conv("x", "p", 3, 4, 3)])
    q = g.op("Relu", "q_relu", [g.conv("x", "q", 3, 6, 3)])
    r = g.op("Relu", "r_relu", [g.conv(g.op("Concat", "cat", [p, q], axis=1), "r", 10, 10, 1)])
    g.op("Split", "split", [r, g.init("split.sizes", np.array([4, 6], dtype=np.int64))], n_out=2, axis=1)
    u, v = g.conv("split_out", "u", 4, 5, 1), g.conv("split_out1", "v", 6, 5, 1)
    x = g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [g.op("Add", "sum", [u, v])])])
    g.gemm(x, "head", 5, 3)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, 10, 10]}, {"y": ["N", 3]})


def depthwise_separable(seed: int = 0, multiplier: int = 1, pad: int = 1) -> onnx.ModelProto:
    """pw0 1×1 (3→8) ─ Relu ─ dw 3×3 (group 8, ×multiplier) ─ BN ─ Relu ─ pw1 1×1 (→6) ─ Relu ─ GAP ─ Gemm."""
    g, c = G(seed), 8 * multiplier
    x = g.op("Relu", "pw0_relu", [g.conv("x", "pw0", 3, 8, 1)])
    w = g.weight("dw.weight", (c, 1, 3, 3), 9)
    x = g.op("Conv", "dw", [x, w, g.bias("dw.bias", c)], group=8, kernel_shape=[3, 3], pads=[pad] * 4)
    x = g.op("Relu", "dw_relu", [g.bn(x, "dw_bn", c)])
    x = g.op("Relu", "pw1_relu", [g.conv(x, "pw1", c, 6, 1)])
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [x])]), "head", 6, 4)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, 12, 12]}, {"y": ["N", 4]})


def cnn_with_pool(pool: str, seed: int = 0, **attrs) -> onnx.ModelProto:
    """c1 3×3 (3→6) ─ Relu ─ <pool> ─ c2 1×1 (→5) ─ Relu ─ GAP ─ Flatten ─ Gemm."""
    g = G(seed)
    x = g.op(pool, "pool", [g.op("Relu", "r1", [g.conv("x", "c1", 3, 6, 3)])], **attrs)
    x = g.op("Relu", "r2", [g.conv(x, "c2", 6, 5, 1)])
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [x])]), "head", 5, 3)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, 9, 9]}, {"y": ["N", 3]})


def cnn_with_reduce(op: str = "ReduceMean", keepdims: int = 0, axes=(2, 3), seed: int = 0) -> onnx.ModelProto:
    """c1 3×3 (3→6) ─ Relu ─ <op> over `axes` (an attribute, or ReduceSum's input at opset 17) ─ [Flatten when
    keepdims] ─ Gemm head (→3): torch's x.mean((2, 3)) head, Keras's GlobalAveragePooling2D through tf2onnx."""
    g = G(seed)
    x = g.op("Relu", "r1", [g.conv("x", "c1", 3, 6, 3)])
    if op == "ReduceSum":
        x = g.op(op, "reduce", [x, g.init("reduce.axes", np.array(axes, dtype=np.int64))], keepdims=keepdims)
    else:
        x = g.op(op, "reduce", [x], axes=list(axes), keepdims=keepdims)
    if keepdims:
        x = g.op("Flatten", "flat", [x])
    width = 6 if 1 not in axes else 7 * 7
    g.gemm(x, "head", width, 3)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, 9, 9]}, {"y": ["N", 3]})


def channels_layer_norm(seed: int = 0) -> onnx.ModelProto:
    """c1 1×1 (3→6) ─ Transpose to channels-last ─ LayerNormalization over the channels ─ MatMul (6→4): ConvNeXt's."""
    g = G(seed)
    x = g.op("Transpose", "nhwc", [g.conv("x", "c1", 3, 6, 1)], perm=[0, 2, 3, 1])
    x = g.op("LayerNormalization", "ln", [x, g.init("ln.scale", np.ones(6, np.float32)),
                                          g.init("ln.bias", np.zeros(6, np.float32))], axis=-1)
    g.op("MatMul", "fc", [x, g.weight("fc.weight", (6, 4), 6)])
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, 5, 5]}, {"y": ["N", 5, 5, 4]})


def conv_transpose(seed: int = 0) -> onnx.ModelProto:
    """c1 3×3 (3→6) ─ Relu ─ ConvTranspose t 3×3 (6→5) ─ Relu ─ c2 1×1 (→4) ─ GAP ─ Flatten ─ Gemm."""
    g = G(seed)
    x = g.op("Relu", "r1", [g.conv("x", "c1", 3, 6, 3)])
    w = g.weight("t.weight", (6, 5, 3, 3), 6 * 9)
    x = g.op("Relu", "r2", [g.op("ConvTranspose", "t", [x, w, g.bias("t.bias", 5)], kernel_shape=[3, 3])])
    x = g.conv(x, "c2", 5, 4, 1)
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [x])]), "head", 4, 3)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, 8, 8]}, {"y": ["N", 3]})


def prelu_resize(seed: int = 0, slope=(1, 6, 1, 1), resize: str = "scales", mode: str = "nearest",
                 shared_slope: bool = False) -> onnx.ModelProto:
    """c1 3×3 (3→6) ─ PRelu ─ ×2 upsampling ─ c2 1×1 (→5) ─ Relu ─ GAP ─ Flatten ─ Gemm; batch fixed at 3.

    resize: "scales" (Resize, scales [1, 1, 2, 2]), "sizes" ([3, 6, 14, 14]), "axes" (opset 18, sizes [14, 14] on
    axes [2, 3]), "channels" (scales [1, 2, 2, 2]: the channel axis doubles, c2 reads 12), "upsample" (opset 9
    Upsample, scales as input). `shared_slope`: c2's PRelu reads c1's slope too (c2 then has 6 channels)."""
    g = G(seed)
    slope_name = g.init("slope", (0.25 + 0.1 * g.rng.standard_normal(slope)).astype(np.float32))
    x = g.op("PRelu", "act1", [g.conv("x", "c1", 3, 6, 3), slope_name])
    if resize == "upsample":
        x = g.op("Upsample", "up", [x, g.init("scales", np.array([1, 1, 2, 2], np.float32))], mode=mode)
    else:
        factors = {"scales": ("scales", [1, 1, 2, 2], np.float32), "channels": ("scales", [1, 2, 2, 2], np.float32),
                   "sizes": ("sizes", [3, 6, 14, 14], np.int64), "axes": ("sizes", [14, 14], np.int64)}[resize]
        k = g.init(factors[0], np.array(factors[1], factors[2]))
        ins = [x, "", k] if factors[0] == "scales" else [x, "", "", k]
        x = g.op("Resize", "up", ins, mode=mode, **({"axes": [2, 3]} if resize == "axes" else {}))
    c_mid = 12 if resize == "channels" else 6
    c_out = 6 if shared_slope else 5
    x = g.conv(x, "c2", c_mid, c_out, 1)
    x = g.op("PRelu", "act2", [x, slope_name]) if shared_slope else g.op("Relu", "r2", [x])
    _head(g, x, c_out)
    m = g.model({"x": [3, 3, 9, 9]}, {"y": [3, 3]})
    m.opset_import[0].version = {"axes": 18, "upsample": 9}.get(resize, 17)
    return m


def _head(g: G, x: str, c: int, n_out: int = 3) -> None:
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [x])]), "head", c, n_out)
    g.nodes[-1].output[0] = "y"


def channels_last(seed: int = 0) -> onnx.ModelProto:
    """c1 1×1 (3→6) ─ Relu ─ Transpose to NHWC ─ MatMul [6, 4] ─ Add: channels move to the last axis."""
    g = G(seed)
    x = g.op("Transpose", "nhwc", [g.op("Relu", "r1", [g.conv("x", "c1", 3, 6, 1)])], perm=[0, 2, 3, 1])
    g.op("Add", "fc_add", [g.op("MatMul", "fc", [x, g.weight("fc.weight", (6, 4), 6)]), g.bias("fc.bias", 4)])
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, 5, 5]}, {"y": ["N", 5, 5, 4]})


def squeeze_unsqueeze(seed: int = 0) -> onnx.ModelProto:
    """c1 ─ Relu ─ GAP ─ Squeeze ─ Gemm fc ─ Relu ─ Unsqueeze ─ c2 1×1 ─ GAP ─ Flatten ─ Gemm head."""
    g = G(seed)
    axes = g.init("axes", np.array([2, 3], dtype=np.int64))
    x = g.op("GlobalAveragePool", "gap0", [g.op("Relu", "r1", [g.conv("x", "c1", 3, 6, 3)])])
    x = g.op("Squeeze", "sq", [x, axes])
    x = g.op("Unsqueeze", "unsq", [g.op("Relu", "r2", [g.gemm(x, "fc", 6, 5)]), axes])
    _head(g, g.conv(x, "c2", 5, 4, 1), 4)
    return g.model({"x": ["N", 3, 6, 6]}, {"y": ["N", 3]})


def ghost_slice(seed: int = 0) -> onnx.ModelProto:
    """GhostNet's cat([p, cheap(p)])[:, :5] (a Slice keeping fewer channels than the Concat holds; cheap is
    depthwise) into y (1×1, 5 channels), then ReXNet's partial residual cat([y[:, :3] + stem, y[:, 3:]]) (the tail
    sliced on axes [3, 1], spatially whole), GAP, Gemm head."""
    g = G(seed)
    s = g.op("Relu", "stem_relu", [g.conv("x", "stem", 3, 3, 3, pad=1)])
    p = g.op("Relu", "p_relu", [g.conv(s, "p", 3, 3, 1)])
    w = g.weight("dw.weight", (3, 1, 3, 3), 9)
    cheap = g.op("Relu", "dw_relu", [g.op("Conv", "dw", [p, w, g.bias("dw.bias", 3)], group=3, kernel_shape=[3, 3],
                                           pads=[1] * 4)])
    i64 = lambda name, v: g.init(name, np.array(v, dtype=np.int64))  # noqa: E731
    cat = g.op("Concat", "cat", [p, cheap], axis=1)
    gh = g.op("Slice", "ghost_slice", [cat, i64("gs.starts", [0]), i64("gs.ends", [5]), i64("gs.axes", [1])])
    y = g.conv(gh, "y", 5, 5, 1)
    head = g.op("Slice", "head_slice", [y, i64("hs.starts", [0]), i64("hs.ends", [3]), i64("hs.axes", [-3])])
    tail = g.op("Slice", "tail_slice", [y, i64("ts.starts", [0, 3]), i64("ts.ends", [10, 2**63 - 1]),
                                        i64("ts.axes", [3, 1]), i64("ts.steps", [1, 1])])
    z = g.op("Concat", "partial_res", [g.op("Add", "res_add", [head, s]), tail], axis=1)
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [z])]), "head", 5, 3)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, 10, 10]}, {"y": ["N", 3]})


def grouped_conv(seed: int = 0) -> onnx.ModelProto:
    """p 3×3 (3→8) ─ Relu ─ q 3×3 padded, group 2 (8→8) ─ Relu ─ r 1×1, group 4 (8→4) ─ Relu ─ GAP ─ Gemm head."""
    g = G(seed)
    x = g.op("Relu", "p_relu", [g.conv("x", "p", 3, 8, 3, pad=1)])
    x = g.op("Relu", "q_relu", [g.conv(x, "q", 8, 8, 3, pad=1, group=2)])
    x = g.op("Relu", "r_relu", [g.conv(x, "r", 8, 4, 1, group=4)])
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [x])]), "head", 4, 3)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, 6, 6]}, {"y": ["N", 3]})


def squeeze_excite(seed: int = 0) -> onnx.ModelProto:
    """s = Relu(c1 x); gate = Sigmoid(fc2(Relu(fc1(GAP s)))); c2(s · gate): the Mul merges c1 with fc2."""
    g = G(seed)
    s = g.op("Relu", "r1", [g.conv("x", "c1", 3, 6, 3)])
    z = g.op("Flatten", "se_flat", [g.op("GlobalAveragePool", "se_gap", [s])])
    z = g.op("Relu", "r_fc1", [g.gemm(z, "fc1", 6, 3)])
    gate = g.op("Sigmoid", "gate", [g.gemm(z, "fc2", 3, 6)])
    gate = g.op("Unsqueeze", "gate_4d", [gate, g.init("axes", np.array([2, 3], dtype=np.int64))])
    _head(g, g.conv(g.op("Mul", "scale", [s, gate]), "c2", 6, 4, 1), 4)
    return g.model({"x": ["N", 3, 6, 6]}, {"y": ["N", 3]})


def squeeze_excite_expand(form: str = "shape", seed: int = 0) -> onnx.ModelProto:
    """The gate broadcast by `y.view(b, c, 1, 1).expand_as(s)`, as torch writes it: "shape" (legacy) views the gate
    to [N, C, 1, 1] with C read from Shape(s) and expands it to Shape(s); "concat" (dynamo) views it to the constant
    [-1, 6, 1, 1] and expands it to Concat(Shape(x)[:1], [6], [4], [4]); "other": as "shape", but the expanded gate
    scales the channels of another conv, c3 (Shape(s) then sizes channels that are not s's)."""
    g = G(seed)
    s = g.op("Relu", "r1", [g.conv("x", "c1", 3, 6, 3)])
    z = g.op("Flatten", "se_flat", [g.op("GlobalAveragePool", "se_gap", [s])])
    z = g.op("Relu", "r_fc1", [g.gemm(z, "fc1", 6, 3)])
    gate = g.op("Sigmoid", "gate", [g.gemm(z, "fc2", 3, 6)])
    i64 = lambda name, v: g.init(name, np.array(v, dtype=np.int64))  # noqa: E731
    if form == "concat":
        view = g.op("Reshape", "view", [gate, i64("view.shape", [-1, 6, 1, 1])])
        batch = g.op("Shape", "x_shape", ["x"], start=0, end=1)
        target = g.op("Concat", "target", [batch, i64("six", [6]), i64("four", [4]), i64("four_", [4])], axis=0)
    else:
        at = [g.op("Gather", f"at{a}", [g.op("Shape", f"s_shape{a}", [s]), i64(f"i{a}", a)], axis=0) for a in (0, 1)]
        dims = [g.op("Unsqueeze", f"dim{a}", [d, i64(f"ax{a}", [0])]) for a, d in enumerate(at)]
        view = g.op("Reshape", "view", [gate, g.op("Concat", "view_shape", [*dims, i64("ones", [1, 1])], axis=0)])
        target = g.op("Shape", "s_shape", [s])
    scaled = s if form != "other" else g.op("Relu", "r3", [g.conv("x", "c3", 3, 6, 3)])
    _head(g, g.conv(g.op("Mul", "scale", [scaled, g.op("Expand", "expand", [view, target])]), "c2", 6, 4, 1), 4)
    return g.model({"x": ["N", 3, 6, 6]}, {"y": ["N", 3]})


def gated_conv(seed: int = 0) -> onnx.ModelProto:
    """WaveNet's gated unit: c1 (3 -> 2x4) ─ Split in halves a, b ─ Tanh(a) · Sigmoid(b) ─ c2 1x1 (4 -> 5) ─ head.
    The Mul merges a's channel j with b's: one class, its two rows of c1."""
    g = G(seed)
    g.op("Split", "split", [g.conv("x", "c1", 3, 8, 3)], n_out=2, axis=1)
    gated = g.op("Mul", "gate", [g.op("Tanh", "filt", ["split_out"]), g.op("Sigmoid", "sig", ["split_out1"])])
    _head(g, g.conv(gated, "c2", 4, 5, 1), 5)
    return g.model({"x": ["N", 3, 6, 6]}, {"y": ["N", 3]})


def normalised_mlp(seed: int = 0) -> onnx.ModelProto:
    """fc1 ─ Sub(mean[8]) ─ Div(std[8]) ─ Relu ─ Dropout ─ fc2: per-channel constants are members."""
    g = G(seed)
    x = g.op("Sub", "center", [g.gemm("x", "fc1", 10, 8), g.init("mean", g.rng.standard_normal(8).astype(np.float32))])
    x = g.op("Div", "scale", [x, g.init("std", (1 + g.rng.random(8)).astype(np.float32))])
    x = g.op("Dropout", "drop", [g.op("Relu", "act1", [x])])
    g.gemm(x, "fc2", 8, 3)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 10]}, {"y": ["N", 3]})


def concat_input_equal_split(seed: int = 0) -> onnx.ModelProto:
    """Concat(c1 (4 ch), x (3 ch)) ─ c2 1×1 (7→8) ─ Split in two equal halves ─ c3, c4 ─ Add ─ head."""
    g = G(seed)
    x = g.op("Concat", "cat", [g.op("Relu", "r1", [g.conv("x", "c1", 3, 4, 3, pad=1)]), "x"], axis=1)
    g.op("Split", "split", [g.op("Relu", "r2", [g.conv(x, "c2", 7, 8, 1)])], n_out=2, axis=1)
    _head(g, g.op("Add", "sum", [g.conv("split_out", "c3", 4, 5, 1), g.conv("split_out1", "c4", 4, 5, 1)]), 5)
    return g.model({"x": ["N", 3, 6, 6]}, {"y": ["N", 3]})


def with_op_between(op: str = "LpNormalization", seed: int = 0, **attrs) -> onnx.ModelProto:
    """fc1 ─ Relu ─ <op> ─ fc2: an op with no channel rule sits in fc1's channel path."""
    g = G(seed)
    x = g.op(op, "mid", [g.op("Relu", "act1", [g.gemm("x", "fc1", 10, 8)])], **attrs)
    g.gemm(x, "fc2", 8, 3)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 10]}, {"y": ["N", 3]})


def middle_output(seed: int = 0) -> onnx.ModelProto:
    """mlp 10-8-6-3 whose first hidden activation is also a graph output."""
    m = mlp((10, 8, 6, 3), seed=seed)
    m.graph.output.append(helper.make_tensor_value_info("act1_out", TensorProto.FLOAT, ["N", 8]))
    return m


# -- editing and checking ---------------------------------------------------------------------------------------
def transformer_ffn(seed: int = 0, d: int = 16, hidden: int = 64) -> onnx.ModelProto:
    """LayerNorm ─ MatMul ─ bias Add ─ GELU (erf form) ─ MatMul ─ bias Add ─ residual Add, on [N, 5, d]."""
    g = G(seed)
    ln = g.op("LayerNormalization", "ln", ["x", g.init("ln.g", np.ones(d, np.float32)),
                                           g.init("ln.b", np.zeros(d, np.float32))], axis=-1)
    h = g.op("Add", "fc1_bias", [g.op("MatMul", "fc1", [ln, g.weight("fc1.weight", (d, hidden), d)]),
                                 g.bias("fc1.bias", hidden)])
    erf = g.op("Erf", "gelu_erf", [g.op("Div", "gelu_div", [h, g.init("sqrt2", np.array(2 ** 0.5, np.float32))])])
    act = g.op("Mul", "gelu_mul", [h, g.op("Add", "gelu_add", [erf, g.init("one", np.array(1.0, np.float32))])])
    act = g.op("Mul", "gelu_half", [act, g.init("half", np.array(0.5, np.float32))])
    o = g.op("Add", "fc2_bias", [g.op("MatMul", "fc2", [act, g.weight("fc2.weight", (hidden, d), hidden)]),
                                 g.bias("fc2.bias", d)])
    g.op("Add", "residual", ["x", o])
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 5, d]}, {"y": ["N", 5, d]})


def reshape_instead_of_flatten(model: onnx.ModelProto, shape) -> onnx.ModelProto:
    """The Flatten node becomes a Reshape to `shape` (in place); returns the model."""
    node = next(n for n in model.graph.node if n.op_type == "Flatten")
    node.op_type = "Reshape"
    del node.attribute[:]
    node.input.append("flat.shape")
    model.graph.initializer.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), "flat.shape"))
    return model


def init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def zero(model: onnx.ModelProto, name: str, axis: int, idx) -> onnx.ModelProto:
    """Zero `model`'s initializer `name` at indices `idx` of `axis`, in place; returns the model."""
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            a = numpy_helper.to_array(t).copy()
            sl = [slice(None)] * a.ndim
            sl[axis] = list(np.atleast_1d(idx))
            a[tuple(sl)] = 0
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(a, name))
            return model
    raise KeyError(name)


def set_init(model: onnx.ModelProto, name: str, array: np.ndarray) -> onnx.ModelProto:
    for t in model.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(np.asarray(array, dtype=numpy_helper.to_array(t).dtype), name))
            return model
    raise KeyError(name)


def shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    return {t.name: tuple(t.dims) for t in model.graph.initializer}


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in model.graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return out


def assert_same(before: onnx.ModelProto, after: onnx.ModelProto, seeds=(0, 1, 2), rtol: float = 1e-5) -> None:
    """Valid (full check), same inputs and outputs, same values in onnxruntime (optimisations off, seeded inputs)."""
    check_full(after)
    assert [o.name for o in after.graph.output] == [o.name for o in before.graph.output]
    assert [(i.name, str(i.type)) for i in after.graph.input] == [(i.name, str(i.type)) for i in before.graph.input]
    assert_same_outputs(after, before, seeds=seeds, rtol=rtol)
