"""Layer-wise reconstruction of weights inside If branches and Loop bodies (converter/reconstruct_bodies.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune.converter import reconstruct as reconstruct_module
from onnxprune.converter.reconstruct import ReconstructReport, _capturing, _layers, _run_captures, reconstruct
from onnxprune.converter.reconstruct_bodies import Place, places, why_not
from onnxprune.calibration.runtime import make_session
from onnxprune.models import builders_bodies as bb
from onnxprune.models import builders_control as bc
from onnxprune.passes.scopes import scopes
from onnxprune.passes.weights import weight_array
from tests.converter.test_reconstruct import feeds_for, output_error, prune
from tests.converter.test_reconstruct_recurrent import sequences
from tests.oracle import assert_same_outputs, check_full, run, zero_weights

CASES = {  # builder, feeds(n_batches, batch, seed), sparsity
    "if_matmul_gemm": (lambda: bc.if_network(seed=0), lambda n, b, s: feeds_for(bc.if_network(), n, b, s), 0.7),
    "if_convs": (lambda: bb.if_convs(seed=0), lambda n, b, s: feeds_for(bb.if_convs(), n, b, s), 0.6),
    "if_lstm": (lambda: bb.if_lstm(seed=0), lambda n, b, s: sequences(n, b, s), 0.6),
    "loop_rnn": (lambda: bc.while_rnn(seed=0), lambda n, b, s: sequences(n, b, s), 0.6),
    "nested_if": (lambda: bb.nested_if(seed=0), lambda n, b, s: correlated(n, b, s), 0.7),
}


def correlated(n_batches: int, batch: int, seed: int, features: int = 16) -> list[dict]:
    """[N, F] on a 4-dimensional subspace plus a little noise (as test_reconstruct_recurrent.sequences: on
    independent features the kept weights have nothing to make up for the pruned ones with)."""
    mix = np.random.default_rng(99).standard_normal((4, features))
    rng = np.random.default_rng(seed)
    return [{"input": (rng.standard_normal((batch, 4)) @ mix + 0.1 * rng.standard_normal((batch, features)))
             .astype(np.float32)} for _ in range(n_batches)]


def structure(model: onnx.ModelProto) -> list:
    """Every scope's node op types, inputs and outputs, and its graph outputs."""
    return [(sc.path, [(n.op_type, list(n.input), list(n.output)) for n in sc.graph.node],
             [o.name for o in sc.graph.output]) for sc in scopes(model.graph)]


def branch_taken(feeds) -> list[bool]:
    return [bool(f["input"].mean() > 0) for f in feeds]


@pytest.mark.parametrize("case", list(CASES))
def test_body_layers_are_refit_masks_kept_structure_unchanged_and_the_output_error_drops(case):
    build, data, sparsity = CASES[case]
    dense = build()
    pruned, masks = prune(dense, sparsity)
    feeds = data(8, 32, 0)
    if case.startswith("if"):
        assert 0 < sum(branch_taken(feeds)) < len(feeds), "the calibration feeds must take both branches"
    report = ReconstructReport()
    refit = reconstruct(pruned, dense, masks, feeds, report=report)
    check_full(refit)
    assert set(report.refit) == set(masks) and not report.skipped, report.skipped
    for name, r in report.refit.items():
        assert r["error_after"] < r["error_before"], name  # each layer's output error vs the dense model
    assert structure(refit) == structure(dense)  # the captures ran on copies
    for name, mask in masks.items():
        w = weight_array(refit, name)
        assert w.shape == mask.shape and not w[~mask].any(), name
        assert not np.array_equal(w, weight_array(pruned, name)), f"{name} was not changed"
    # the stored weights, with the pruned ones forced to zero again, run the same in onnxruntime
    assert_same_outputs(refit, zero_weights(refit, masks), rtol=1e-6)
    held_out = data(4, 32, 100)
    assert output_error(refit, dense, held_out) < 0.8 * output_error(pruned, dense, held_out)


def test_a_weight_both_branches_read_gets_rows_from_each_and_a_branch_only_its_own():
    dense = bc.if_network(seed=0)
    pruned, masks = prune(dense, 0.7)
    feeds = feeds_for(dense, 8, 32, 0)
    taken = branch_taken(feeds)
    report = ReconstructReport()
    reconstruct(pruned, dense, masks, feeds, report=report)
    assert report.refit["fc1.weight"]["samples"] == 8 * 32  # MatMul rows: one per sample, whichever branch ran
    assert report.refit["then.fc2.weight"]["samples"] == 32 * sum(taken)
    assert report.refit["else.fc2.weight"]["samples"] == 32 * (len(feeds) - sum(taken))


def test_a_branch_the_calibration_data_never_takes_is_left_as_pruned_with_the_reason():
    dense = bc.if_network(seed=0)
    pruned, masks = prune(dense, 0.7)
    feeds = [f for f in feeds_for(dense, 12, 32, 0) if f["input"].mean() > 0]
    report = ReconstructReport()
    refit = reconstruct(pruned, dense, masks, feeds, report=report)
    assert set(report.refit) == {"fc1.weight", "then.fc2.weight"}
    assert "If branch did not run" in report.skipped["else.fc2.weight"]
    np.testing.assert_array_equal(weight_array(refit, "else.fc2.weight"), weight_array(pruned, "else.fc2.weight"))


def test_loop_rows_are_iterations_times_samples_and_the_carried_state_is_teacher_forced():
    dense = bc.while_rnn(steps=5, seed=0)
    pruned, masks = prune(dense, 0.6)
    layers = {lay.weight: lay for lay in _layers(pruned, masks, ReconstructReport())}
    assert layers["rnn.R"].dense_x and not layers["rnn.W"].dense_x and not layers["fc.weight"].dense_x
    report = ReconstructReport()
    reconstruct(pruned, dense, masks, sequences(3, 16, 0), report=report)
    assert report.refit["rnn.W"]["samples"] == report.refit["rnn.R"]["samples"] == 5 * 3 * 16
    assert report.refit["fc.weight"]["samples"] == 3 * 16


def test_captured_body_tensors_are_the_values_the_body_computes():
    """An If branch's tensor: its value on the batches that took the branch, empty on the others; a Loop body's:
    every iteration's value stacked, folded into rows (checked against numpy)."""
    model = bc.if_network(seed=0)
    then = ("then/h0", ((2, "then_branch"),))
    exposed, mapping = _capturing(model, [then], {}, only=True)
    session = make_session(exposed, optimize=False)
    w = weight_array(model, "fc1.weight")
    for feed in feeds_for(model, 6, 8, 0):
        (got,) = _run_captures(session, mapping, [then], feed)
        if feed["input"].mean() > 0:
            np.testing.assert_allclose(got, feed["input"] @ w, rtol=1e-5, atol=1e-6)
        else:
            assert got.size == 0
    loop = bc.while_rnn(steps=5, seed=0)
    xw = ("xw", ((4, "body"),))
    exposed, mapping = _capturing(loop, [xw], {}, only=True)
    feed = sequences(1, 8, 0)[0]
    (got,) = _run_captures(make_session(exposed, optimize=False), mapping, [xw], feed)
    want = np.concatenate([feed["input"][:, t] @ weight_array(loop, "rnn.W") for t in range(5)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert list(run(exposed, feed)) == [mapping[xw][0]]  # only the capture: the rest of the graph is cut


def test_bodies_the_capture_does_not_reach_say_why():
    assert "Scan body" in why_not(Place((), ("Scan",)), "MatMul", False, "Scan 's'/body")
    assert "If within a Loop" in why_not(Place((), ("Loop", "If")), "MatMul", False, "x")
    assert "LSTM inside a Loop" in why_not(Place((), ("Loop",)), "LSTM", True, "x")
    assert why_not(Place((), ("If", "Loop")), "MatMul", False, "x") is None  # a Loop inside a branch: stacked
    assert why_not(Place((), ("If", "If")), "LSTM", True, "x") is None


def test_a_scan_body_weight_is_left_as_pruned():
    """A MatMul on an outer weight inside a Scan body (one step per row of the sequence)."""
    f32 = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_t", "scan.W"], ["y_t"], name="/scan/MatMul"),
         helper.make_node("Identity", ["s_in"], ["s_out"], name="/scan/state")],
        "scan_body",
        [helper.make_tensor_value_info("s_in", f32, None), helper.make_tensor_value_info("x_t", f32, None)],
        [helper.make_tensor_value_info("s_out", f32, None), helper.make_tensor_value_info("y_t", f32, None)])
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Scan", ["s0", "input"], ["s_T", "output"], body=body, num_scan_inputs=1, name="/scan")],
        "scan", [helper.make_tensor_value_info("input", f32, ["N", 8])],
        [helper.make_tensor_value_info("output", f32, ["N", 6])],
        initializer=[onnx.numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "scan.W"),
                     onnx.numpy_helper.from_array(np.zeros(1, np.float32), "s0")])
    dense = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    pruned, masks = prune(dense, 0.5)
    report = ReconstructReport()
    refit = reconstruct(pruned, dense, masks, [{"input": rng.standard_normal((4, 8)).astype(np.float32)}],
                        report=report)
    assert not report.refit and "Scan body" in report.skipped["scan.W"]
    np.testing.assert_array_equal(weight_array(refit, "scan.W"), weight_array(pruned, "scan.W"))


def test_places_walk_every_body_in_graph_order():
    model = bc.if_network(seed=0)
    where = places(model.graph)
    names = [p.node.name for p in where.values()]
    assert names.index("/greater") < names.index("/select") < min(names.index("/then/fc1/MatMul"),
                                                                  names.index("/else/fc1/MatMul"))
    assert where[id(next(p.node for p in where.values() if p.node.name == "/else/fc2/Gemm"))].ops == ("If",)


def test_a_conv_without_kernel_shape_is_refit_as_its_twin_with_one():
    """kernel_shape is optional on Conv (the weight's shape gives it): the refit reads the kernel from the weight."""
    feeds = feeds_for(bb.if_convs(), 4, 16, 0)
    refits = []
    for kernel_attr in (True, False):
        dense = bb.if_convs(kernel_attr=kernel_attr, seed=0)
        pruned, masks = prune(dense, 0.6)
        refits.append(reconstruct(pruned, dense, masks, feeds))
    for name in masks:
        np.testing.assert_array_equal(weight_array(refits[0], name), weight_array(refits[1], name), err_msg=name)


def test_a_layer_two_ifs_deep_gets_the_rows_of_the_batches_that_reached_it():
    dense = bb.nested_if(seed=0)
    pruned, masks = prune(dense, 0.7)
    feeds = correlated(12, 16, 0)
    outer = [bool(f["input"][:, 0].mean() > 0) for f in feeds]
    inner = [o and bool(f["input"].mean() > 0) for o, f in zip(outer, feeds)]
    assert 0 < sum(inner) < sum(outer) < len(feeds), "the feeds must take every path"
    report = ReconstructReport()
    reconstruct(pruned, dense, masks, feeds, report=report)
    assert report.refit["fc1.weight"]["samples"] == 16 * sum(outer)
    assert report.refit["then.fc2.weight"]["samples"] == 16 * sum(inner)
    assert report.refit["else.fc2.weight"]["samples"] == 16 * (sum(outer) - sum(inner))
    assert report.refit["outer_else.weight"]["samples"] == 16 * (len(feeds) - sum(outer))


def test_a_weight_the_loop_body_changes_every_iteration_is_left_with_the_reason():
    dense = bb.while_rnn_decaying(seed=0)
    check_full(dense)
    w_masks = prune(dense, 0.6)[1]
    assert set(w_masks) == {"rnn.W", "fc.weight"}  # R is no weight: the body scales it every iteration
    masks = {**w_masks, "rnn.R": np.abs(weight_array(dense, "rnn.R")) > 0.3}
    pruned = zero_weights(dense, masks)
    report = ReconstructReport()
    refit = reconstruct(pruned, dense, masks, sequences(4, 16, 0), report=report)
    assert set(report.refit) == {"rnn.W", "fc.weight"}
    assert "changes it every iteration" in report.skipped["rnn.R"]
    np.testing.assert_array_equal(weight_array(refit, "rnn.R"), weight_array(pruned, "rnn.R"))


def test_independent_chains_share_their_passes_and_refit_as_one_layer_at_a_time(monkeypatch):
    """Two chains a1 -> a2 and b1 -> b2 on the same input, a's nodes all before b's in the graph: 2 waves (not 3),
    and the same weights as refitting each layer alone in graph order."""
    rng = np.random.default_rng(0)
    f32 = TensorProto.FLOAT
    nodes, inits = [], []
    for chain in ("a", "b"):
        nodes += [helper.make_node("MatMul", ["input", f"{chain}1.weight"], [f"{chain}/h0"], name=f"/{chain}1"),
                  helper.make_node("Relu", [f"{chain}/h0"], [f"{chain}/h"], name=f"/{chain}/relu"),
                  helper.make_node("MatMul", [f"{chain}/h", f"{chain}2.weight"], [f"{chain}/out"], name=f"/{chain}2")]
        inits += [onnx.numpy_helper.from_array(rng.standard_normal((16, 12)).astype(np.float32), f"{chain}1.weight"),
                  onnx.numpy_helper.from_array(rng.standard_normal((12, 8)).astype(np.float32), f"{chain}2.weight")]
    nodes.append(helper.make_node("Add", ["a/out", "b/out"], ["output"], name="/sum"))
    graph = helper.make_graph(nodes, "chains", [helper.make_tensor_value_info("input", f32, ["N", 16])],
                              [helper.make_tensor_value_info("output", f32, ["N", 8])], initializer=inits)
    dense = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    pruned, masks = prune(dense, 0.6)
    feeds = correlated(3, 32, 0)
    report = ReconstructReport()
    together = reconstruct(pruned, dense, masks, feeds, report=report)
    assert report.passes == 2
    monkeypatch.setattr(reconstruct_module, "waves", lambda model, layers: [[lay] for lay in layers])
    alone_report = ReconstructReport()
    alone = reconstruct(pruned, dense, masks, feeds, report=alone_report)
    assert alone_report.passes == 4
    for name in masks:
        np.testing.assert_allclose(weight_array(together, name), weight_array(alone, name), rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def _scripted(**kw):
    """third_party_builders.scripted_lstm as the load step reads it: its W, R and B folded into initializers."""
    import copy

    from onnxprune.models.third_party_builders import scripted_lstm
    from onnxprune.passes.base import PruneState
    from onnxprune.passes.loading import run_load_passes

    model = copy.deepcopy(scripted_lstm(**kw))
    run_load_passes(model, PruneState())
    return model


def _time_major(n_batches: int, batch: int, seed: int, sign=None) -> list[dict]:
    """[T=5, N, F=4] correlated sequences; `sign` +1/-1 puts every batch's mean on that side (one If branch)."""
    mix = np.random.default_rng(99).standard_normal((2, 4))
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_batches):
        x = (rng.standard_normal((5, batch, 2)) @ mix + 0.1 * rng.standard_normal((5, batch, 4))).astype(np.float32)
        s = sign if sign is not None else (1 if k % 2 else -1)
        out.append({"x": (x - x.mean() + s * 0.5).astype(np.float32)})
    return out


def test_an_lstm_two_branches_run_alike_is_refit_on_the_rows_of_both():
    """silero-vad's decoder LSTM, once folded (passes/constant_weights.py), is one W, R and B read by an LSTM in each
    branch of an If. The refit said "read by LSTMs in several bodies; left as pruned" before; now each branch that
    ran gives its rows."""
    dense = _scripted(in_if=True, hidden=6)
    masks = {n: m for n, m in prune(dense, 0.5)[1].items() if n.startswith("rnn.")}
    assert set(masks) == {"rnn.weight_ih.folded", "rnn.weight_hh.folded"}
    pruned = zero_weights(dense, masks)
    feeds = _time_major(8, 16, 0)
    report = ReconstructReport()
    refit = reconstruct(pruned, dense, masks, feeds, report=report)
    check_full(refit)
    assert set(report.refit) == set(masks) and not report.skipped, report.skipped
    for name, r in report.refit.items():
        assert r["error_after"] < r["error_before"], name
    assert_same_outputs(refit, zero_weights(refit, masks), rtol=1e-6)
    held_out = _time_major(4, 16, 100)
    assert output_error(refit, dense, held_out) < 0.8 * output_error(pruned, dense, held_out)
    # data that takes one branch only: the rows are that branch's, and the refit still runs
    one = ReconstructReport()
    reconstruct(pruned, dense, masks, _time_major(4, 16, 0, sign=1), report=one)
    assert set(one.refit) == set(masks) and not one.skipped
