"""Seeded graphs with their layers inside If branches, for the layer-wise refit of bodies
(converter/reconstruct_bodies.py). Each If picks its branch from the data (is the batch's mean positive?), so
random feeds take both; builders_control.if_network (MatMul/Gemm) and while_rnn (a Loop) are the others used.

    if_convs   [N, C, L] -> If: then Conv(Constant node) -> Relu, else Conv(body initializer, bias) -> Tanh; both
               then Conv(conv2, shared outer-scope weight and bias) -> [N, O, L]
    if_lstm    [N, T, F] -> If: then LSTM(outer-scope W, R, B), else LSTM(body initializers) -> last state ->
               Gemm -> [N, out] (silero VAD keeps its LSTM in an If branch chosen by the sample rate)
    loop_if    [N, F] -> Loop (3 steps, h carried): If(mean(input) > 0) then Relu(h @ then.W) else
               Tanh(h @ else.W), both outer-scope initializers -> Gemm(out) -> [N, out] (an If inside a Loop body)
    loop_nested_if  loop_if whose outer If also needs the iteration < 2 (so the last step takes its else branch,
               Sigmoid(h @ else.W)) and whose then branch holds a second If on the mean of column 0: then
               Relu(h @ then.then.W), else Tanh(h @ then.else.W) (an If in an If in a Loop body)
    scan_if    [N, T, F] -> Scan over T (scan_input_axes=[1], h carried from Tanh(x_0 @ init.W)): z = h + x_t @ in.W,
               If(mean(x_t) > 0) then Relu(z @ then.W) (outer-scope) else Tanh(z @ else.W) (branch initializer),
               every step's h stacked on axis 1 (scan_output_axes=[1]) -> mean over T -> Gemm(out) -> [N, out];
               `opset=8` builds Scan-8's form (batch axis in the body's scope removed: one sample, one step)
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxprune.models.builders_control import _condition, _init, _model, _w, if_network, while_rnn


def _branch(name: str, nodes, out: str, inits=()) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                             initializer=list(inits))


def if_convs(*, channels: int = 4, length: int = 16, hidden: int = 8, out_channels: int = 6, kernel_attr: bool = True,
             seed: int = 0) -> onnx.ModelProto:
    """`kernel_attr=False`: the Convs leave kernel_shape out (optional in ONNX: the weight's shape gives it)."""
    rng = np.random.default_rng(seed)
    k = 3
    kernel = {"kernel_shape": [k]} if kernel_attr else {}
    then_nodes = [
        helper.make_node("Constant", [], ["then.conv1.weight"], name="/then/conv1/weight",
                         value=_init("", _w(rng, (hidden, channels, k), channels * k))),
        helper.make_node("Conv", ["input", "then.conv1.weight"], ["then/c1"], pads=[1, 1], **kernel,
                         name="/then/conv1/Conv"),
        helper.make_node("Relu", ["then/c1"], ["then/h"], name="/then/relu"),
        helper.make_node("Conv", ["then/h", "conv2.weight", "conv2.bias"], ["then_out"], pads=[1, 1], **kernel,
                         name="/then/conv2/Conv"),
    ]
    else_nodes = [
        helper.make_node("Conv", ["input", "else.conv1.weight", "else.conv1.bias"], ["else/c1"], pads=[1, 1],
                         **kernel, name="/else/conv1/Conv"),
        helper.make_node("Tanh", ["else/c1"], ["else/h"], name="/else/tanh"),
        helper.make_node("Conv", ["else/h", "conv2.weight", "conv2.bias"], ["else_out"], pads=[1, 1], **kernel,
                         name="/else/conv2/Conv"),
    ]
    else_inits = [_init("else.conv1.weight", _w(rng, (hidden, channels, k), channels * k)),
                  _init("else.conv1.bias", (0.1 * rng.standard_normal(hidden)).astype(np.float32))]
    nodes = _condition("input", "") + [
        helper.make_node("If", ["cond"], ["output"], name="/select",
                         then_branch=_branch("then", then_nodes, "then_out"),
                         else_branch=_branch("else", else_nodes, "else_out", else_inits))]
    inits = [_init("conv2.weight", _w(rng, (out_channels, hidden, k), hidden * k)),
             _init("conv2.bias", (0.1 * rng.standard_normal(out_channels)).astype(np.float32)),
             _init("zero", np.array(0.0, np.float32))]
    return _model("if_convs", nodes, inits, [channels, length], [out_channels, length])


def if_lstm(*, features: int = 8, hidden: int = 16, steps: int = 5, out_features: int = 4,
            seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def lstm(prefix: str, w: str, r: str, b: str, out: str):
        return [helper.make_node("LSTM", ["x_tnf", w, r, b], [f"{prefix}/Y", f"{prefix}/Y_h"], hidden_size=hidden,
                                 name=f"/{prefix}/lstm"),
                helper.make_node("Transpose", [f"{prefix}/Y_h"], [f"{prefix}/h_ndh"], perm=[1, 0, 2],
                                 name=f"/{prefix}/batch_major"),
                helper.make_node("Flatten", [f"{prefix}/h_ndh"], [out], axis=1, name=f"/{prefix}/flatten")]

    def weights(prefix: str):
        return [_init(f"{prefix}lstm.W", _w(rng, (1, 4 * hidden, features), features)),
                _init(f"{prefix}lstm.R", _w(rng, (1, 4 * hidden, hidden), hidden)),
                _init(f"{prefix}lstm.B", (0.1 * rng.standard_normal((1, 8 * hidden))).astype(np.float32))]

    outer, inner = weights(""), weights("else.")
    nodes = [helper.make_node("Transpose", ["input"], ["x_tnf"], perm=[1, 0, 2], name="/time_major")]
    nodes += _condition("input", "") + [
        helper.make_node("If", ["cond"], ["h"], name="/select",
                         then_branch=_branch("then", lstm("then", "lstm.W", "lstm.R", "lstm.B", "then_h"), "then_h"),
                         else_branch=_branch("else", lstm("else", "else.lstm.W", "else.lstm.R", "else.lstm.B",
                                                          "else_h"), "else_h", inner)),
        helper.make_node("Gemm", ["h", "fc.weight", "fc.bias"], ["output"], transB=1, name="/fc/Gemm")]
    inits = outer + [_init("fc.weight", _w(rng, (out_features, hidden), hidden)),
                     _init("fc.bias", (0.1 * rng.standard_normal(out_features)).astype(np.float32)),
                     _init("zero", np.array(0.0, np.float32))]
    return _model("if_lstm", nodes, inits, [steps, features], [out_features])


def nested_if(*, in_features: int = 16, out_features: int = 10, seed: int = 0) -> onnx.ModelProto:
    """[N, in] -> If(mean of column 0 > 0): then builders_control.if_network's If (a second If inside), else
    x @ outer_else.weight -> [N, out]: a layer two Ifs deep (silero VAD nests its LSTM so)."""
    rng = np.random.default_rng(seed)
    inner = if_network(in_features=in_features, out_features=out_features, seed=seed)
    inner_nodes = list(inner.graph.node)
    inner_nodes[-1].output[0] = "inner_out"
    else_nodes = [helper.make_node("MatMul", ["input", "outer_else.weight"], ["outer_else_out"],
                                   name="/outer_else/MatMul")]
    nodes = [helper.make_node("Gather", ["input", "col0"], ["x0"], axis=1, name="/col0"),
             *_condition("x0", "outer_"),
             helper.make_node("If", ["outer_cond"], ["output"], name="/outer_select",
                              then_branch=_branch("outer_then", inner_nodes, "inner_out"),
                              else_branch=_branch("outer_else", else_nodes, "outer_else_out"))]
    inits = list(inner.graph.initializer) + [
        _init("outer_else.weight", _w(rng, (in_features, out_features), in_features)),
        _init("col0", np.array(0, np.int64))]
    return _model("nested_if", nodes, inits, [in_features], [out_features])


def loop_if(*, features: int = 16, steps: int = 3, out_features: int = 10, seed: int = 0) -> onnx.ModelProto:
    """An If inside a Loop body: every iteration picks its branch by the batch's mean (the same for every step)."""
    rng = np.random.default_rng(seed)
    then_nodes = [helper.make_node("MatMul", ["h_in", "then.W"], ["then/z"], name="/loop/then/MatMul"),
                  helper.make_node("Relu", ["then/z"], ["then_out"], name="/loop/then/relu")]
    else_nodes = [helper.make_node("MatMul", ["h_in", "else.W"], ["else/z"], name="/loop/else/MatMul"),
                  helper.make_node("Tanh", ["else/z"], ["else_out"], name="/loop/else/tanh")]
    body = _condition("input", "loop/") + [
        helper.make_node("Identity", ["cond_in"], ["cond_out"], name="/loop/cond"),
        helper.make_node("If", ["loop/cond"], ["h_out"], name="/loop/select",
                         then_branch=_branch("then", then_nodes, "then_out"),
                         else_branch=_branch("else", else_nodes, "else_out"))]
    weights = [_init(n, _w(rng, (features, features), features)) for n in ("then.W", "else.W")]
    return _loop_then_gemm("loop_if", body, weights, [_init("zero", np.array(0.0, np.float32))], rng,
                           features=features, steps=steps, out_features=out_features)


def _loop_then_gemm(name: str, body_nodes: list, weights: list, extra: list, rng, *, features: int, steps: int,
                    out_features: int) -> onnx.ModelProto:
    """Loop(steps, true, input) over a body of (i, cond_in, h_in) -> (cond_out, h_out), then Gemm(out.weight,
    out.bias) -> [N, out_features]; initializers: `weights`, the Gemm's (drawn from `rng` after them), the trip
    count and condition, then `extra`."""
    vi = helper.make_tensor_value_info
    body = helper.make_graph(
        body_nodes, "body", [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []),
                             vi("h_in", TensorProto.FLOAT, None)],
        [vi("cond_out", TensorProto.BOOL, []), vi("h_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Loop", ["steps", "keep_going", "input"], ["h"], body=body, name="/loop"),
             helper.make_node("Gemm", ["h", "out.weight", "out.bias"], ["output"], transB=1, name="/out/Gemm")]
    inits = weights + [_init("out.weight", _w(rng, (out_features, features), features)),
                       _init("out.bias", (0.1 * rng.standard_normal(out_features)).astype(np.float32)),
                       _init("steps", np.array(steps, np.int64)), _init("keep_going", np.array(True)), *extra]
    return _model(name, nodes, inits, [features], [out_features])


def while_rnn_decaying(**kwargs) -> onnx.ModelProto:
    """builders_control.while_rnn whose body scales R by 0.99 every iteration: R is carried but not loop-invariant
    (no weight: only W and the Gemm after the Loop are)."""
    model = while_rnn(**kwargs)
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    body = next(a.g for a in loop.attribute if a.name == "body")
    hand_back = next(n for n in body.node if n.name == "/loop/R_out")
    hand_back.op_type = "Mul"
    hand_back.input.append("decay")
    model.graph.initializer.append(_init("decay", np.array(0.99, np.float32)))
    return model


def loop_nested_if(*, features: int = 16, steps: int = 3, out_features: int = 10, seed: int = 0) -> onnx.ModelProto:
    """An If inside an If branch inside a Loop body: the inner If runs only on the iterations whose outer condition
    held (mean(input) > 0 and iteration < 2)."""
    rng = np.random.default_rng(seed)
    inner_then = [helper.make_node("MatMul", ["h_in", "then.then.W"], ["tt/z"], name="/loop/inner/then/MatMul"),
                  helper.make_node("Relu", ["tt/z"], ["tt_out"], name="/loop/inner/then/relu")]
    inner_else = [helper.make_node("MatMul", ["h_in", "then.else.W"], ["te/z"], name="/loop/inner/else/MatMul"),
                  helper.make_node("Tanh", ["te/z"], ["te_out"], name="/loop/inner/else/tanh")]
    then_nodes = [helper.make_node("Gather", ["input", "col0"], ["x0"], axis=1, name="/loop/outer/then/col0"),
                  *_condition("x0", "loop/inner/"),
                  helper.make_node("If", ["loop/inner/cond"], ["then_out"], name="/loop/inner",
                                   then_branch=_branch("inner_then", inner_then, "tt_out"),
                                   else_branch=_branch("inner_else", inner_else, "te_out"))]
    else_nodes = [helper.make_node("MatMul", ["h_in", "else.W"], ["e/z"], name="/loop/outer/else/MatMul"),
                  helper.make_node("Sigmoid", ["e/z"], ["else_out"], name="/loop/outer/else/sigmoid")]
    body = _condition("input", "loop/") + [
        helper.make_node("Less", ["i", "two"], ["early"], name="/loop/early"),
        helper.make_node("And", ["loop/cond", "early"], ["outer_cond"], name="/loop/outer_cond"),
        helper.make_node("Identity", ["cond_in"], ["cond_out"], name="/loop/cond"),
        helper.make_node("If", ["outer_cond"], ["h_out"], name="/loop/outer",
                         then_branch=_branch("outer_then", then_nodes, "then_out"),
                         else_branch=_branch("outer_else", else_nodes, "else_out"))]
    weights = [_init(n, _w(rng, (features, features), features)) for n in ("then.then.W", "then.else.W", "else.W")]
    extra = [_init("two", np.array(2, np.int64)), _init("col0", np.array(0, np.int64)),
             _init("zero", np.array(0.0, np.float32))]
    return _loop_then_gemm("loop_nested_if", body, weights, extra, rng, features=features, steps=steps,
                           out_features=out_features)


def scan_if(*, features: int = 8, hidden: int = 16, steps: int = 4, out_features: int = 6, opset: int = 17,
            seed: int = 0) -> onnx.ModelProto:
    """An If inside a Scan body, its condition per step: is the step's input positive on average?"""
    rng = np.random.default_rng(seed)
    vi = helper.make_tensor_value_info
    then_nodes = [helper.make_node("MatMul", ["z", "then.W"], ["then/z"], name="/scan/then/MatMul"),
                  helper.make_node("Relu", ["then/z"], ["then_out"], name="/scan/then/relu")]
    else_nodes = [helper.make_node("MatMul", ["z", "else.W"], ["else/z"], name="/scan/else/MatMul"),
                  helper.make_node("Tanh", ["else/z"], ["else_out"], name="/scan/else/tanh")]
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_t", "in.W"], ["xw"], name="/scan/in/MatMul"),
         helper.make_node("Add", ["h_in", "xw"], ["z"], name="/scan/add"),
         *_condition("x_t", "scan/"),
         helper.make_node("If", ["scan/cond"], ["h_out"], name="/scan/select",
                          then_branch=_branch("then", then_nodes, "then_out"),
                          else_branch=_branch("else", else_nodes, "else_out",
                                              [_init("else.W", _w(rng, (hidden, hidden), hidden))])),
         helper.make_node("Identity", ["h_out"], ["y_t"], name="/scan/y")],
        "scan_body", [vi("h_in", TensorProto.FLOAT, None), vi("x_t", TensorProto.FLOAT, None)],
        [vi("h_out", TensorProto.FLOAT, None), vi("y_t", TensorProto.FLOAT, None)])
    if opset >= 9:  # batch-major sequences scanned over axis 1, the steps stacked on axis 1
        scan = helper.make_node("Scan", ["h0", "input"], ["h_T", "ys"], body=body, num_scan_inputs=1,
                                scan_input_axes=[1], scan_output_axes=[1], name="/scan")
    else:  # Scan-8: axis 0 is the batch, axis 1 the steps, the body sees one sample's step
        scan = helper.make_node("Scan", ["", "h0", "input"], ["h_T", "ys"], body=body, num_scan_inputs=1,
                                name="/scan")
    nodes = [helper.make_node("Gather", ["input", "first"], ["x0"], axis=1, name="/first"),
             helper.make_node("MatMul", ["x0", "init.W"], ["h0_pre"], name="/init/MatMul"),
             helper.make_node("Tanh", ["h0_pre"], ["h0"], name="/init/tanh"),
             scan,
             helper.make_node("ReduceMean", ["ys"], ["pooled"], axes=[1], keepdims=0, name="/pool"),
             helper.make_node("Gemm", ["pooled", "out.weight", "out.bias"], ["output"], transB=1, name="/out/Gemm")]
    inits = [_init("init.W", _w(rng, (features, hidden), features)),
             _init("in.W", _w(rng, (features, hidden), features)),
             _init("then.W", _w(rng, (hidden, hidden), hidden)),
             _init("out.weight", _w(rng, (out_features, hidden), hidden)),
             _init("out.bias", (0.1 * rng.standard_normal(out_features)).astype(np.float32)),
             _init("first", np.array(0, np.int64)), _init("zero", np.array(0.0, np.float32))]
    model = _model("scan_if", nodes, inits, [steps, features], [out_features])
    model.opset_import[0].version = opset
    return model
