"""Weights third-party models keep where a plain walk of the main graph does not see them: inside If branches,
in LSTM/GRU nodes, handed to a Loop as loop-carried values no iteration changes (tf2onnx's Keras RNNs), behind a
Gather of a weight bank; and integer weights, refused with what they would need."""

import logging

import numpy as np
import onnx
import pytest

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.sensitivity import scan, scan_naive
from onnxprune.models import builders_control as bc
from onnxprune.passes.apply_masks import ApplyMasks
from onnxprune.passes.base import PruneState, run_passes
from onnxprune.passes.dead_neurons import remove_dead_neurons
from onnxprune.passes.magnitude import MagnitudePrune, resolve_targets
from onnxprune.passes.sparse_encode import SparseEncode
from onnxprune.passes.weights import find_prunable
from tests.oracle import assert_same_outputs, zero_weights

MODELS = {
    "if_network": (bc.if_network, {"fc1.weight": (1, 0), "then.fc2.weight": (1, 0), "else.fc2.weight": (0, 1)}),
    "lstm": (bc.lstm_classifier, {"lstm.W": (1, 2), "lstm.R": (1, 2), "fc.weight": (0, 1)}),
    "lstm_bidirectional_initial_state": (lambda **k: bc.lstm_classifier(bidirectional=True, initial_state=True, **k),
                                         {"lstm.W": (1, 2), "lstm.R": (1, 2), "fc.weight": (0, 1)}),
    "gru": (bc.gru_classifier, {"gru.W": (1, 2), "gru.R": (1, 2), "fc.weight": (0, 1)}),
    "gru_bidirectional_initial_state": (lambda **k: bc.gru_classifier(bidirectional=True, initial_state=True, **k),
                                        {"gru.W": (1, 2), "gru.R": (1, 2), "fc.weight": (0, 1)}),
    "gather_bank": (bc.gather_bank, {"bank.weight": (2, 1)}),
    # sweep 27: a top-1 mixture of experts' [E, in, out] bank, one expert a sample, was an embedding table (0 MACs)
    "expert_bank": (bc.expert_bank, {"router.weight": (0, 1), "experts.w": (2, 1), "head.weight": (0, 1)}),
    "while_rnn": (bc.while_rnn, {"rnn.W": (1, 0), "rnn.R": (1, 0), "fc.weight": (0, 1)}),
    # sweep 19: with two Identity hand-backs (jax2onnx's lax.scan) W read as "not a weight (used by Loop)"
    "while_rnn_hand_back": (lambda **k: bc.while_rnn(hand_back=True, **k),
                            {"rnn.W": (1, 0), "rnn.R": (1, 0), "fc.weight": (0, 1)}),
}


def feeds(model, n=4, batch=3):
    """Seeded inputs; odd seeds shifted up, even ones down, so data-chosen branches and banks are all taken."""
    spec = model.graph.input[0].type.tensor_type.shape.dim
    shape = [batch] + [d.dim_value for d in spec[1:]]
    out = []
    for s in range(n):
        x = np.random.default_rng(s).standard_normal(shape).astype(np.float32)
        out.append({"input": x + (0.7 if s % 2 else -0.7)})
    return out


def pruned(model, sparsity=0.7):
    inv = find_prunable(model)
    state = PruneState()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    run_passes([MagnitudePrune(inv, resolve_targets(inv, sparsity=sparsity)), ApplyMasks()], out, state)
    return out, state


@pytest.mark.parametrize("name", sorted(MODELS))
def test_inventory_finds_the_hidden_weights_with_their_axes(name):
    build, expected = MODELS[name]
    inv = find_prunable(build())
    assert {w.name: (w.out_axis, w.in_axis) for w in inv.prunable} == expected


def test_if_weights_know_their_branch_and_the_shared_outer_weight_is_one_weight():
    inv = find_prunable(bc.if_network()).by_name()
    assert inv["then.fc2.weight"].scope == "If '/select'/then_branch" and inv["then.fc2.weight"].source == "constant"
    assert inv["else.fc2.weight"].scope == "If '/select'/else_branch"
    assert inv["fc1.weight"].scope.startswith("If '/select'/")  # read by both branches, one mask


def test_recurrent_biases_and_embedding_like_gathers_are_not_weights():
    inv = find_prunable(bc.lstm_classifier())
    reasons = {s.name: s.reason for s in inv.skipped}
    assert reasons["lstm.B"] == "bias of LSTM '/lstm'"
    assert {w.kind for w in inv.prunable if w.name.startswith("lstm")} == {"recurrent"}


def test_a_bank_each_sample_selects_one_matrix_of_is_a_weight_and_its_bias_bank_a_bias():
    """Sweep 27's mixture of experts: w [E, in, out] Gathered with one id a sample and read by a batched MatMul is
    that MatMul's weight, multiplied once a sample by one expert (in x out MACs, not 0 as an embedding table's);
    b [E, out] Gathered the same way and added to its output is a bias bank, left alone as biases are (it was
    pruned to 5% like a table)."""
    inv = find_prunable(bc.expert_bank(in_features=16, hidden=8, experts=3))
    w = inv.by_name()["experts.w"]
    assert (w.kind, w.op_type, w.via, w.macs) == ("fc", "MatMul", ("Gather",), 16 * 8)
    reasons = {s.name: s.reason for s in inv.skipped}
    assert "experts.b" not in inv.by_name() and reasons["experts.b"].startswith("a bias bank: Gather")


def test_integer_weights_say_what_pruning_them_would_take():
    inv = find_prunable(bc.matmul_integer())
    assert [w.name for w in inv.prunable] == ["fc2.weight"]
    reason = {s.name: s.reason for s in inv.skipped}["fc1.weight_quantized"]
    assert "MatMulInteger '/fc1/MatMulInteger'" in reason
    # the inventory of the model as stored: the load step folds it first (passes/quantized_weights.py)
    assert "QLinearConv" in reason and "quantize_dynamic" in reason and "an 8-bit QDQ model" in reason


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_shot_prune_matches_the_masked_oracle(name):
    model = MODELS[name][0](seed=1)
    out, state = pruned(model)
    assert set(state.masks) == set(MODELS[name][1])
    for mask in state.masks.values():
        assert abs(1 - mask.mean() - 0.7) <= 1.5 / mask.size
    onnx.checker.check_model(out, full_check=True)
    assert_same_outputs(out, zero_weights(model, state.masks), feeds=feeds(model), rtol=1e-5)
    assert not np.allclose(*(o["output"] for o in (_run(out, feeds(model)[0]), _run(model, feeds(model)[0]))))


def _run(model, feed):
    from tests.oracle import run

    return run(model, feed)


@pytest.mark.parametrize("fmt", ["constant", "initializer"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_sparse_encoding_keeps_the_function_wherever_the_weight_lives(name, fmt):
    model = MODELS[name][0](seed=2)
    dense, state = pruned(model, sparsity=0.9)
    enc = onnx.ModelProto()
    enc.CopyFrom(dense)
    result = SparseEncode(sorted(state.masks), fmt).run(enc, PruneState())
    assert result.modified
    if fmt == "constant":
        onnx.checker.check_model(enc, full_check=True)
    else:
        onnx.checker.check_model(enc)
    assert_same_outputs(enc, dense, feeds=feeds(model), rtol=1e-6)
    assert enc.ByteSize() < dense.ByteSize()


@pytest.mark.parametrize("name", ["if_network", "while_rnn"])
def test_dead_neuron_removal_blocks_and_says_so(name, caplog):
    model = MODELS[name][0](seed=3)
    dense, state = pruned(model, sparsity=0.95)
    with caplog.at_level(logging.INFO, logger="onnxprune.passes.channel_groups"):
        shrunk, report = remove_dead_neurons(dense)
    onnx.checker.check_model(shrunk, full_check=True)
    assert_same_outputs(shrunk, dense, feeds=feeds(model), rtol=1e-5)
    op = {"if_network": "If", "while_rnn": "Loop"}.get(name, name.split("_")[0].upper())
    assert any(f"{op} '" in r.getMessage() and "keep their channels" in r.getMessage() for r in caplog.records)
    after = {w.name: w.shape for w in find_prunable(shrunk).prunable}
    for w in find_prunable(dense).prunable:  # weights in bodies keep their shapes
        if w.scope:
            assert after[w.name] == w.shape


def test_sensitivity_scan_of_an_if_model_runs_and_matches_the_oracle():
    model = bc.if_network(seed=4)
    inv = find_prunable(model)
    data = {"input": np.concatenate([f["input"] for f in feeds(model, n=6, batch=4)])}
    ev = Evaluator(open_data(data, model, batch_size=4), "rel_l2", model)
    fast = scan(model, inv, ev, levels=(0.5, 0.9))
    naive = scan_naive(model, inv, ev, levels=(0.5, 0.9))
    assert [lay.name for lay in fast.layers] == [lay.name for lay in naive.layers]
    for a, b in zip(fast.layers, naive.layers):
        assert np.allclose(a.values, b.values, atol=1e-4), (a.name, a.path, a.values, b.values)
        assert a.path in ("downstream", "full")
    assert all(v < 100.0 for lay in fast.layers for v in lay.values[-1:])  # pruning 90% of any layer is seen


@pytest.mark.parametrize("name", ["lstm", "gather_bank", "expert_bank", "while_rnn"])
def test_sensitivity_scan_of_recurrent_and_bank_models_matches_the_oracle(name):
    model = MODELS[name][0](seed=5)
    inv = find_prunable(model)
    data = {"input": np.concatenate([f["input"] for f in feeds(model, n=4, batch=4)])}
    ev = Evaluator(open_data(data, model, batch_size=4), "rel_l2", model)
    fast, naive = scan(model, inv, ev, levels=(0.5, 0.9)), scan_naive(model, inv, ev, levels=(0.5, 0.9))
    for a, b in zip(fast.layers, naive.layers):
        assert np.allclose(a.values, b.values, atol=1e-4), (a.name, a.path, a.values, b.values)


def test_an_embedding_lookup_is_not_a_weight_bank():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"], name="lookup"),
             helper.make_node("MatMul", ["e", "W"], ["y"], name="proj")]
    inits = [numpy_helper.from_array(rng.standard_normal((50, 8)).astype(np.float32), "emb"),
             numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    inv = find_prunable(model)
    found = inv.by_name()
    assert sorted(found) == ["W", "emb"]  # the table is a weight of its own (an embedding), not a bank of W
    assert (found["emb"].kind, found["emb"].op_type, found["emb"].macs) == ("embedding", "Gather", 0)
    assert (found["W"].kind, found["W"].via) == ("fc", ())


def test_a_gather_of_a_constant_table_at_constant_or_scalar_ids_is_no_embedding():
    """A constant index (positions folded by the exporter) or a scalar one (a bank selector) reads no data ids."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    for ids, kind in ((numpy_helper.from_array(np.array([0, 2, 1], np.int64), "ids"), None),
                      (numpy_helper.from_array(np.array(1, np.int64), "ids"), None)):
        nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="lookup"),
                 helper.make_node("Add", ["x", "e"], ["y"], name="add")]
        inits = [numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "table"), ids]
        out_shape = [3, 4] if len(ids.dims) else [4]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, out_shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        assert find_prunable(model).prunable == []


def test_an_embedding_table_both_if_branches_read_is_one_prunable_weight(tmp_path):
    """Sweep 13: a table an outer-scope initializer, read by a Gather in each If branch, was refused as "used in
    different ways". It is one weight; one mask serves both branches, checked numerically on both paths, and a budget
    leaves it alone: its rows inside the branches are counted now (sweep 28), all 20 read, but the else branch that
    also reads it ran for no sample, and the run says so."""
    import onnxruntime as ort

    from onnxprune import prune

    model = bc.if_table()
    inv = find_prunable(model)
    table = next(w for w in inv.prunable if w.name == "table")
    assert table.kind == "embedding" and not any(s.name == "table" for s in inv.skipped)
    out = tmp_path / "pruned.onnx"
    prune(model, output=out, sparsity=0.5)
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    pruned_table = next(onnx.numpy_helper.to_array(t) for t in written.graph.initializer if t.name == "table")
    assert (pruned_table == 0).mean() == pytest.approx(0.5, abs=0.01)
    ids = np.random.default_rng(1).integers(0, 20, (7, 6)).astype(np.int64)
    W = next(onnx.numpy_helper.to_array(t) for t in written.graph.initializer if t.name == "W")
    sess = ort.InferenceSession(out.as_posix(), providers=["CPUExecutionProvider"])
    for flag, scale in ((True, 1.0), (False, 2.0)):  # each branch reads the one pruned table
        got = sess.run(None, {"ids": ids, "flag": np.array(flag)})[0]
        np.testing.assert_allclose(got, (scale * pruned_table[ids]).mean(axis=1) @ W, rtol=1e-5, atol=1e-6)
    rng = np.random.default_rng(2)
    result = prune(model, data={"ids": rng.integers(0, 20, (300, 6)).astype(np.int64), "flag": np.array(True)},
                   max_loss=1.0, time_budget=30)
    table_after = next(onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer if t.name == "table")
    np.testing.assert_array_equal(table_after, onnx.numpy_helper.to_array(model.graph.initializer[0]))
    assert not any("where its rows are not counted" in n for n in result.state.notes)
    assert any(n.startswith("1 weight(s) read in branches no sample of --data took (If '/If'/else_branch")
               for n in result.state.notes)
