"""passes/loop_invariants.py: a weight a Loop carries unchanged, also read outside it, read from outside by the body."""

from __future__ import annotations

import copy

import numpy as np
import onnx

from onnxprune import prune
from onnxprune.models.third_party_builders import carried_loop_rnn, conv_lstm_loop
from onnxprune.passes.base import PruneState
from onnxprune.passes.loop_invariants import LoopInvariants, carried_weights
from onnxprune.passes.weights import find_prunable
from tests.oracle import assert_same_outputs, check_full


def test_a_weight_carried_through_a_loop_and_read_outside_is_one_tied_weight_with_the_same_outputs():
    """Sweep 24's Keras Masking + LSTM (tf2onnx): the kernel, read by the first step's MatMul and carried through
    the while Loop, was "read by MatMul ... and by Loop ...: used in different ways" (97% of the weights)."""
    model = carried_loop_rnn(seed=0)
    check_full(model)
    before = {w.name for w in find_prunable(model).prunable}
    assert "W" not in before and "R" in before  # R only the Loop reads: followed through the carried value already
    assert [(n.name, k) for n, k in carried_weights(model)] == [("/rnn/Loop", 0)]
    rewritten = LoopInvariants()(copy.deepcopy(model), PruneState()).model
    check_full(rewritten)
    loop = next(n for n in rewritten.graph.node if n.op_type == "Loop")
    assert list(loop.input)[2:] == ["R", "/h0/Tanh_output_0"] and list(loop.output) == ["r_final", "h_last"]
    for seeds in ((0, 1, 2), (3,)):
        assert_same_outputs(rewritten, model, seeds=seeds, rtol=1e-5)
    found = {w.name: w for w in find_prunable(rewritten).prunable}
    assert {"W", "R", "head.weight"} <= set(found) and found["W"].readers == 2


def test_a_carried_weight_the_loop_changes_or_hands_out_stays_carried():
    model = carried_loop_rnn(seed=0)
    final = copy.deepcopy(model)  # the Loop's final W is a graph output
    final.graph.output.append(onnx.helper.make_tensor_value_info("w_final", onnx.TensorProto.FLOAT, [3, 8]))
    assert carried_weights(final) == []
    changed = copy.deepcopy(model)  # the body hands back 2 W, not W
    body = next(a.g for a in next(n for n in changed.graph.node if n.op_type == "Loop").attribute if a.name == "body")
    body.node.append(onnx.helper.make_node("Add", ["w", "w"], ["w2"], name="/body/double"))
    body.output[1].name = "w2"
    check_full(changed)
    assert carried_weights(changed) == []


def test_pruning_the_carried_loop_rnn_prunes_the_weight_it_carries():
    model = carried_loop_rnn(hidden=16, seed=0)
    data = {"x": np.random.default_rng(0).standard_normal((64, 4, 3)).astype(np.float32)}
    result = prune(model, data=data, sparsity=0.5, iterations=1, epochs=1, seed=0)
    check_full(result.model)
    layers = {r["weight"]: r for r in result.report["layers"]}
    assert layers["W"]["nonzeros"] < layers["W"]["params"] and layers["R"]["nonzeros"] < layers["R"]["params"]
    w = next(onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer if t.name == "W")
    assert (w == 0).mean() >= 0.4
    assert_same_outputs(result.model, result.dense_model, rtol=1e-4)


def test_a_layer_inside_a_loop_body_is_named_when_no_neuron_of_it_is_masked():
    """Sweep 24's Keras Bidirectional GRU (tf2onnx while loops): the hand recipe's table showed neurons "-" for the
    four GRU MatMuls in the bodies and the note said "masked no neuron of 1 of 5 layers", naming only the head."""
    from onnxprune.passes.neuron_masks import unmaskable_note

    model = LoopInvariants()(carried_loop_rnn(seed=0), PruneState()).model
    note = unmaskable_note(model, {"W", "R", "head.weight"})
    assert note.startswith("--neuron-sparsity masked no neuron of 2 of 3 layers"), note
    assert "MatMul '/body/MatMul_1': it is inside Loop '/rnn/Loop'/body; the channel analysis does not enter" in note


def test_weights_the_loops_of_both_if_branches_carry_are_read_from_outside_and_pruned():
    """Sweep 27's tf.function (tf2onnx): a tf.while_loop RNN under a tf.cond; each branch's Loop carries the same
    W and R, the two bodies' inputs named alike, so each carried body input had two readers (one per body) and the
    weights were "not a weight of ... (used by 2 nodes: Loop)": 64% of the model's weights unprunable."""
    from onnxprune.models.third_party_builders import cond_while_rnn
    from onnxprune.passes.scopes import all_nodes

    model = cond_while_rnn(hidden=16, seed=0)
    check_full(model)
    assert {"W", "R"}.isdisjoint(w.name for w in find_prunable(model).prunable)
    assert sorted((n.name, k) for n, k in carried_weights(model)) == [("/else/Loop", 0), ("/else/Loop", 1),
                                                                     ("/then/Loop", 0), ("/then/Loop", 1)]
    rewritten = LoopInvariants()(copy.deepcopy(model), PruneState()).model
    check_full(rewritten)
    assert all(list(n.input)[2:] == ["h0"] for n in all_nodes(rewritten) if n.op_type == "Loop")
    rng = np.random.default_rng(0)
    for x in (rng.uniform(0, 0.4, (1, 4, 3)), rng.uniform(0.6, 1, (1, 4, 3))):  # each branch
        x = x.astype(np.float32)
        assert_same_outputs(rewritten, model, feeds=[{"x": x}], rtol=0)
    found = {w.name: w for w in find_prunable(rewritten).prunable}
    assert {"W", "R", "head.weight"} <= set(found) and found["W"].readers == 2
    data = {"x": rng.uniform(0, 1, (64, 1, 4, 3)).astype(np.float32)}
    result = prune(model, data=[{"x": x} for x in data["x"]], sparsity=0.5, seed=0)
    check_full(result.model)
    layers = {r["weight"]: r for r in result.report["layers"]}
    assert layers["W"]["nonzeros"] < layers["W"]["params"] and layers["R"]["nonzeros"] < layers["R"]["params"]
    assert_same_outputs(result.model, result.dense_model, feeds=[{"x": x} for x in data["x"][:8]], rtol=1e-4)


def test_gate_kernels_a_loop_body_splits_from_a_carried_kernel_are_stored_and_pruned():
    """Sweep 29's Keras ConvLSTM2D (tf2onnx): the while Loop carries the kernel, which the body Splits into its
    gates and Transposes to each gate Conv's weight. The chain stopped at the body input, so 9.8K of the model's
    17.7K weights were "not a weight ... (used by Loop)". Now constant-weights reads a carried invariant as the
    initializer that sets it, each gate's weight is stored as the constant it is, and the Loop no longer carries the
    kernel (read by nothing): the file holds it once."""
    from onnxprune.passes.loading import run_load_passes

    model = conv_lstm_loop(seed=0)
    check_full(model)
    assert "K" not in {w.name for w in find_prunable(model).prunable}
    loaded = copy.deepcopy(model)
    run_load_passes(loaded, PruneState())
    check_full(loaded)
    assert_same_outputs(loaded, model, seeds=(0, 1, 2), rtol=0)
    found = {w.name: w for w in find_prunable(loaded).prunable}
    assert sorted(n for n in found if n != "head.weight") == ["K.folded", "K.folded.1"]
    assert all(found[n].size == 2 * 2 * 9 for n in ("K.folded", "K.folded.1"))
    loop = next(n for n in loaded.graph.node if n.op_type == "Loop")
    assert list(loop.input)[2:] == ["x"] and "K" not in {t.name for t in loaded.graph.initializer}
    data = {"x": np.random.default_rng(0).standard_normal((32, 2, 5, 5)).astype(np.float32)}
    result = prune(model, data=data, sparsity=0.5)
    check_full(result.model)
    layers = {r["weight"]: r for r in result.report["layers"]}
    assert layers["K.folded"]["nonzeros"] <= layers["K.folded"]["params"] // 2 + 1
    assert_same_outputs(result.model, result.dense_model, rtol=1e-5)
