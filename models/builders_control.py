"""Small seeded graphs whose weights hide where third-party models keep them (numpy + onnx.helper, no torch).

* `if_network`: the whole network inside the two branches of an If chosen from the data; both branches read the
  outer-scope initializer ``fc1.weight`` and each holds its own second layer (a Constant node, a body initializer);
* `lstm_classifier` / `gru_classifier` / `rnn_classifier`: [N, T, F] -> Transpose -> LSTM/GRU/RNN -> last hidden
  state -> Gemm (`reverse`: direction "reverse");
* `while_rnn`: an Elman RNN as a Loop over time steps (tf2onnx's Keras RNN export): the input and recurrent weight
  matrices enter the Loop as loop-carried values every iteration passes on unchanged (by name, and through an
  Identity), the bias is read from the outer scope;
* `while_residual`: weight-tied residual steps in a Loop with no trip count, the condition its body computes ending
  it (torch's `while_loop` exported by dynamo: sweep 55b's MNIST model of 4 steps);
* `gather_bank`: a Gather with a data-dependent scalar index picks one of two weight matrices from a constant table;
* `matmul_integer`: a dynamically quantized MatMulInteger (int8 weight) followed by a float Gemm;
* `container_input`: an MLP whose input is a sequence of tensors, an optional tensor or a map (DictVectorizer).

Same conventions as models/builders.py: ir_version 8, opset 17, float32, batch axis "N", weights scaled by
1/sqrt(fan_in), graph input "input", graph output "output".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.models.builders import BATCH, IR_VERSION, OPSET


def _w(rng, shape, fan_in) -> np.ndarray:
    return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(name: str, nodes, inits, input_shape, output_shape) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, [BATCH, *input_shape])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [BATCH, *output_shape])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                             producer_name="onnxprune.models.builders_control")


def _condition(x: str, prefix: str) -> list[onnx.NodeProto]:
    """A scalar bool: is the mean of the whole batch positive? (random data takes both branches over seeds)."""
    return [helper.make_node("ReduceMean", [x], [f"{prefix}mean"], keepdims=0, name=f"/{prefix}mean"),
            helper.make_node("Greater", [f"{prefix}mean", "zero"], [f"{prefix}cond"], name=f"/{prefix}greater")]


def if_network(*, in_features: int = 16, hidden: int = 32, out_features: int = 10, seed: int = 0) -> onnx.ModelProto:
    """[N, in] -> If(mean(x) > 0): then Relu(x @ fc1 + b) @ then.fc2 (Constant node), else
    Gemm(Tanh(x @ fc1), else.fc2, transB=1) (body initializer) -> [N, out]; fc1 lives outside, read by both."""
    rng = np.random.default_rng(seed)
    fc1 = _init("fc1.weight", _w(rng, (in_features, hidden), in_features))
    b1 = _init("fc1.bias", (0.1 * rng.standard_normal(hidden)).astype(np.float32))
    out_vi = helper.make_tensor_value_info
    then_nodes = [
        helper.make_node("MatMul", ["input", "fc1.weight"], ["then/h0"], name="/then/fc1/MatMul"),
        helper.make_node("Add", ["then/h0", "fc1.bias"], ["then/h1"], name="/then/fc1/Add"),
        helper.make_node("Relu", ["then/h1"], ["then/h"], name="/then/relu"),
        helper.make_node("Constant", [], ["then.fc2.weight"], name="/then/fc2/weight",
                         value=_init("", _w(rng, (hidden, out_features), hidden))),
        helper.make_node("MatMul", ["then/h", "then.fc2.weight"], ["then_out"], name="/then/fc2/MatMul"),
    ]
    else_nodes = [
        helper.make_node("MatMul", ["input", "fc1.weight"], ["else/h0"], name="/else/fc1/MatMul"),
        helper.make_node("Tanh", ["else/h0"], ["else/h"], name="/else/tanh"),
        helper.make_node("Gemm", ["else/h", "else.fc2.weight", "else.fc2.bias"], ["else_out"], transB=1,
                         name="/else/fc2/Gemm"),
    ]
    else_inits = [_init("else.fc2.weight", _w(rng, (out_features, hidden), hidden)),
                  _init("else.fc2.bias", (0.1 * rng.standard_normal(out_features)).astype(np.float32))]
    then_g = helper.make_graph(then_nodes, "then", [], [out_vi("then_out", TensorProto.FLOAT, [BATCH, out_features])])
    else_g = helper.make_graph(else_nodes, "else", [], [out_vi("else_out", TensorProto.FLOAT, [BATCH, out_features])],
                               initializer=else_inits)
    nodes = _condition("input", "") + [
        helper.make_node("If", ["cond"], ["output"], then_branch=then_g, else_branch=else_g, name="/select")]
    zero = _init("zero", np.array(0.0, np.float32))
    return _model("if_network", nodes, [fc1, b1, zero], [in_features], [out_features])


def _recurrent(op: str, gates: int, *, features: int, hidden: int, steps: int, out_features: int,
               bidirectional: bool, initial_state: bool, seed: int, reverse: bool = False, sequence_output: bool = True,
               **attrs) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    dirs = 2 if bidirectional else 1
    inits = [_init(f"{op.lower()}.W", _w(rng, (dirs, gates * hidden, features), features)),
             _init(f"{op.lower()}.R", _w(rng, (dirs, gates * hidden, hidden), hidden)),
             _init(f"{op.lower()}.B", (0.1 * rng.standard_normal((dirs, 2 * gates * hidden))).astype(np.float32))]
    batch_first = attrs.get("layout") == 1  # [N, T, F] read as is, Y_h is [N, dirs, H]
    if batch_first and initial_state:
        raise ValueError("layout=1 with initial_state is not built")
    ins = ["input" if batch_first else "x_tnf", inits[0].name, inits[1].name, inits[2].name]
    nodes = [] if batch_first else [helper.make_node("Transpose", ["input"], ["x_tnf"], perm=[1, 0, 2], name="/time_major")]
    if initial_state:  # 0.5 everywhere, [dirs, N, H], built from the batch size so any N works
        nodes += [helper.make_node("Shape", ["input"], ["shape"], start=0, end=1, name="/batch"),
                  helper.make_node("Concat", ["dirs", "shape", "hid"], ["state_shape"], axis=0, name="/state_shape"),
                  helper.make_node("ConstantOfShape", ["state_shape"], ["h0"], name="/h0",
                                   value=_init("", np.array([0.5], np.float32)))]
        inits += [_init("dirs", np.array([dirs], np.int64)), _init("hid", np.array([hidden], np.int64))]
        ins += ["", "h0"] + (["h0"] if op == "LSTM" else [])
    direction = "bidirectional" if bidirectional else "reverse" if reverse else "forward"
    n_out = 3 if op == "LSTM" else 2
    outs = ["Y" if sequence_output else "", "Y_h", "Y_c"][:n_out]  # "": the optional Y omitted, as exporters write it
    nodes += [helper.make_node(op, ins, outs, hidden_size=hidden, direction=direction,
                               name=f"/{op.lower()}", **attrs)]
    if not batch_first:
        nodes += [helper.make_node("Transpose", ["Y_h"], ["h_ndh"], perm=[1, 0, 2], name="/batch_major")]
    nodes += [helper.make_node("Flatten", ["Y_h" if batch_first else "h_ndh"], ["h"], axis=1, name="/flatten"),
              helper.make_node("Gemm", ["h", "fc.weight", "fc.bias"], ["output"], transB=1, name="/fc/Gemm")]
    inits += [_init("fc.weight", _w(rng, (out_features, dirs * hidden), dirs * hidden)),
              _init("fc.bias", (0.1 * rng.standard_normal(out_features)).astype(np.float32))]
    return _model(f"{op.lower()}_classifier", nodes, inits, [steps, features], [out_features])


def lstm_classifier(*, features: int = 8, hidden: int = 16, steps: int = 5, out_features: int = 4,
                    bidirectional: bool = False, initial_state: bool = False, seed: int = 0, reverse: bool = False,
                    sequence_output: bool = True) -> onnx.ModelProto:
    """[N, T, F] -> Transpose -> LSTM (W, R, B; optional initial states) -> Y_h -> Gemm -> [N, out].
    sequence_output=False leaves the LSTM's optional Y output unnamed ("")."""
    return _recurrent("LSTM", 4, features=features, hidden=hidden, steps=steps, out_features=out_features,
                      bidirectional=bidirectional, initial_state=initial_state, seed=seed, reverse=reverse,
                      sequence_output=sequence_output)


def gru_classifier(*, features: int = 8, hidden: int = 16, steps: int = 5, out_features: int = 4,
                   bidirectional: bool = False, initial_state: bool = False, seed: int = 0, reverse: bool = False,
                   linear_before_reset: int = 0, sequence_output: bool = True, layout: int = 0) -> onnx.ModelProto:
    """[N, T, F] -> Transpose -> GRU (W, R, B; optional initial state) -> Y_h -> Gemm -> [N, out].
    sequence_output=False leaves the GRU's optional Y output unnamed (""); layout=1 reads [N, T, F] as is (valid
    ONNX that onnxruntime's CPU kernels refuse to load)."""
    return _recurrent("GRU", 3, features=features, hidden=hidden, steps=steps, out_features=out_features,
                      bidirectional=bidirectional, initial_state=initial_state, seed=seed, reverse=reverse,
                      sequence_output=sequence_output,
                      **({"linear_before_reset": linear_before_reset} if linear_before_reset else {}),
                      **({"layout": layout} if layout else {}))


def rnn_classifier(*, features: int = 8, hidden: int = 16, steps: int = 5, out_features: int = 4,
                   bidirectional: bool = False, initial_state: bool = False, seed: int = 0, reverse: bool = False
                   ) -> onnx.ModelProto:
    """[N, T, F] -> Transpose -> RNN (tanh; W, R, B; optional initial state) -> Y_h -> Gemm -> [N, out]."""
    return _recurrent("RNN", 1, features=features, hidden=hidden, steps=steps, out_features=out_features,
                      bidirectional=bidirectional, initial_state=initial_state, seed=seed, reverse=reverse)


def while_rnn(*, features: int = 8, hidden: int = 16, steps: int = 5, out_features: int = 4, hand_back: bool = False,
              seed: int = 0) -> onnx.ModelProto:
    """[N, T, F] -> Loop over T: h = tanh(x_t·W + h·R + b) (W, R loop-carried, unchanged) -> h_T -> Gemm.

    R goes back to the Loop through an Identity, W as the body's input itself; `hand_back`: W through an Identity
    too (jax2onnx's lax.scan hands every carried weight back so)."""
    rng = np.random.default_rng(seed)
    f32 = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("Gather", ["x_tnf", "i"], ["x_t"], axis=0, name="/loop/x_t"),
         helper.make_node("MatMul", ["x_t", "W_in"], ["xw"], name="/loop/input/MatMul"),
         helper.make_node("MatMul", ["h_in", "R_in"], ["hr"], name="/loop/recurrent/MatMul"),
         helper.make_node("Add", ["xw", "hr"], ["pre"], name="/loop/add"),
         helper.make_node("Add", ["pre", "rnn.B"], ["pre_b"], name="/loop/bias"),
         helper.make_node("Tanh", ["pre_b"], ["h_out"], name="/loop/tanh"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="/loop/cond"),
         helper.make_node("Identity", ["R_in"], ["R_out"], name="/loop/R_out")]
        + ([helper.make_node("Identity", ["W_in"], ["W_out"], name="/loop/W_out")] if hand_back else []),
        "rnn_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", f32, None), helper.make_tensor_value_info("W_in", f32, None),
         helper.make_tensor_value_info("R_in", f32, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", f32, None),
         helper.make_tensor_value_info("W_out" if hand_back else "W_in", f32, None),
         helper.make_tensor_value_info("R_out", f32, None)])
    nodes = [helper.make_node("Transpose", ["input"], ["x_tnf"], perm=[1, 0, 2], name="/time_major"),
             helper.make_node("Shape", ["input"], ["batch"], start=0, end=1, name="/batch"),
             helper.make_node("Concat", ["batch", "hid"], ["h_shape"], axis=0, name="/h_shape"),
             helper.make_node("ConstantOfShape", ["h_shape"], ["h0"], name="/h0",
                              value=_init("", np.zeros(1, np.float32))),
             helper.make_node("Loop", ["steps", "", "h0", "rnn.W", "rnn.R"], ["h_T", "W_T", "R_T"], name="/rnn/Loop",
                              body=body),
             helper.make_node("Gemm", ["h_T", "fc.weight", "fc.bias"], ["output"], transB=1, name="/fc/Gemm")]
    inits = [_init("rnn.W", _w(rng, (features, hidden), features)), _init("rnn.R", _w(rng, (hidden, hidden), hidden)),
             _init("rnn.B", (0.1 * rng.standard_normal(hidden)).astype(np.float32)),
             _init("steps", np.array(steps, np.int64)), _init("hid", np.array([hidden], np.int64)),
             _init("fc.weight", _w(rng, (out_features, hidden), hidden)),
             _init("fc.bias", (0.1 * rng.standard_normal(out_features)).astype(np.float32))]
    return _model("while_rnn", nodes, inits, [steps, features], [out_features])


def while_residual(*, in_features: int = 16, hidden: int = 24, steps: int = 4, out_features: int = 10,
                   seed: int = 0) -> onnx.ModelProto:
    """[N, in] -> Gemm -> Relu -> Loop(M "", cond true, i0 = 0, h): i = i + 1, h = h + Relu(Gemm(h, step)), go on
    while i < steps -> Gemm -> [N, out]: torch's `while_loop(cond, body, (i, h))` as dynamo exports it (the body
    reads `step.weight` and `step.bias` from the outer scope, one weight tied across the steps; no trip count)."""
    rng = np.random.default_rng(seed)
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    vi = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Add", ["i_in", "one"], ["i_out"], name="/while/count"),
         helper.make_node("Gemm", ["h_in", "step.weight", "step.bias"], ["z"], transB=1, name="/while/step/Gemm"),
         helper.make_node("Relu", ["z"], ["r"], name="/while/relu"),
         helper.make_node("Add", ["h_in", "r"], ["h_out"], name="/while/residual"),
         helper.make_node("Less", ["i_out", "steps"], ["cond_out"], name="/while/cond")],
        "while_body", [vi("iter", i64, []), vi("cond_in", TensorProto.BOOL, []), vi("i_in", i64, []),
                       vi("h_in", f32, [BATCH, hidden])],
        [vi("cond_out", TensorProto.BOOL, []), vi("i_out", i64, []), vi("h_out", f32, [BATCH, hidden])])
    nodes = [helper.make_node("Gemm", ["input", "fc_in.weight", "fc_in.bias"], ["a"], transB=1, name="/fc_in/Gemm"),
             helper.make_node("Relu", ["a"], ["h0"], name="/relu"),
             helper.make_node("Loop", ["", "go", "zero", "h0"], ["i_T", "h_T"], name="/while_loop", body=body),
             helper.make_node("Gemm", ["h_T", "head.weight", "head.bias"], ["output"], transB=1, name="/head/Gemm")]
    inits = [_init("fc_in.weight", _w(rng, (hidden, in_features), in_features)),
             _init("fc_in.bias", (0.1 * rng.standard_normal(hidden)).astype(np.float32)),
             _init("step.weight", _w(rng, (hidden, hidden), hidden)),
             _init("step.bias", (0.1 * rng.standard_normal(hidden)).astype(np.float32)),
             _init("head.weight", _w(rng, (out_features, hidden), hidden)),
             _init("head.bias", (0.1 * rng.standard_normal(out_features)).astype(np.float32)),
             _init("go", np.array(True)), _init("zero", np.array(0, np.int64)), _init("one", np.array(1, np.int64)),
             _init("steps", np.array(steps, np.int64))]
    return _model("while_residual", nodes, inits, [in_features], [out_features])


def gather_bank(*, in_features: int = 16, out_features: int = 10, seed: int = 0) -> onnx.ModelProto:
    """[N, in] -> MatMul with bank[i] (i = mean(x) > 0, a scalar Gather index into a [2, in, out] table) -> Add."""
    rng = np.random.default_rng(seed)
    nodes = _condition("input", "") + [
        helper.make_node("Cast", ["cond"], ["bank_index"], to=TensorProto.INT64, name="/index"),
        helper.make_node("Gather", ["bank.weight", "bank_index"], ["W"], axis=0, name="/bank/Gather"),
        helper.make_node("MatMul", ["input", "W"], ["y"], name="/bank/MatMul"),
        helper.make_node("Add", ["y", "bank.bias"], ["output"], name="/bank/Add")]
    inits = [_init("bank.weight", _w(rng, (2, in_features, out_features), in_features)),
             _init("bank.bias", (0.1 * rng.standard_normal(out_features)).astype(np.float32)),
             _init("zero", np.array(0.0, np.float32))]
    return _model("gather_bank", nodes, inits, [in_features], [out_features])


def expert_bank(*, in_features: int = 16, hidden: int = 8, experts: int = 3, out_features: int = 4,
                seed: int = 0) -> onnx.ModelProto:
    """A top-1 mixture of experts as torch.onnx writes `torch.bmm(x.unsqueeze(1), w[e]) + b[e]`: [N, in] -> router
    Gemm -> ArgMax e [N] -> Gather(w [E, in, hidden], e) [N, in, hidden] read by a batched MatMul, plus
    Gather(b [E, hidden], e) added -> Relu -> x the router's top softmax probability (the gate) -> Gemm head [N, out].
    Each sample multiplies one expert's matrix."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Gemm", ["input", "router.weight", "router.bias"], ["logits_e"], transB=1, name="/router/Gemm"),
        helper.make_node("ArgMax", ["logits_e"], ["e"], axis=1, keepdims=0, name="/router/ArgMax"),
        helper.make_node("Gather", ["experts.w", "e"], ["w_e"], axis=0, name="/experts/Gather"),
        helper.make_node("Unsqueeze", ["input", "axis1"], ["x3"], name="/experts/Unsqueeze"),
        helper.make_node("MatMul", ["x3", "w_e"], ["h3"], name="/experts/MatMul"),
        helper.make_node("Squeeze", ["h3", "axis1"], ["h"], name="/experts/Squeeze"),
        helper.make_node("Gather", ["experts.b", "e"], ["b_e"], axis=0, name="/experts/Gather_1"),
        helper.make_node("Add", ["h", "b_e"], ["hb"], name="/experts/Add"),
        helper.make_node("Relu", ["hb"], ["a"], name="/experts/Relu"),
        helper.make_node("Softmax", ["logits_e"], ["g"], axis=1, name="/router/Softmax"),
        helper.make_node("ReduceMax", ["g"], ["gate"], axes=[1], keepdims=1, name="/router/ReduceMax"),
        helper.make_node("Mul", ["a", "gate"], ["ag"], name="/experts/Mul"),
        helper.make_node("Gemm", ["ag", "head.weight", "head.bias"], ["output"], transB=1, name="/head/Gemm")]
    inits = [_init("router.weight", _w(rng, (experts, in_features), in_features)),
             _init("router.bias", np.zeros(experts, np.float32)),
             _init("experts.w", _w(rng, (experts, in_features, hidden), in_features)),
             _init("experts.b", (0.1 * rng.standard_normal((experts, hidden))).astype(np.float32)),
             _init("axis1", np.array([1], np.int64)),
             _init("head.weight", _w(rng, (out_features, hidden), hidden)),
             _init("head.bias", np.zeros(out_features, np.float32))]
    return _model("expert_bank", nodes, inits, [in_features], [out_features])


def matmul_integer(*, in_features: int = 16, hidden: int = 12, out_features: int = 4, seed: int = 0) -> onnx.ModelProto:
    """[N, in] -> DynamicQuantizeLinear -> MatMulInteger(int8 weight) -> Cast -> Mul(scales) -> Gemm -> [N, out]."""
    rng = np.random.default_rng(seed)
    wq = rng.integers(-127, 128, size=(in_features, hidden)).astype(np.int8)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["input"], ["xq", "xs", "xz"], name="/quant"),
             helper.make_node("MatMulInteger", ["xq", "fc1.weight_quantized", "xz", "fc1.weight_zero_point"], ["acc"],
                              name="/fc1/MatMulInteger"),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT, name="/fc1/cast"),
             helper.make_node("Mul", ["xs", "fc1.weight_scale"], ["scale"], name="/fc1/scale"),
             helper.make_node("Mul", ["accf", "scale"], ["h"], name="/fc1/dequant"),
             helper.make_node("Gemm", ["h", "fc2.weight", "fc2.bias"], ["output"], transB=1, name="/fc2/Gemm")]
    inits = [_init("fc1.weight_quantized", wq), _init("fc1.weight_zero_point", np.array(0, np.int8)),
             _init("fc1.weight_scale", np.array(0.01, np.float32)),
             _init("fc2.weight", _w(rng, (out_features, hidden), hidden)),
             _init("fc2.bias", (0.1 * rng.standard_normal(out_features)).astype(np.float32))]
    return _model("matmul_integer", nodes, inits, [in_features], [out_features])


CONTROL_BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {
    f.__name__: f for f in (if_network, lstm_classifier, gru_classifier, gather_bank)
}


def if_table(*, vocab: int = 20, dim: int = 8, length: int = 6, out_features: int = 5,
             seed: int = 0) -> onnx.ModelProto:
    """ids [N, length] int64, flag (bool scalar) -> If(flag: Gather(table, ids) | Gather(table, ids) * 2) ->
    mean over positions -> MatMul -> logits [N, out]: one embedding table, an outer-scope initializer, read by a
    Gather in both branches (sweep 13's shape: "used in different ways")."""
    rng = np.random.default_rng(seed)

    def branch(tag: str, scale: float) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Gather", ["table", "ids"], [f"e_{tag}"], name=f"/{tag}/Gather"),
             helper.make_node("Mul", [f"e_{tag}", f"c_{tag}"], [f"o_{tag}"], name=f"/{tag}/Mul")], tag, [],
            [helper.make_tensor_value_info(f"o_{tag}", TensorProto.FLOAT, None)],
            [_init(f"c_{tag}", np.array(scale, np.float32))])

    nodes = [helper.make_node("If", ["flag"], ["h"], then_branch=branch("then", 1.0), else_branch=branch("else", 2.0),
                              name="/If"),
             helper.make_node("ReduceMean", ["h"], ["pooled"], axes=[1], keepdims=0, name="/pool"),
             helper.make_node("MatMul", ["pooled", "W"], ["logits"], name="/head/MatMul")]
    graph = helper.make_graph(
        nodes, "if_table",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [BATCH, length]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [BATCH, out_features])],
        [_init("table", rng.standard_normal((vocab, dim)).astype(np.float32)),
         _init("W", _w(rng, (dim, out_features), dim))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def container_input(container: str = "sequence", *, in_features: int = 16, hidden: int = 24, out_features: int = 5,
                    seed: int = 0) -> onnx.ModelProto:
    """An MLP whose graph input "input" is not a plain tensor: `container` "sequence" (seq(tensor [N, F]): a
    ConcatFromSequence along axis 0 joins the elements, as a torch.jit List[Tensor] argument exports), "optional"
    (optional(tensor [N, F]) unwrapped by OptionalGetElement, opset 18) or "map" (map(int64, float), scikit-learn's
    DictVectorizer input, read by ai.onnx.ml's DictVectorizer over `in_features` integer keys)."""
    rng = np.random.default_rng(seed)
    inits = [_init("fc1.weight", _w(rng, (in_features, hidden), in_features)),
             _init("fc1.bias", np.zeros(hidden, np.float32)),
             _init("fc2.weight", _w(rng, (hidden, out_features), hidden))]
    tensor = helper.make_tensor_type_proto(TensorProto.FLOAT, [BATCH, in_features])
    opsets = [helper.make_opsetid("", OPSET)]
    if container == "sequence":
        value = helper.make_value_info("input", helper.make_sequence_type_proto(tensor))
        head = [helper.make_node("ConcatFromSequence", ["input"], ["x"], axis=0, name="join")]
    elif container == "optional":
        value = helper.make_value_info("input", helper.make_optional_type_proto(tensor))
        head = [helper.make_node("OptionalGetElement", ["input"], ["x"], name="unwrap")]
        opsets = [helper.make_opsetid("", 18)]
    elif container == "map":
        value = helper.make_value_info("input", helper.make_map_type_proto(
            TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
        head = [helper.make_node("DictVectorizer", ["input"], ["x"], domain="ai.onnx.ml", name="vectorize",
                                 int64_vocabulary=list(range(in_features)))]
        opsets.append(helper.make_opsetid("ai.onnx.ml", 3))
    else:
        raise ValueError(f"container {container!r} is not one of sequence, optional, map")
    nodes = [*head,
             helper.make_node("MatMul", ["x", "fc1.weight"], ["h0"], name="fc1"),
             helper.make_node("Add", ["h0", "fc1.bias"], ["h1"], name="fc1_bias"),
             helper.make_node("Relu", ["h1"], ["h"], name="relu"),
             helper.make_node("MatMul", ["h", "fc2.weight"], ["output"], name="fc2")]
    graph = helper.make_graph(nodes, f"{container}_input", [value],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, out_features])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION,
                             producer_name="onnxprune.models.builders_control")
