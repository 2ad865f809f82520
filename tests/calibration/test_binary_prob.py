"""binary_prob: one probability per sample (a sigmoid score: wake word, voice activity, a binary classifier) judged as
a probability, prob over the two classes [1 - p, p]: decisions that cross 0.5 (Wilson-bounded) and the mean absolute
probability change (1 pp = 0.01 of probability), not its error relative to itself."""


import numpy as np
import onnx
import pytest
from onnxprune.calibration.metric_choice import auto_kind, auto_kinds, probability_outputs
from onnxprune.calibration.metrics import METRICS, Evaluator
from onnxprune.calibration.output_metrics import mismatch_samples
from onnxprune.calibration.readers import open_data
from onnxprune.converter.auto.decide import PER_SAMPLE, BudgetRule, wilson_upper
from onnxprune.models import third_party_builders as tb
from tests.oracle import first_output, with_initializer

X = 3.0 * np.random.default_rng(3).standard_normal((400, 8)).astype(np.float32)


def loss_pp(kind, out, ref):
    return 100.0 * (1.0 - METRICS[kind].finish(*METRICS[kind].batch(out, ref, None)))


def user_check(y, d):
    """What docs/metrics.md tells a user to compute: the larger of the share of samples on the other side of 0.5 and
    the mean absolute probability change, in pp."""
    y, d = np.ravel(y).astype(np.float64), np.ravel(d).astype(np.float64)
    return 100.0 * max(float(((y > 0.5) != (d > 0.5)).mean()), float(np.abs(y - d).mean()))


def test_a_sigmoid_score_gets_binary_prob_and_a_regression_keeps_rel_l2():
    scores = np.array([[0.01], [0.3], [0.97]], np.float32)
    assert auto_kind("53", scores, bounded=True) == "binary_prob"  # the graph says Sigmoid
    assert auto_kind("speech_prob", scores) == "binary_prob"  # the name says probability
    assert auto_kind("53", scores[:, 0], bounded=True) == "binary_prob"  # [N]
    assert auto_kind("53", scores) == "rel_l2"  # values in [0, 1] alone are no evidence: a normalised target
    assert auto_kind("score", scores) == "rel_l2"  # nor a word a quality score or a regression also uses
    assert auto_kind("depth", scores, bounded=True) == "rel_l2"  # a regression name wins over a Sigmoid
    assert auto_kind("embedding", scores, bounded=True) == "rel_l2"
    assert auto_kind("prob", scores * 2, bounded=True) == "rel_l2"  # outside [0, 1]: not a probability
    assert auto_kind("prob", np.array([[0.1, 0.9]], np.float32), bounded=True) == "prob"  # [N, 2]: rule 4 as before
    assert auto_kinds({"53": scores, "stateN": np.ones((2, 3, 4), np.float32)}, bounded={"53"}) == \
        {"53": "binary_prob", "stateN": "rel_l2"}
    # rule 6: four unnamed values beside a sigmoid score are box offsets, not four classes
    offsets = np.array([[0.3, -1.2, 2.0, 0.1]] * 3, np.float32)
    assert auto_kinds({"dense_2": offsets, "53": scores}, bounded={"53"}) == {"dense_2": "rel_l2", "53": "binary_prob"}
    assert auto_kinds({"dense_2": offsets, "53": scores}) == {"dense_2": "agreement", "53": "rel_l2"}


def test_the_graph_evidence_follows_ifs_and_reshapes_to_a_sigmoid():
    assert probability_outputs(tb.wake_word()) == {"53"}  # If(Sigmoid | Identity of the Sigmoid)
    assert probability_outputs(tb.wake_word(sigmoid=False)) == set()
    assert probability_outputs(tb.streaming_vad()) == {"prob"}  # Sigmoid -> Identity; stateN is an Add
    assert probability_outputs(tb.regressor()) == set()
    assert probability_outputs(None) == set()
    feeds = {"input": X[:32]}
    assert Evaluator(open_data(feeds, tb.wake_word(), batch_size=16), None, tb.wake_word()).plan == {"53": "binary_prob"}
    plain = tb.wake_word(sigmoid=False)
    assert Evaluator(open_data(feeds, plain, batch_size=16), None, plain).plan == {"53": "rel_l2"}
    # a [0, 1] regression whose name says so, behind the very same Sigmoid
    depth = tb.wake_word(name="depth")
    assert Evaluator(open_data(feeds, depth, batch_size=16), None, depth).plan == {"depth": "rel_l2"}


def test_per_sample_terms_add_up_to_the_figure_a_user_computes():
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 1, (200, 1)).astype(np.float32) ** 3  # many near-zero negatives
    y = np.clip(d + rng.normal(0, 0.02, d.shape), 0, 1).astype(np.float32)
    terms, counts = METRICS["binary_prob"].samples(y, d, None)
    assert counts.tolist() == [1] * 200
    flipped = (y > 0.5) != (d > 0.5)
    assert terms[:, 0].tolist() == (~flipped[:, 0]).astype(float).tolist()
    assert terms[:, 1] == pytest.approx(np.abs(y - d)[:, 0].astype(np.float64), abs=1e-7)
    expected = user_check(y, d)
    assert loss_pp("binary_prob", y, d) == pytest.approx(expected, rel=1e-6)
    assert loss_pp("binary_prob", y[:, 0], d[:, 0]) == pytest.approx(expected, rel=1e-6)  # [N] alike
    losses = PER_SAMPLE["binary_prob"].fn(y, d, None)
    assert 100 * max(losses.mean(axis=0)) == pytest.approx(expected, rel=1e-6)
    sums, count = (0.0, 0.0), 0
    for lo in range(0, 200, 7):  # batch by batch, as the Evaluator sums them
        s, c = METRICS["binary_prob"].batch(y[lo:lo + 7], d[lo:lo + 7], None)
        sums, count = (sums[0] + s[0], sums[1] + s[1]), count + c
    assert 100 * (1 - METRICS["binary_prob"].finish(sums, count)) == pytest.approx(expected, rel=1e-6)
    assert mismatch_samples("binary_prob", d)[0].tolist() == [[0.0, 1.0]] * 200  # a changed shape loses all


def test_a_negative_sample_is_judged_in_probability_points_not_relative_to_itself():
    d = np.array([[0.01], [0.02], [0.9], [0.95]], np.float32)
    y = d + np.array([[0.005], [0.005], [0.0], [0.0]], np.float32)  # two negatives move by half a point
    assert loss_pp("binary_prob", y, d) == pytest.approx(0.25, rel=1e-4)  # mean change 0.0025
    # relative to themselves they were 50% and 25% (18.75 pp); rel_l2 floors a norm at 0.1 of the RMS norm (0.065)
    assert loss_pp("rel_l2", y, d) == pytest.approx(100 * 2 * 0.005 / (0.1 * np.sqrt(np.mean(d ** 2))) / 4, rel=1e-4)
    crossed = d.copy()
    crossed[2] = 0.49  # a positive lost: one of 4 samples crossed 0.5
    assert loss_pp("binary_prob", crossed, d) == pytest.approx(25.0)


def test_the_check_docs_metrics_md_gives_users_is_the_tools_loss():
    from tests.calibration.docs_checks import docs_function

    user_check = docs_function("binary_prob_loss")
    rng = np.random.default_rng(4)
    d = rng.uniform(0, 1, (300, 1)).astype(np.float32)
    y = np.clip(d + rng.normal(0, 0.05, d.shape), 0, 1).astype(np.float32)
    got = user_check(y, d)
    assert got == pytest.approx(loss_pp("binary_prob", y, d), rel=1e-6)
    assert got == pytest.approx(user_check(y, d), rel=1e-6)


def _run(model):
    return first_output(model, {"input": X})


def test_on_an_if_graph_the_rule_bounds_both_parts_and_matches_onnxruntime():
    model = tb.wake_word()
    onnx.checker.check_model(model, full_check=True)
    ev = Evaluator(open_data({"input": X}, model, batch_size=50), None, model)
    assert ev.plan == {"53": "binary_prob"}
    dense = _run(model)
    assert 0.05 < float((dense > 0.5).mean()) < 0.5  # mostly negatives, many near 0, as a wake word sees

    small = with_initializer(model, "fc2.bias", lambda b: b + 0.01)  # every score moves by at most 0.0025
    moved = _run(small)
    assert ev.loss_pp(ev.evaluate(small)) == pytest.approx(user_check(moved, dense), rel=1e-4)
    decision = BudgetRule(ev, 1.0).judge(small)
    assert decision.within
    figures = decision.outputs["53"]
    assert figures["loss_pp"] <= 1.0 and figures["metric"] == "binary_prob"

    shifted = with_initializer(model, "fc2.bias", lambda b: b + 0.3)  # scores up by up to 0.075: some cross 0.5
    after = _run(shifted)
    crossed = float(((after > 0.5) != (dense > 0.5)).mean())
    assert 0 < crossed and np.abs(after - dense).mean() > 0.01
    assert ev.loss_pp(ev.evaluate(shifted)) == pytest.approx(user_check(after, dense), rel=1e-4)
    assert not BudgetRule(ev, 1.0).judge(shifted).within


def test_crossings_are_bounded_by_wilson_even_when_the_mean_change_is_tiny():
    model = tb.wake_word()
    ev = Evaluator(open_data({"input": X}, model, batch_size=50), None, model)
    dense = _run(model)
    # 1% of the samples (4 of 400, those nearest 0.5 from above) pushed just below it: mean change ~1e-4
    near = np.argsort(np.where(dense[:, 0] > 0.5, dense[:, 0], np.inf))[:4]
    out = dense.copy()
    out[near, 0] = 0.5
    rule = BudgetRule(ev, 1.0)
    figures = rule.judge_outputs([out[i:i + 50] for i in range(0, 400, 50)]).outputs["53"]
    assert figures["part"] == "crossed 0.5" and not figures["within"]
    assert figures["loss_pp"] == pytest.approx(1.0)
    assert figures["limit_pp"] == pytest.approx(1.0 - 100 * (wilson_upper(0.01, 400, 1.0) - 0.01), abs=1e-6)
    none = rule.judge_outputs([dense[i:i + 50] for i in range(0, 400, 50)])
    assert none.within and none.loss_pp == 0.0


def test_a_multi_label_sigmoid_head_is_judged_label_by_label_not_by_its_argmax():
    """[N, C] sigmoids (rows not summing to 1): a sample changes when any label crosses 0.5. Argmax agreement
    missed it: here the pruned head turns a second label on in a third of the samples and keeps every argmax."""
    model = tb.multi_label()
    assert probability_outputs(model) == {"output"}
    feeds = {"input": X[:64]}
    assert Evaluator(open_data(feeds, model, batch_size=32), None, model).plan == {"output": "binary_prob"}
    logits = tb.multi_label(sigmoid=False)
    assert Evaluator(open_data(feeds, logits, batch_size=32), None, logits).plan == {"output": "agreement"}
    probs = np.array([[0.9, 0.2, 0.1], [0.3, 0.6, 0.05]], np.float32)
    assert auto_kind("output", probs, bounded=True) == "binary_prob"
    assert auto_kind("output", probs) == "agreement"  # values in [0, 1] alone: logits of a sort, as before
    assert auto_kind("output", probs / probs.sum(1, keepdims=True), bounded=True) == "prob"  # a softmax
    assert auto_kind("box_output", probs, bounded=True) == "rel_l2"  # a regression name still wins
    # onnxruntime's dense outputs; a candidate whose second label crosses 0.5 on every third sample
    d = first_output(model, feeds)
    top = d.argmax(1)
    y = d.copy()
    for i in range(0, len(y), 3):
        j = (top[i] + 1) % d.shape[1]
        y[i, j] = 0.51 if d[i, j] <= 0.5 else 0.49
        y[i, top[i]] = max(y[i, top[i]], 0.52)  # the argmax stays
    assert (y.argmax(1) == top).all() and loss_pp("agreement", y, d) == 0.0
    crossed = 100.0 * np.ceil(len(y) / 3) / len(y)
    assert loss_pp("binary_prob", y, d) == pytest.approx(max(crossed, 100 * np.abs(y - d).max(1).mean()))
    rule = BudgetRule(Evaluator(open_data(feeds, model, batch_size=32), None, model), 1.0)
    assert not rule.judge_outputs([(y[:32],), (y[32:],)]).within


def _frame_confidence() -> onnx.ModelProto:
    """x [N, 8] -> MatMul [8, 16] -> 'confidence' [N, 16] = Where(logit > -1, Sigmoid(logit), 0): SwiftF0's per-frame
    voicing confidence, zeroed where the frame's pitch is out of band."""
    h = onnx.helper
    w = onnx.numpy_helper.from_array(np.random.default_rng(5).standard_normal((8, 16)).astype(np.float32), "w")
    lo = onnx.numpy_helper.from_array(np.array(-1.0, np.float32), "lo")
    zero = onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    nodes = [h.make_node("MatMul", ["x", "w"], ["logit"]), h.make_node("Greater", ["logit", "lo"], ["in_band"]),
             h.make_node("Sigmoid", ["logit"], ["p"]), h.make_node("Where", ["in_band", "p", "zero"], ["confidence"])]
    graph = h.make_graph(nodes, "voicing", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8])],
                         [h.make_tensor_value_info("confidence", onnx.TensorProto.FLOAT, ["N", 16])], [w, lo, zero])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_sigmoid_a_where_zeroes_is_judged_value_by_value_not_by_its_argmax():
    """Real models 52: SwiftF0's 'confidence' [1, frames] is Where(in band, Sigmoid, 0), read frame by frame at 0.5
    (voiced). The Where hid the Sigmoid, so the output was scored by agreement, the argmax over a clip's 62 frames:
    the first neuron level changed it in 135 of 195 clips, and nothing could be pruned by a rule that is no reading of
    the package's. A Where between values in [0, 1] (a Sigmoid, a stored 0) keeps a probability: binary_prob, each
    frame at 0.5, checked here against onnxruntime's outputs."""
    model = _frame_confidence()
    assert probability_outputs(model) == {"confidence"}
    feeds = {"x": X[:64]}
    ev = Evaluator(open_data(feeds, model, batch_size=32), None, model)
    assert ev.plan == {"confidence": "binary_prob"}
    d = first_output(model, feeds)
    assert (d == 0).any() and ((d > 0.5) & (d < 1)).any()  # both branches of the Where in the data
    noise = np.random.default_rng(6).standard_normal((8, 16))
    cand = with_initializer(model, "w", lambda w: w + 0.02 * noise)
    y = first_output(cand, feeds)
    crossed = ((y > 0.5) != (d > 0.5)).any(axis=1)
    assert 0 < crossed.sum() < len(y)
    assert ev.loss_pp(ev.evaluate(cand)) == pytest.approx(
        max(100.0 * crossed.mean(), 100 * np.abs(y - d).max(1).mean()), rel=1e-5)
    stored_one = onnx.helper.make_node("Where", ["in_band", "p", "logit"], ["confidence"])
    unbounded = _frame_confidence()
    unbounded.graph.node[-1].CopyFrom(stored_one)  # a Where that may pick a logit is no probability
    assert probability_outputs(unbounded) == frozenset()


def test_a_code_of_bits_is_judged_bit_by_bit_not_by_its_argmax():
    """Real models 51: invisible-watermark's rivaGan decoder returns 'output' [batch_size, wmBits], 32 logits the
    package reads as `output > 0.52`, and was scored agreement, the argmax over the 32 bits. An [N, C] output whose
    name or last axis's declared name says bits is binary_logit (each value by its sign), binary_prob in [0, 1]."""
    model = tb.bit_decoder(bits=16)
    frames = np.random.default_rng(5).standard_normal((64, 3, 6, 6)).astype(np.float32)
    feeds = {"frame": frames}
    assert Evaluator(open_data(feeds, model, batch_size=32), None, model).plan == {"output": "binary_logit"}
    for other in (tb.bit_decoder(bits=16, name="bits"), tb.bit_decoder(bits=16, bits_axis="hash_bits")):
        assert Evaluator(open_data(feeds, other, batch_size=32), None, other).plan == \
            {other.graph.output[0].name: "binary_logit"}
    plain = tb.bit_decoder(bits=16, bits_axis=None)  # nothing says bits: class scores, as before
    assert Evaluator(open_data(feeds, plain, batch_size=32), None, plain).plan == {"output": "agreement"}
    codes = np.random.default_rng(6).random((8, 16)).astype(np.float32)
    assert auto_kinds({"output": codes}, bits={"output"}) == {"output": "binary_prob"}
    assert auto_kinds({"orbits": codes}, bits=()) == {"orbits": "agreement"}  # 'orbits' holds no word 'bits'
    # onnxruntime's dense logits; a candidate whose weakest bit crosses 0 in every third frame, every argmax kept
    d = first_output(model, feeds)
    top, weak = d.argmax(1), np.abs(d).argmin(1)
    assert (top != weak).all()
    y = d.copy()
    y[::3, :][np.arange(len(y[::3])), weak[::3]] *= -1.0
    assert (y.argmax(1) == top).all() and loss_pp("agreement", y, d) == 0.0
    assert loss_pp("binary_logit", y, d) == pytest.approx(100.0 * len(y[::3]) / len(y))
    rule = BudgetRule(Evaluator(open_data(feeds, model, batch_size=32), None, model), 1.0)
    assert not rule.judge_outputs([(y[:32],), (y[32:],)]).within


def test_the_summary_states_a_probabilitys_change_in_its_own_points(tmp_path):
    """output_error's mean_abs is the mean over samples of each one's largest absolute change, and a run whose
    headline metric is a probability prints it (relative to a score near 0 any change looks huge)."""
    from onnxprune.calibration.metrics import output_error
    from tests.hardening.helpers import invoke

    d = np.array([[0.01], [0.9], [0.3]], np.float32)
    y = d + np.array([[0.02], [0.05], [-0.1]], np.float32)
    err = output_error([y[:2], y[2:]], [d[:2], d[2:]])
    assert err["mean_abs"] == pytest.approx((0.02 + 0.05 + 0.1) / 3, rel=1e-5)
    # 0.02 on 0.01: twice itself, but a norm is floored at 0.1 of the set's RMS norm (0.055), as rel_l2's
    assert err["max_abs"] == pytest.approx(0.1, rel=1e-5)
    assert err["max_rel"] == pytest.approx(0.02 / (0.1 * np.sqrt(np.mean(d ** 2))), rel=1e-5)
    model = tmp_path / "wake.onnx"
    onnx.save(tb.wake_word(), model)
    np.savez(tmp_path / "calib.npz", input=X[:240])
    res = invoke("prune", model, "-o", tmp_path / "out.onnx", "--data", tmp_path / "calib.npz", "--max-loss", "1",
                 "--one-shot")
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("binary_prob on calib.npz"))
    assert "largest probability change" in line and "rel error" not in line, line


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_a_logit_per_sample_is_judged_by_its_sign_and_its_sigmoid_not_relative_to_itself():
    """Sweep 6's siamese model: its one 'same_logit' per pair got per-sample rel_l2, which divides by logits near 0,
    where the decision is made. binary_logit is binary_prob on the sigmoids: what docs/metrics.md tells a user."""
    logits = np.array([[-4.0], [0.01], [-0.02], [3.0]], np.float32)
    assert auto_kind("same_logit", logits) == "binary_logit"
    assert auto_kind("logits", logits[:, 0]) == "binary_logit"  # [N] alike
    assert auto_kind("box_logit", logits) == "rel_l2"  # a regression word wins
    assert auto_kind("out", logits) == "rel_l2"  # no name evidence: a regression value
    assert auto_kind("emb_a", np.ones((3, 8), np.float32)) == "cosine"  # 'emb' as a word says embedding
    assert auto_kind("member", np.array([[1.0, 2.0]] * 3, np.float32)) == "agreement"
    moved = logits + np.float32(0.025)  # the two near 0 move by 0.025: 250% and 125% of themselves, 10% of rel_l2's
    assert loss_pp("rel_l2", moved, logits) > 5  # floor (0.1 of the RMS norm, 0.25): no sign or probability read
    want = user_check(_sigmoid(moved), _sigmoid(logits))  # one of 4 changed sign: 25 pp
    assert want == pytest.approx(25.0) and loss_pp("binary_logit", moved, logits) == pytest.approx(want, rel=1e-6)
    small = logits + np.float32(0.004)
    assert loss_pp("binary_logit", small, logits) == pytest.approx(user_check(_sigmoid(small), _sigmoid(logits)),
                                                                   rel=1e-5)
    assert loss_pp("binary_logit", small, logits) < 0.1


def test_a_logit_output_is_planned_scored_and_judged_alike_in_onnxruntime():
    model = tb.wake_word(name="same_logit", sigmoid=False)
    ev = Evaluator(open_data({"input": X}, model, batch_size=50), None, model)
    assert ev.plan == {"same_logit": "binary_logit"}
    dense = _run(model)
    assert (dense > 0).any() and (dense < 0).any()
    small = with_initializer(model, "fc2.bias", lambda b: b + 0.01)
    got = _run(small)
    assert ev.loss_pp(ev.evaluate(small)) == pytest.approx(user_check(_sigmoid(got), _sigmoid(dense)), rel=1e-4)
    assert BudgetRule(ev, 1.0).judge(small).within
    shifted = with_initializer(model, "fc2.bias", lambda b: b + 2.0)
    assert not BudgetRule(ev, 1.0).judge(shifted).within
