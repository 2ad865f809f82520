"""Layer-wise reconstruction of LSTM / GRU / RNN weights (converter/reconstruct_recurrent.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.converter.reconstruct import ReconstructReport, _with_outputs, reconstruct
from onnxprune.converter.reconstruct_recurrent import RecurrentFit, RecurrentLayer, state_name
from onnxprune.models import builders_control as bc
from onnxprune.passes.scopes import local_constants
from onnxprune.passes.weights import weight_array
from tests.converter.test_reconstruct import output_error, prune
from tests.oracle import check_full, run, zero_weights

CASES = {
    "lstm": lambda: bc.lstm_classifier(seed=0),
    "lstm_bidirectional_initial_state": lambda: bc.lstm_classifier(bidirectional=True, initial_state=True, seed=1),
    "lstm_reverse": lambda: bc.lstm_classifier(reverse=True, seed=2),
    "gru": lambda: bc.gru_classifier(seed=0),
    "gru_linear_before_reset": lambda: bc.gru_classifier(linear_before_reset=1, seed=3),
    "gru_bidirectional_initial_state": lambda: bc.gru_classifier(bidirectional=True, initial_state=True, seed=1),
    "gru_reverse_linear_before_reset": lambda: bc.gru_classifier(reverse=True, linear_before_reset=1,
                                                                 initial_state=True, seed=4),
    "rnn": lambda: bc.rnn_classifier(seed=0),
    "rnn_bidirectional_initial_state": lambda: bc.rnn_classifier(bidirectional=True, initial_state=True, seed=1),
    # real models 47's L5: madmom's downbeat BLSTMs have peepholes, held fixed (they read the dense cell states on
    # both sides of the fit, as R reads the dense hidden states)
    "lstm_input_forget": lambda: _input_forget(bc.lstm_classifier(seed=0)),
    "lstm_peepholes": lambda: _peepholed(bc.lstm_classifier(seed=0)),
    "lstm_bidirectional_peepholes": lambda: _peepholed(bc.lstm_classifier(bidirectional=True, initial_state=True,
                                                                           seed=1)),
}


def _input_forget(model: onnx.ModelProto) -> onnx.ModelProto:
    """The LSTM with input_forget=1 (f = 1 - i: its forget block's weights are read by nothing, and fitting them is
    harmless)."""
    next(n for n in model.graph.node if n.op_type == "LSTM").attribute.append(
        onnx.helper.make_attribute("input_forget", 1))
    return model


def _peepholed(model: onnx.ModelProto) -> onnx.ModelProto:
    """The LSTM with peepholes P [dirs, 3 x hidden] of both signs (i, o, f read the cell state)."""
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    dirs = 2 if any(a.name == "direction" and a.s == b"bidirectional" for a in node.attribute) else 1
    hidden = next(a.i for a in node.attribute if a.name == "hidden_size")
    p = 0.5 * np.random.default_rng(7).standard_normal((dirs, 3 * hidden)).astype(np.float32)
    model.graph.initializer.append(onnx.numpy_helper.from_array(p, "peep"))
    node.input.extend([""] * (7 - len(node.input)) + ["peep"])
    onnx.checker.check_model(model, full_check=True)
    return model


def sequences(n_batches: int, batch: int, seed: int, steps: int = 5, features: int = 8) -> list[dict]:
    """[N, T, F] inputs on a 3-dimensional subspace plus a little noise: correlated features, as real data has
    (on independent features the kept weights have nothing to make up for the pruned ones with)."""
    mix = np.random.default_rng(99).standard_normal((3, features))
    rng = np.random.default_rng(seed)
    return [{"input": (rng.standard_normal((batch, steps, 3)) @ mix
                       + 0.1 * rng.standard_normal((batch, steps, features))).astype(np.float32)}
            for _ in range(n_batches)]


def recurrent_masks(model, sparsity: float):
    """Magnitude masks of the recurrent W and R only (the Gemm head left dense)."""
    _, masks = prune(model, sparsity)
    masks = {n: m for n, m in masks.items() if not n.startswith("fc.")}
    return zero_weights(model, masks), masks


def unnamed_states(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with the recurrent node's Y output left unnamed (only Y_h used, as exporters often do)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if node.op_type in ("LSTM", "GRU", "RNN"):
            node.output[0] = ""
    return out


@pytest.mark.parametrize("case", list(CASES) + ["gru_unnamed_states"])
def test_pruned_recurrent_weights_are_refit_and_the_output_error_drops(case):
    dense = unnamed_states(CASES["gru"]()) if case == "gru_unnamed_states" else CASES[case]()
    pruned, masks = recurrent_masks(dense, 0.6)
    report = ReconstructReport()
    refit = reconstruct(pruned, dense, masks, sequences(8, 32, seed=0), report=report, prior=True)
    check_full(refit)
    assert [(n.op_type, list(n.input), list(n.output)) for n in refit.graph.node] == \
        [(n.op_type, list(n.input), list(n.output)) for n in dense.graph.node]
    assert set(report.refit) == set(masks) and not report.skipped, report.skipped
    for name, mask in masks.items():
        after = weight_array(refit, name)
        assert after.shape == mask.shape and after.dtype == np.float32
        assert not after[~mask].any(), f"{name}: a pruned weight came back"
        assert not np.array_equal(after, weight_array(pruned, name)), f"{name}: not refit"
        assert report.refit[name]["error_after"] < report.refit[name]["error_before"], name
    held_out = sequences(4, 32, seed=100)
    before, after = output_error(pruned, dense, held_out), output_error(refit, dense, held_out)
    assert after < 0.9 * before, f"output MSE vs dense: pruned {before:.4g}, refit {after:.4g}"


@pytest.mark.parametrize("case", ["gru", "gru_linear_before_reset", "gru_bidirectional_initial_state",
                                  "gru_reverse_linear_before_reset", "rnn", "rnn_bidirectional_initial_state"])
def test_state_rows_and_gate_blocks_reproduce_every_step_of_the_node(case):
    """From the rows the refit builds (X_t, H_{t-1} per direction, shifted the right way, initial_h first) and the
    gate blocks it cuts, one ONNX step in numpy gives back the node's own Y at every step."""
    model = CASES[case]()
    node = next(n for n in model.graph.node if n.op_type in ("GRU", "RNN"))
    masks = {node.input[1]: np.ones(weight_array(model, node.input[1]).shape, bool)}
    fit = RecurrentFit(RecurrentLayer(node, node.input[1], None), local_constants(model.graph), masks,
                       local_constants(model.graph))
    names = [n for n, _ in fit.targets]
    feed = sequences(1, 6, seed=7)[0]
    values = dict(zip(names, run(_with_outputs(model, names, {}, only=True), feed).values()))
    y = values[state_name(node)]
    sigmoid = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    for d in range(y.shape[1]):
        x, h = fit._rows(values, d)

        def pre(part, gate):
            rows = x if part == "W" else h
            return rows @ fit._block(fit.dense, part, d, (gate,)).T + fit._bias(fit.dense_b, part, d, (gate,))

        if node.op_type == "RNN":
            step = np.tanh(pre("W", 0) + pre("R", 0))
        else:
            z, r = sigmoid(pre("W", 0) + pre("R", 0)), sigmoid(pre("W", 1) + pre("R", 1))
            if any(a.name == "linear_before_reset" and a.i for a in node.attribute):
                cand = np.tanh(pre("W", 2) + r * pre("R", 2))
            else:
                p = next(q for q in fit.problems if q.direction == d and q.gates == (2,))
                rh = fit._columns(p, x, h, fit.dense, fit.dense_b)["R"]
                cand = np.tanh(pre("W", 2) + rh @ fit._block(fit.dense, "R", d, (2,)).T
                               + fit._bias(fit.dense_b, "R", d, (2,)))
            step = (1 - z) * cand + z * h
        np.testing.assert_allclose(step, y[:, d].reshape(step.shape), atol=1e-5, err_msg=f"{case}, direction {d}")


def test_a_gate_block_is_the_ridge_solution_on_the_kept_inputs_and_states():
    """The z/r problem of a GRU solved independently (numpy lstsq on the kept columns of [X_t, H_{t-1}, 1], with the
    same λ) gives the weights and bias the refit wrote."""
    dense = bc.gru_classifier(linear_before_reset=1, seed=5)
    pruned, masks = recurrent_masks(dense, 0.5)
    feeds = sequences(4, 32, seed=0)
    damp = 1e-2
    refit = reconstruct(pruned, dense, masks, feeds, damp=damp, prior=False)
    node = next(n for n in dense.graph.node if n.op_type == "GRU")
    fit = RecurrentFit(RecurrentLayer(node, "gru.W", "gru.R", "gru.B"), local_constants(dense.graph), masks,
                       local_constants(dense.graph))
    session = _with_outputs(dense, [n for n, _ in fit.targets], {}, only=True)
    xs, hs = [], []
    for feed in feeds:
        x, h = fit._rows(dict(zip([n for n, _ in fit.targets], run(session, feed).values())), 0)
        xs.append(x)
        hs.append(h)
    rows = np.concatenate([np.concatenate(xs), np.concatenate(hs)], axis=1)
    hidden = 16
    w, r, b = (weight_array(dense, n).astype(np.float64) for n in ("gru.W", "gru.R", "gru.B"))
    lam = damp * float(np.mean(np.sum(rows ** 2, axis=0))) + 1e-12
    for j in (0, 5, hidden + 3):  # two z units, one r unit
        kept = np.concatenate([masks["gru.W"][0, j], masks["gru.R"][0, j]])
        target = rows @ np.concatenate([w[0, j], r[0, j]]) + b[0, j] + b[0, 3 * hidden + j]
        a = np.concatenate([rows[:, kept], np.ones((len(rows), 1))], axis=1)
        shrink = np.sqrt(lam) * np.eye(a.shape[1])[:-1]  # the intercept is not shrunk
        sol = np.linalg.lstsq(np.concatenate([a, shrink]), np.concatenate([target, np.zeros(len(shrink))]),
                              rcond=None)[0]
        got = np.concatenate([weight_array(refit, "gru.W")[0, j], weight_array(refit, "gru.R")[0, j]])
        np.testing.assert_allclose(got[kept], sol[:-1], rtol=1e-3, atol=1e-4, err_msg=f"unit {j}")
        got_b = weight_array(refit, "gru.B")[0, j] + weight_array(refit, "gru.B")[0, 3 * hidden + j]
        np.testing.assert_allclose(got_b, sol[-1], rtol=1e-3, atol=1e-4)
        assert not got[~kept].any()
    # the intercept of W and R together went to Wb: Rb of z and r is as it was
    np.testing.assert_array_equal(weight_array(refit, "gru.B")[0, 3 * hidden:5 * hidden],
                                  weight_array(dense, "gru.B")[0, 3 * hidden:5 * hidden])


def test_nothing_masked_leaves_the_node_as_it_is():
    dense = bc.lstm_classifier(bidirectional=True, initial_state=True, seed=0)
    masks = {n: np.ones(weight_array(dense, n).shape, bool) for n in ("lstm.W", "lstm.R")}
    report = ReconstructReport()
    refit = reconstruct(dense, dense, masks, sequences(2, 16, seed=0), report=report)
    for name in ("lstm.W", "lstm.R", "lstm.B"):
        np.testing.assert_allclose(weight_array(refit, name), weight_array(dense, name), atol=1e-5, err_msg=name)
    assert report.refit["lstm.W"]["error_before"] < 1e-9


def test_an_unmasked_recurrent_matrix_is_held_fixed_and_the_other_refit():
    dense = bc.gru_classifier(seed=0)
    pruned, masks = recurrent_masks(dense, 0.6)
    masks = {"gru.W": masks["gru.W"]}
    pruned = zero_weights(dense, masks)
    report = ReconstructReport()
    refit = reconstruct(pruned, dense, masks, sequences(8, 32, seed=0), report=report, prior=True)
    check_full(refit)
    np.testing.assert_array_equal(weight_array(refit, "gru.R"), weight_array(dense, "gru.R"))
    assert set(report.refit) == {"gru.W"} and not weight_array(refit, "gru.W")[~masks["gru.W"]].any()
    held_out = sequences(4, 32, seed=100)
    assert output_error(refit, dense, held_out) < output_error(pruned, dense, held_out)


REFUSED = {  # (build, edit of the node, what the reason names)
    "batch_first": (lambda: bc.lstm_classifier(seed=0),
                    lambda m, n: n.attribute.append(onnx.helper.make_attribute("layout", 1)), "layout=1"),
}


LENS = np.random.default_rng(5).integers(1, 6, 32).astype(np.int32)  # 32 sequences of 1-5 of the 5 steps


def _packed(model: onnx.ModelProto, as_input: bool) -> onnx.ModelProto:
    """The recurrent node given sequence_lens: each sequence's steps past its length are padding (a packed
    sequence); as a graph input 'lens' [N] (torch's exported lengths) or a Constant of LENS."""
    node = next(n for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN"))
    if as_input:
        model.graph.input.append(onnx.helper.make_tensor_value_info("lens", onnx.TensorProto.INT32, ["N"]))
    else:
        model.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["lens"], name="/lens",
                                                         value=onnx.numpy_helper.from_array(LENS)))
    node.input.extend([""] * (4 - len(node.input)) + ["lens"] if len(node.input) < 5 else [])
    if len(node.input) > 4:
        node.input[4] = "lens"
    onnx.checker.check_model(model, full_check=True)
    return model


PACKED = {
    "gru_lens_input": (lambda: _packed(bc.gru_classifier(seed=0), True), True),
    "lstm_bidirectional_initial_state_lens": (lambda: _packed(bc.lstm_classifier(bidirectional=True,
                                                                                 initial_state=True, seed=1),
                                                              False), False),
    "gru_reverse_linear_before_reset_lens": (lambda: _packed(bc.gru_classifier(
        reverse=True, linear_before_reset=1, initial_state=True, seed=4), False), False),
}


def _with_lens_feed(batches: list[dict], fed: bool) -> list[dict]:
    return [{**b, "lens": LENS[:len(b["input"])]} for b in batches] if fed else batches


@pytest.mark.parametrize("case", list(PACKED))
def test_packed_sequences_are_refit_on_their_steps_alone(case):
    """A recurrent node given sequence_lens (torch's pack_padded_sequence) was left as pruned. Its padded steps
    are no rows now (the node neither reads nor writes a state there), and a reverse direction's first step, each
    sequence's last, reads initial_h: the refit lowers the output error on data it never saw, in onnxruntime."""
    build, fed = PACKED[case]
    dense = build()
    pruned, masks = recurrent_masks(dense, 0.6)
    report = ReconstructReport()
    refit = reconstruct(pruned, dense, masks, _with_lens_feed(sequences(8, 32, seed=0), fed), report=report,
                        prior=True)
    check_full(refit)
    assert set(report.refit) == set(masks) and not report.skipped, report.skipped
    for name, mask in masks.items():
        assert not weight_array(refit, name)[~mask].any(), f"{name}: a pruned weight came back"
    held_out = _with_lens_feed(sequences(4, 32, seed=100), fed)
    before, after = output_error(pruned, dense, held_out), output_error(refit, dense, held_out)
    assert after < 0.9 * before, f"output MSE vs dense: pruned {before:.4g}, refit {after:.4g}"


def test_a_packed_reverse_direction_starts_each_sequence_at_its_last_step_from_initial_h():
    """The rows the fit reads: padded steps dropped; in the reverse direction the state before step t is Y at t+1,
    except at each sequence's last step, where it is initial_h (Y past the length is onnxruntime's zeros, which
    equal a zero initial_h only by chance)."""
    dense = PACKED["lstm_bidirectional_initial_state_lens"][0]()
    node = next(n for n in dense.graph.node if n.op_type == "LSTM")
    layer = RecurrentLayer(node, node.input[1], node.input[2])
    inits = local_constants(dense.graph)
    fit = RecurrentFit(layer, inits, {node.input[1]: np.ones(weight_array(dense, node.input[1]).shape, bool)},
                       inits)
    feed = sequences(1, 32, seed=3)[0]
    names = [node.input[0], state_name(node), node.input[5], "lens"]
    values = dict(zip(names, run(_with_outputs(dense, names, {}, only=True), feed).values()))
    x, y, h0 = values[node.input[0]], values[state_name(node)], values[node.input[5]]
    assert (y.transpose(0, 2, 1, 3)[np.arange(5)[:, None] >= LENS[None, :]] == 0).all()  # onnxruntime's padding
    _, prev = fit._rows(values, 1, node)
    prev = prev.reshape(5, 32, -1)
    for n, length in enumerate(LENS):
        np.testing.assert_allclose(prev[length - 1, n], h0[1, n])
        for t in range(length - 1):
            np.testing.assert_allclose(prev[t, n], y[t + 1, 1, n])
    valid = fit._valid(values, node, 5)
    assert valid.sum() == LENS.sum() and valid.reshape(5, 32)[0].all()


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_the_refit_does_not_reach_is_left_as_pruned_with_the_reason(case):
    build, edit, named = REFUSED[case]
    dense = build()
    node = next(n for n in dense.graph.node if n.op_type in ("GRU", "LSTM"))
    edit(dense, node)
    pruned, masks = recurrent_masks(dense, 0.6)
    report = ReconstructReport()
    out = reconstruct(pruned, dense, masks, sequences(2, 16, seed=0), report=report)
    assert set(report.skipped) == set(masks) and len(masks) == 2 and not report.refit
    assert all(named in why and "left as pruned" in why for why in report.skipped.values()), report.skipped
    for name in masks:
        np.testing.assert_array_equal(weight_array(out, name), weight_array(pruned, name))


def test_a_reset_gate_activation_it_does_not_compute_leaves_only_the_candidate_recurrent_block():
    """GRU (linear_before_reset=0) with a HardSigmoid reset gate: r_t is not computed, so R_h stays as pruned
    (said in the report); W and the z/r blocks of R are refit."""
    dense = bc.gru_classifier(seed=0)
    node = next(n for n in dense.graph.node if n.op_type == "GRU")
    node.attribute.append(onnx.helper.make_attribute("activations", ["HardSigmoid", "Tanh"]))
    pruned, masks = recurrent_masks(dense, 0.6)
    report = ReconstructReport()
    refit = reconstruct(pruned, dense, masks, sequences(8, 32, seed=0), report=report, prior=True)
    check_full(refit)
    assert set(report.refit) == {"gru.W", "gru.R"} and "R_h left as pruned" in report.skipped["gru.R"]
    hidden = 16
    r_after, r_pruned = weight_array(refit, "gru.R"), weight_array(pruned, "gru.R")
    np.testing.assert_array_equal(r_after[:, 2 * hidden:], r_pruned[:, 2 * hidden:])
    assert not np.array_equal(r_after[:, :2 * hidden], r_pruned[:, :2 * hidden])
    w_after, w_pruned = weight_array(refit, "gru.W"), weight_array(pruned, "gru.W")
    assert not np.array_equal(w_after[:, 2 * hidden:], w_pruned[:, 2 * hidden:])
    held_out = sequences(4, 32, seed=100)
    assert output_error(refit, dense, held_out) < output_error(pruned, dense, held_out)
