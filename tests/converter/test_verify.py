"""Verification against the dense model with the same weights: correct shrinks pass where float32 cannot resolve 1e-5
of an output's scale (a saturated Sigmoid map), wrong ones are still refused with the output or tensor named."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.calibration.runtime import make_session, random_feeds
from onnxprune.converter import verify
from onnxprune.converter.verify import DEFAULT_RTOL, NOISE_CEILING, check_parity, nudged
from onnxprune.errors import ParityError
from onnxprune.models.builders import as_constant_nodes, conv_sigmoid_head
from onnxprune.passes.dead_neurons import remove_dead_neurons

HEAD = dict(channels=32, blocks=3, dead=0.25, logit_bias=-7.0)  # the map's max ~1e-3, its floor ~1e-4 of that


def shrink(seed: int):
    oracle = conv_sigmoid_head(seed=seed, **HEAD)
    shrunk, report = remove_dead_neurons(oracle)
    return oracle, shrunk, report


def weights(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def with_weight(model, name: str, array: np.ndarray):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    next(t for t in out.graph.initializer if t.name == name).CopyFrom(numpy_helper.from_array(array, name))
    return out


def fixed_rule_gap(candidate, oracle) -> float:
    """max |candidate - oracle| / max |oracle| over the verifier's three seeded random feeds (the first rule)."""
    feeds = [random_feeds(oracle, seed=s) for s in (0, 1, 2)]
    got, want = (make_session(m, optimize=False) for m in (candidate, oracle))
    return max(float(np.abs(got.run(None, f)[0] - want.run(None, f)[0]).max() / np.abs(want.run(None, f)[0]).max())
               for f in feeds)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correct_shrink_of_a_conv_stack_ending_in_a_saturated_sigmoid_passes(seed):
    oracle, shrunk, report = shrink(seed)
    onnx.checker.check_model(shrunk, full_check=True)
    assert report.removed == 48 and report.folded == 24  # 8 folded + 8 unread channels in each of 3 blocks
    assert weights(shrunk)["block1.conv1.weight"].shape == (24, 24, 1, 1)
    sig = [n for n in shrunk.graph.node if n.op_type == "Sigmoid"]
    assert len(sig) == 1 and sig[0].output == ["output"]
    assert fixed_rule_gap(shrunk, oracle) > 5 * DEFAULT_RTOL  # what the first rule alone refused
    parity = check_parity(shrunk, oracle)
    assert parity.worst_output == "output" and parity.max_rel > DEFAULT_RTOL
    assert 0 < parity.noise_floor < NOISE_CEILING * parity.max_abs / parity.max_rel
    assert parity.max_abs <= verify.NOISE_MULTIPLE * parity.noise_floor


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_dropped_bias_fold_is_refused(seed):
    oracle, shrunk, report = shrink(seed)
    name = "block1.conv1.bias"  # the conv1x1 that folds block1's constant conv3x3 channels
    keep = next(k for init, axis, k in report.slices if init == name)
    unfolded = with_weight(shrunk, name, np.compress(keep, weights(oracle)[name]) if keep.dtype == bool
                           else weights(oracle)[name][keep])
    assert not np.allclose(weights(unfolded)[name], weights(shrunk)[name])
    with pytest.raises(ParityError, match="output 'output' differs from the dense model") as err:
        check_parity(unfolded, oracle)
    assert "\n" not in str(err.value) and "this is a bug" in str(err.value)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_wrong_weight_is_refused(seed):
    oracle, shrunk, _ = shrink(seed)
    w = weights(shrunk)["block0.conv1.weight"].copy()
    w.reshape(-1)[np.flatnonzero(w)[w.size // 4]] = 0.0  # one of 576 kept weights lost
    with pytest.raises(ParityError, match="'output'"):
        check_parity(with_weight(shrunk, "block0.conv1.weight", w), oracle)


def test_the_logits_feeding_a_saturated_output_are_checked_too():
    """A head bias off by 1e-3 moves a map in the Sigmoid's tail (~1e-4) by about its own rounding noise, but the
    logits by far more."""
    oracle = conv_sigmoid_head(seed=0, **{**HEAD, "logit_bias": -9.0})
    shrunk, _ = remove_dead_neurons(oracle)
    bias = weights(shrunk)["head.bias"] + np.float32(1e-3)
    with pytest.raises(ParityError, match="tensor '/head/Conv_output_0' \\(feeding output 'output'\\) differs"):
        check_parity(with_weight(shrunk, "head.bias", bias), oracle)


def test_an_output_that_is_all_float32_noise_is_refused_with_what_to_do():
    oracle = conv_sigmoid_head(seed=0, **{**HEAD, "logit_bias": -14.0})  # the map ~1e-6: the kernel's noise level
    shrunk, _ = remove_dead_neurons(oracle)
    with pytest.raises(ParityError, match="own rounding noise .* above 0.01 of the output scale.*--data with real"):
        check_parity(shrunk, oracle)
    # on the user's own samples, asking for "real samples" is wrong advice: other samples, or a report
    feeds = [random_feeds(oracle, seed=s) for s in (0, 1, 2)]
    with pytest.raises(ParityError, match=r"above 0.01 of the output scale.*verify on other samples \(--data\), or "
                                          r"report it with --debug") as info:
        check_parity(shrunk, oracle, feeds, source="data")
    assert "real samples" not in str(info.value)


def test_without_a_measurable_floor_the_first_rule_stands(monkeypatch):
    oracle, shrunk, _ = shrink(0)
    monkeypatch.setattr(verify, "nudged", lambda model: onnx.ModelProto())  # onnxruntime cannot load it
    with pytest.raises(ParityError, match=r"of the output scale, limit 1e-05\); this is a bug"):
        check_parity(shrunk, oracle)


def test_outputs_within_the_first_rule_need_no_floor(monkeypatch):
    oracle, shrunk, _ = shrink(0)
    monkeypatch.setattr(verify, "noise_floor", lambda *a: pytest.fail("the floor was measured"))
    parity = check_parity(oracle, oracle)
    assert parity.max_abs == 0 and parity.noise_floor is None


@pytest.mark.parametrize("constant_nodes", [False, True])
def test_nudged_moves_every_nonzero_weight_one_float32_step_and_nothing_else(constant_nodes):
    model = conv_sigmoid_head(seed=0, **HEAD)
    model = as_constant_nodes(model) if constant_nodes else model
    before = _float_tensors(model)
    after = _float_tensors(nudged(model))
    assert before.keys() == after.keys()
    moved = 0
    for name, a in before.items():
        b = after[name]
        assert b.dtype == a.dtype and b.shape == a.shape
        assert np.array_equal(b[a == 0], a[a == 0])  # pruned weights stay zero
        nz = a != 0
        step = np.abs(np.nextafter(a[nz], np.float32(np.inf)) - a[nz])
        assert np.allclose(np.abs(b[nz] - a[nz]), step, rtol=0.51, atol=0)  # one step (below: half at powers of 2)
        moved += int(nz.sum())
    assert moved > 0.5 * sum(a.size for a in before.values())


def test_nudged_leaves_shape_deciding_and_custom_inputs_alone():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    gain = numpy_helper.from_array(np.array([1.5, 0.5], np.float32).reshape(1, 2, 1, 1), "gain")
    custom = numpy_helper.from_array(np.array([0.3, 0.7], np.float32), "custom_w")
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="nearest"),
             helper.make_node("Mul", ["r", "gain"], ["m"]),
             helper.make_node("Scale", ["m", "custom_w"], ["y"], domain="ai.example")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [scales, gain, custom]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.example", 1)])
    out = {t.name: numpy_helper.to_array(t) for t in nudged(model).graph.initializer}
    assert np.array_equal(out["scales"], [1, 1, 2, 2]) and np.array_equal(out["custom_w"], numpy_helper.to_array(custom))
    assert not np.array_equal(out["gain"], numpy_helper.to_array(gain))


def _float_tensors(model) -> dict[str, np.ndarray]:
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                if n.op_type == "Constant"})
    return {k: v for k, v in out.items() if v.dtype == np.float32}


def test_the_summary_says_when_an_output_passed_by_the_float32_noise_allowance(tmp_path):
    """A user reading "max abs diff 8.9e-08" deserves to know it passed by the allowance, not by 1e-5 of the scale."""
    from click.testing import CliRunner

    from onnxprune.converter.cli import cli

    path = tmp_path / "head.onnx"
    onnx.save(conv_sigmoid_head(seed=0, **HEAD), path)
    res = CliRunner().invoke(cli, ["prune", str(path), "-o", str(tmp_path / "out.onnx"), "--sparsity", "0.01"])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("verified in onnxruntime"))
    assert f"within {verify.NOISE_MULTIPLE:g}x the dense model's own rounding noise" in line and "on 'output'" in line


def test_noise_floor_of_a_decomposed_layernorm_leaves_the_pow_exponent_alone():
    # PP-OCRv5 rec (paddle2onnx) writes LayerNorm with Pow(x - mean, 2.0): nudging the exponent one float32 step
    # made every output NaN, the floor inf, and a correct pruned model was refused ("noise (inf) … too much")
    from onnxprune.models.third_party_builders import decomposed_layernorm_mlp

    model = decomposed_layernorm_mlp(seed=5)
    onnx.checker.check_model(model, full_check=True)
    moved = nudged(model)
    exponent = next(t for t in moved.graph.initializer if t.name == "ln.exponent")
    assert numpy_helper.to_array(exponent) == np.float32(2.0)
    assert not np.array_equal(weights(moved)["fc1.weight"], weights(model)["fc1.weight"])
    feeds = [random_feeds(model, seed=s, batch=16) for s in (0, 1, 2)]
    dense, nudge = make_session(model, optimize=False), make_session(moved, optimize=False)
    wants = [dense.run(["output"], f) for f in feeds]
    for f, (want,) in zip(feeds, wants):
        (got,) = nudge.run(["output"], f)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg="output")
    floor = verify.noise_floor(model, ["output"], feeds, wants)["output"]
    assert 0 < floor < 1e-4


def test_nudged_keeps_a_float32_max_constant_finite():
    model = _min_with_float32_max()
    out = {t.name: numpy_helper.to_array(t) for t in nudged(model).graph.initializer}
    assert np.isfinite(out["big"]).all()


def _min_with_float32_max():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    big = numpy_helper.from_array(np.full(2, np.finfo(np.float32).max, np.float32), "big")
    model = helper.make_model(helper.make_graph([helper.make_node("Min", ["x", "big"], ["y"])], "g", [x], [y], [big]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_outputs_held_a_group_at_a_time_give_the_same_verdict_and_figures(monkeypatch):
    """The oracle's outputs are held for OUTPUT_BYTES at a time (a language model's logits were held for every batch:
    3.5 GB of an 8.6 GB run) and compared in COMPARE_CHUNK pieces: the same figures, and a wrong weight still found
    whichever feed shows it."""
    oracle, shrunk, _ = shrink(0)
    feeds = [random_feeds(oracle, seed=s) for s in range(5)]
    whole = check_parity(shrunk, oracle, feeds)
    monkeypatch.setattr(verify, "OUTPUT_BYTES", 1)  # one feed's outputs at a time
    monkeypatch.setattr(verify, "COMPARE_CHUNK", 7)
    one = check_parity(shrunk, oracle, feeds)
    assert (one.max_abs, one.max_rel, one.worst_output, one.batches) == (whole.max_abs, whole.max_rel,
                                                                       whole.worst_output, 5)
    w = weights(shrunk)["block0.conv1.weight"].copy()
    w.reshape(-1)[np.flatnonzero(w)[w.size // 4]] = 0.0
    with pytest.raises(ParityError, match="'output'"):
        check_parity(with_weight(shrunk, "block0.conv1.weight", w), oracle, feeds)


def test_integer_outputs_are_compared_by_their_gap_and_strings_by_value():
    """Numbers, integers included, by their largest difference against their scale (as before the chunked compare,
    which for a while sent two integer outputs to the exact test); strings and bools by value."""
    assert verify._compare("y", np.array([1, 2, 3]), np.array([1, 2, 4])) == (1.0, 4.0, 0)
    assert verify._compare("y", np.array([1, 2, 4]), np.array([1, 2, 4])) == (0.0, 4.0, 0)
    assert verify._compare("s", np.array(["a", "b"]), np.array(["a", "b"])) == (0.0, 1.0, 0)
    with pytest.raises(ParityError, match="differs from the dense model"):
        verify._compare("s", np.array(["a", "b"]), np.array(["a", "c"]))



def _sqrt_of_differences(k: int = 16) -> onnx.ModelProto:
    """x [N, 16] (0/1) -> 'y' [N, 8] = Sqrt(c_j (x_2j - x_2j+1)): NaN where the difference is negative, and at an exact
    float32 edge where it is 0 (c_j - c_j), which one float32 step of either weight moves to NaN or to a tiny value."""
    c = np.random.default_rng(0).uniform(0.5, 2.0, k // 2)
    w = np.zeros((k, k // 2), np.float32)
    for j in range(k // 2):
        w[2 * j, j], w[2 * j + 1, j] = c[j], -c[j]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Sqrt", ["z"], ["y"])]
    graph = helper.make_graph(nodes, "edge", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", k // 2])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_nan_inf_places_that_move_at_a_float32_edge_are_refused_with_what_to_do_not_as_a_bug():
    """Sweep 49: a MADE's log-likelihood is -inf/NaN where its sigmoid saturates; written with compact storage (its
    weights decoded at load, another kernel), 14 of those places moved on 440 images, and verification stopped the
    run: "NaN/inf in other places than in the dense model ...; this is a bug". The dense model's own one-step weight
    nudge moves such places too: still refused (a count cannot tell rounding from a flipped sign), but said as an
    edge, with what to do. Where the nudge moves none (a weight set to inf), it stays "a bug"."""
    x = (np.random.default_rng(1).random((256, 16)) < 0.5).astype(np.float32)
    feeds = [{"x": x[i:i + 64]} for i in range(0, 256, 64)]
    edge = _sqrt_of_differences()
    want = np.concatenate([make_session(edge).run(None, f)[0] for f in feeds])
    got = np.concatenate([make_session(nudged(edge, 1)).run(None, f)[0] for f in feeds])
    assert np.count_nonzero(np.isfinite(want) != np.isfinite(got)) > 0  # rounding moves NaN places here
    with pytest.raises(ParityError) as err:
        check_parity(nudged(edge, 1), edge, feeds)
    said = str(err.value)
    assert "output 'y' is NaN/inf in other places" in said and "own rounding noise moves" in said
    assert "compute those outputs stably" in said and "this is a bug" not in said
    broken = onnx.ModelProto()
    broken.CopyFrom(edge)
    w = numpy_helper.to_array(broken.graph.initializer[0]).copy()
    w[0, 0] = np.inf  # NaN/inf where the dense model has finite values, and no rounding would move there
    broken.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
    plain = edge
    plain.graph.node[1].op_type = "Abs"  # |z|: no NaN anywhere in the dense model, nothing its nudge moves
    with pytest.raises(ParityError, match=r"output 'y' is NaN/inf in other places than in the dense model .*\d+ "
                                          r"value\(s\)\); this is a bug"):
        check_parity(_with_node_op(broken, 1, "Abs"), plain, feeds)


def _with_node_op(model: onnx.ModelProto, index: int, op: str) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.node[index].op_type = op
    return out


def test_the_read_check_names_the_model_as_read_and_the_input_as_given_in_its_own_words():
    """check_read's verdicts come from the parity check's judging tail, worded for the read (verify.READ), not by
    replacing the parity check's phrases afterwards: a value that differs is said against "the input model as
    given", with no "dense model" and no "this is a bug" inside its one line; the same gap in the parity check keeps
    the parity check's words. onnxruntime runs both models here."""
    from onnxprune.models import builders

    given = builders.mlp_gemm(seed=0)
    read = onnx.ModelProto()
    read.CopyFrom(given)
    w = read.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.5, w.name))  # a wrong fold, say
    feeds = [random_feeds(given, seed=0)]
    assert not np.allclose(make_session(given).run(None, feeds[0])[0], make_session(read).run(None, feeds[0])[0])
    with pytest.raises(ParityError) as caught:
        verify.check_read(given, read, feeds)
    line = str(caught.value)
    assert line.startswith("the model as onnxprune read it") and "differs from the input model as given" in line
    assert "dense model" not in line and "this is a bug" not in line and "onnxprune defect" in line, line
    with pytest.raises(ParityError, match="differs from the dense model with the same weights.*this is a bug"):
        check_parity(read, given, feeds)
