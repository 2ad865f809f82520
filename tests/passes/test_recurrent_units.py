"""Dead-neuron removal shrinks LSTM/GRU/RNN hidden sizes (passes/channel_groups/rules_layers._recurrent).

A hidden unit goes when nothing reads it: its column of R and every reader of Y, Y_h, Y_c at its position zero.
Every shrunk model is checked with onnx's full checker and against onnxruntime on the unshrunk (masked) model."""

from __future__ import annotations


import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.models.builders_control import gru_classifier, lstm_classifier, rnn_classifier
from onnxprune.models.third_party_builders import time_major_lstm
from onnxprune.passes.dead_neurons import remove_dead_neurons
from onnxprune.passes.neuron_masks import neuron_map, neuron_masks
from tests.oracle import run

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
BUILDERS = {
    "lstm": lambda **k: lstm_classifier(**k),
    "gru": lambda **k: gru_classifier(**k),
    "gru_lbr": lambda **k: gru_classifier(linear_before_reset=1, **k),
    "rnn": lambda **k: rnn_classifier(**k),
    "lstm_reverse": lambda **k: lstm_classifier(reverse=True, **k),
}
X = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(np.float32)


def _inits(model) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}


def _set(model, values: dict[str, np.ndarray]) -> None:
    for i in model.graph.initializer:
        if i.name in values:
            i.CopyFrom(numpy_helper.from_array(values[i.name].astype(numpy_helper.to_array(i).dtype), i.name))


def _unread(model, units, op: str = "lstm", head_cols=None) -> None:
    """Zero unit k's column of R (every direction) and the head's columns reading it, for k in `units`: nothing
    reads those units any more (their own rows stay)."""
    v = _inits(model)
    for k in units:
        v[f"{op}.R"][:, :, k] = 0.0
    v["fc.weight"][:, list(head_cols if head_cols is not None else units)] = 0.0
    _set(model, v)


def _node(model, op):
    return next(n for n in model.graph.node if n.op_type == op)


def _hidden(model, op) -> int:
    return next(a.i for a in _node(model, op).attribute if a.name == "hidden_size")


def _same(a, b, feeds) -> None:
    got, want = run(a, feeds), run(b, feeds)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("state", [False, True])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_masked_hidden_units_leave_the_dense_shapes(name, state):
    model = BUILDERS[name](initial_state=state, seed=1)
    op = _node(model, "LSTM" if "lstm" in name else "GRU" if "gru" in name else "RNN").op_type
    weights = {k: v for k, v in _inits(model).items() if v.ndim >= 2}
    nmap = neuron_map(model, set(weights))
    assert len(nmap.candidates) == 16  # the hidden units (the Gemm's outputs are the graph's output)
    masks, gone = neuron_masks(nmap, weights, {k: np.ones(v.shape, bool) for k, v in weights.items()}, 0.5)
    assert len(gone) == 8
    _set(model, {k: weights[k] * masks[k] for k in weights})
    shrunk, report = remove_dead_neurons(model)
    onnx.checker.check_model(shrunk, full_check=True)
    assert _hidden(shrunk, op) == 8 and report.removed == 8
    after, g = _inits(shrunk), GATES[op]
    w, r = (after[f"{op.lower()}.{k}"] for k in "WR")
    assert w.shape == (1, g * 8, 8) and r.shape == (1, g * 8, 8) and after[f"{op.lower()}.B"].shape == (1, 2 * g * 8)
    assert after["fc.weight"].shape == (4, 8)
    _same(shrunk, model, {"input": X})


def test_a_unit_nothing_reads_goes_whatever_its_own_rows_hold():
    """Unit 3's rows of W and R stay; its column of R and of the head are zero: it reads, nobody reads it."""
    model = lstm_classifier(seed=2)
    _unread(model, [3])
    shrunk, report = remove_dead_neurons(model)
    assert _hidden(shrunk, "LSTM") == 15 and report.removed == 1
    _same(shrunk, model, {"input": X})


def test_a_unit_the_recurrence_reads_stays():
    """The head ignores unit 3, but the gates of other units read it through R: it is alive."""
    model = gru_classifier(seed=2)
    v = _inits(model)
    v["gru.W"][0][3::16] = 0.0  # its input rows of every gate
    v["fc.weight"][:, 3] = 0.0
    _set(model, v)
    shrunk, report = remove_dead_neurons(model)
    assert _hidden(shrunk, "GRU") == 16 and report.removed == 0


def _state_input(model: onnx.ModelProto, hidden: int = 16) -> onnx.ModelProto:
    """`model` (built with initial_state=True) with its initial state a graph input 'h0' [1, N, hidden]."""
    drop = {"/batch", "/state_shape", "/h0"}
    nodes = [n for n in model.graph.node if n.name not in drop]
    inits = [i for i in model.graph.initializer if i.name not in ("dirs", "hid")]
    h0 = helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "N", hidden])
    graph = helper.make_graph(nodes, "state_input", [*model.graph.input, h0], list(model.graph.output), inits)
    out = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    onnx.checker.check_model(out, full_check=True)
    return out


def test_an_initial_state_fed_by_the_user_keeps_its_size_and_is_read_through_a_gather():
    model = _state_input(lstm_classifier(initial_state=True, seed=3))
    _unread(model, [2, 5, 11])
    shrunk, _ = remove_dead_neurons(model)
    onnx.checker.check_model(shrunk, full_check=True)
    assert _hidden(shrunk, "LSTM") == 13
    dims = [d.dim_value or d.dim_param for d in shrunk.graph.input[1].type.tensor_type.shape.dim]
    assert dims == [1, "N", 16]  # the model's interface is the same
    gather = [n for n in shrunk.graph.node if n.op_type == "Gather"]
    assert len(gather) == 1 and list(gather[0].input)[0] == "h0"
    h0 = np.random.default_rng(4).standard_normal((1, 3, 16)).astype(np.float32)
    _same(shrunk, model, {"input": X, "h0": h0})


def test_a_state_the_model_outputs_keeps_every_unit():
    model = lstm_classifier(seed=3)
    model.graph.output.append(helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, "N", 16]))
    _unread(model, [4])
    shrunk, report = remove_dead_neurons(model)
    assert _hidden(shrunk, "LSTM") == 16 and report.removed == 0
    assert any("graph output" in line for line in report.blocked)


def test_time_major_lstm_read_through_squeeze_shrinks():
    model = time_major_lstm(hidden=6, seed=1)
    v = _inits(model)
    v["lstm.R"][0][:, 1] = 0.0
    v["fc.weight"][1, :] = 0.0  # MatMul weight [hidden, classes]: row 1 reads unit 1
    _set(model, v)
    shrunk, report = remove_dead_neurons(model)
    assert _hidden(shrunk, "LSTM") == 5 and report.removed == 1
    x = np.random.default_rng(5).standard_normal((5, 2, 4)).astype(np.float32)
    _same(shrunk, model, {"x": x})


def test_a_bidirectional_unit_goes_from_both_directions_at_once():
    """Unit k of the forward and the backward direction sit at one position of Y's last axis: one class. Y_h
    [2, N, H] -> Transpose -> Flatten reads them as features k and H + k of the head."""
    model = lstm_classifier(bidirectional=True, seed=3)
    _unread(model, [4], head_cols=[4, 20])
    shrunk, report = remove_dead_neurons(model)
    onnx.checker.check_model(shrunk, full_check=True)
    assert _hidden(shrunk, "LSTM") == 15 and report.removed == 1
    after = _inits(shrunk)
    assert after["lstm.W"].shape == (2, 60, 8) and after["fc.weight"].shape == (4, 30)
    _same(shrunk, model, {"input": X})


def test_a_unit_one_direction_still_reads_stays():
    model = lstm_classifier(bidirectional=True, seed=3)
    v = _inits(model)
    v["lstm.R"][0, :, 4] = 0.0  # the backward direction's gates still read its unit 4
    v["fc.weight"][:, [4, 20]] = 0.0
    _set(model, v)
    shrunk, report = remove_dead_neurons(model)
    assert _hidden(shrunk, "LSTM") == 16 and report.removed == 0


def _stacked_bidirectional(hidden: int = 6, seed: int = 0) -> onnx.ModelProto:
    """x [T, N, 4] -> bidirectional LSTM -> Y [T, 2, N, H] -> Transpose [T, N, 2, H] -> Reshape [0, 0, -1] ->
    bidirectional LSTM -> same -> MatMul [2H, 3]: torch.onnx's export of a 2-layer nn.LSTM(bidirectional=True)."""
    rng = np.random.default_rng(seed)
    inits, nodes, x = [], [], "x"
    for layer, features in enumerate((4, 2 * hidden)):
        p = f"l{layer}"
        inits += [numpy_helper.from_array((rng.standard_normal((2, 4 * hidden, features)) / 3).astype(np.float32),
                                          f"{p}.W"),
                  numpy_helper.from_array((rng.standard_normal((2, 4 * hidden, hidden)) / 3).astype(np.float32),
                                          f"{p}.R"),
                  numpy_helper.from_array((rng.standard_normal((2, 8 * hidden)) / 10).astype(np.float32), f"{p}.B")]
        nodes += [helper.make_node("LSTM", [x, f"{p}.W", f"{p}.R", f"{p}.B"], [f"{p}.Y"], hidden_size=hidden,
                                   direction="bidirectional", name=f"/{p}/LSTM"),
                  helper.make_node("Transpose", [f"{p}.Y"], [f"{p}.T"], perm=[0, 2, 1, 3], name=f"/{p}/Transpose"),
                  helper.make_node("Reshape", [f"{p}.T", "merge"], [f"{p}.out"], name=f"/{p}/Reshape")]
        x = f"{p}.out"
    inits += [numpy_helper.from_array(np.array([0, 0, -1], np.int64), "merge"),
              numpy_helper.from_array((rng.standard_normal((2 * hidden, 3)) / 3).astype(np.float32), "fc.weight")]
    nodes.append(helper.make_node("MatMul", [x, "fc.weight"], ["logits"], name="/fc/MatMul"))
    graph = helper.make_graph(nodes, "bilstm2", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["T", "N", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_stacked_bidirectional_layers_shrink_through_the_direction_merge():
    model = _stacked_bidirectional()
    onnx.checker.check_model(model, full_check=True)
    weights = {k: v for k, v in _inits(model).items() if v.ndim >= 2}
    nmap = neuron_map(model, set(weights))
    assert len(nmap.candidates) == 12
    masks, gone = neuron_masks(nmap, weights, {k: np.ones(v.shape, bool) for k, v in weights.items()}, 0.5)
    _set(model, {k: weights[k] * masks[k] for k in weights})
    shrunk, report = remove_dead_neurons(model)
    onnx.checker.check_model(shrunk, full_check=True)
    after = _inits(shrunk)
    assert report.removed == 6 and after["l1.W"].shape == (2, 12, 6) and after["fc.weight"].shape == (6, 3)
    x = np.random.default_rng(1).standard_normal((5, 2, 4)).astype(np.float32)
    _same(shrunk, model, {"x": x})


def test_an_initial_state_fed_as_a_matrix_keeps_its_features():
    """Real models 53: g2p_id's Keras seq2seq decoder takes its LSTM's h and c as graph inputs 'input_3', 'input_4'
    [N, 256], Unsqueezed to [1, N, 256]. Their features were seeded as input features that nothing read, and the
    shrink gathered each input down to 1 feature: the written model failed in onnxruntime ("Input initial_h must
    have shape {1,64,256}. Actual:{1,64,1}"). An initial state's features are read by the layer: they stay."""
    model = _state_input(lstm_classifier(initial_state=True, seed=3))
    h0 = next(i for i in model.graph.input if i.name == "h0")
    h0.CopyFrom(helper.make_tensor_value_info("h0", TensorProto.FLOAT, ["N", 16]))
    lstm = _node(model, "LSTM")
    lstm.input[5] = lstm.input[6] = "h0_3d"
    model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "h0_axes"))
    model.graph.node.insert(0, helper.make_node("Unsqueeze", ["h0", "h0_axes"], ["h0_3d"], name="/h0/Unsqueeze"))
    onnx.checker.check_model(model, full_check=True)
    _unread(model, [2, 5, 11])
    shrunk, _ = remove_dead_neurons(model, gather_inputs=True)  # as the shrink step calls it
    onnx.checker.check_model(shrunk, full_check=True)
    assert _hidden(shrunk, "LSTM") == 13
    dims = [d.dim_value or d.dim_param for d in shrunk.graph.input[1].type.tensor_type.shape.dim]
    assert dims == ["N", 16] and not [n for n in shrunk.graph.node if n.op_type == "Gather" and n.input[0] == "h0"]
    h = np.random.default_rng(4).standard_normal((3, 16)).astype(np.float32)
    _same(shrunk, model, {"input": X, "h0": h})
