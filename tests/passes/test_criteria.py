"""Criteria registry and the one ranking routine (no torch here): formulas, exact counts, ties, never regrow."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxprune.calibration.readers import open_data
from onnxprune.calibration.sensitivity import masked, masked_levels
from onnxprune.calibration.statistics import CalibrationStats
from onnxprune.errors import ConfigError
from onnxprune.models import builders, builders_control
from onnxprune.passes.criteria import CRITERIA, Scorer, Scoring, check_criterion, get_criterion, keep_mask
from onnxprune.passes.magnitude import sparsity_mask
from onnxprune.passes.weights import find_prunable, weight_array
from tests.oracle import run


def old_magnitude_mask(values, sparsity, current=None):
    """The rule before the registry: the first round(s·n) of a stable argsort of |w| (pruned ones first) go; since
    session 21 a sparsity under 1 leaves at least one weight (round(0.75 · 1) emptied a one-weight layer)."""
    mag = np.abs(values.astype(np.float64)).reshape(-1)
    n_drop = int(round(sparsity * mag.size))
    if sparsity < 1.0:
        n_drop = min(n_drop, mag.size - 1)
    if current is not None:
        mag = np.where(current.reshape(-1), mag, -1.0)
        n_drop = max(n_drop, int(mag.size - current.sum()))
    keep = np.ones(mag.size, dtype=bool)
    keep[np.argsort(mag, kind="stable")[:n_drop]] = False
    return keep.reshape(values.shape)


def test_registry_holds_the_four_criteria_and_says_what_they_need():
    assert list(CRITERIA) == ["magnitude", "obd", "taylor", "wanda"]
    assert [c.name for c in CRITERIA.values() if c.needs_data] == ["obd", "taylor", "wanda"]
    assert get_criterion("wanda").group == "row" and get_criterion("obd").group == "layer"


def test_unknown_criterion_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="'snip' is not one of magnitude, obd, taylor, wanda"):
        get_criterion("snip")


@pytest.mark.parametrize("name", ["obd", "taylor", "wanda"])
def test_data_criteria_without_data_name_the_fix(name):
    with pytest.raises(ConfigError, match=f"--criterion {name} .*pass --data"):
        check_criterion(name, has_data=False)


def test_quality_rule_is_magnitude_only():
    check_criterion("magnitude", has_data=False, quality=True)
    with pytest.raises(ConfigError, match="--quality is the paper's magnitude rule"):
        check_criterion("wanda", has_data=True, quality=True)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), s=st.floats(0.0, 0.99), seed=st.integers(0, 10_000), ties=st.booleans())
def test_magnitude_masks_are_bit_identical_to_the_stable_argsort_rule(n, s, seed, ties):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(n).astype(np.float32)
    if ties:
        w = np.round(w, 1)
    current = rng.random(n) < 0.7
    assert np.array_equal(sparsity_mask(w, s), old_magnitude_mask(w, s))
    assert np.array_equal(Scorer().keep("w", w, s, current), old_magnitude_mask(w, s, current) & current)
    assert np.array_equal(masked(w, s), np.where(old_magnitude_mask(w, s), w, 0))


def test_keep_mask_drops_exact_counts_never_regrows_and_breaks_ties_by_position():
    scores = np.array([3.0, 1.0, 1.0, 1.0, 2.0, 5.0])
    assert keep_mask(scores, 0.5).tolist() == [True, False, False, False, True, True]
    current = np.array([True, True, True, True, True, False])  # the 5.0 is already pruned: it goes first
    assert keep_mask(scores, 0.5, current).tolist() == [True, False, False, True, True, False]
    assert keep_mask(scores, 0.0, ~np.eye(6, dtype=bool)[0]).tolist() == [False] + [True] * 5  # no regrowth


def test_keep_mask_per_row_keeps_the_same_share_of_every_output():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])
    assert keep_mask(scores, 1 / 3, axis=0).tolist() == [[True, False, True], [False, True, True]]
    assert keep_mask(scores.T, 1 / 3, axis=1).T.tolist() == [[True, False, True], [False, True, True]]
    conv = np.random.default_rng(0).random((4, 3, 2, 2))
    kept = keep_mask(conv, 0.75, axis=0)
    assert kept.reshape(4, -1).sum(axis=1).tolist() == [3, 3, 3, 3]


def test_masked_levels_match_masked_for_every_criterion_scorer():
    w = np.random.default_rng(1).standard_normal((6, 5)).astype(np.float32)
    scorer = Scorer()
    levels = [0.1, 0.5, 0.9]
    for got, s in zip(masked_levels(w, levels, scorer, "w"), levels):
        np.testing.assert_array_equal(got, masked(w, s))
        assert int((got == 0).sum()) == round(s * w.size)


# ---- wanda: input norms from onnxruntime against numpy -----------------------------------------------------------

def _reader(model, x):
    return open_data({"input": x}, model, batch_size=7)


def test_wanda_scores_a_gemm_by_the_norm_of_each_input_feature():
    model = builders.mlp_gemm(in_features=6, hidden=(5,), out_features=3, seed=0)
    x = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    stats = CalibrationStats(model, _reader(model, x))
    inv = find_prunable(model).by_name()
    w1, b1 = weight_array(model, "fc1.weight"), weight_array(model, "fc1.bias")
    h = np.maximum(x @ w1.T + b1, 0)  # what fc2 reads
    for name, feats in (("fc1.weight", x), ("fc2.weight", h)):
        want = np.abs(weight_array(model, name)) * np.linalg.norm(feats.astype(np.float64), axis=0)[None, :]
        got = Scorer("wanda", weights=inv, model=model, stats=stats).scores(name, weight_array(model, name))
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=name)


def test_wanda_scores_a_conv_by_the_channel_norm_over_samples_and_positions():
    model = builders.lenet5_like(conv_channels=(2, 3), fc_units=4, seed=0)
    x = np.random.default_rng(0).random((5, 1, 28, 28)).astype(np.float32)
    feed = run(_with_output(model, "/pool1/MaxPool_output_0"), {"input": x})["/pool1/MaxPool_output_0"]
    stats = CalibrationStats(model, _reader(model, x))
    w = weight_array(model, "conv2.weight")
    norms = np.sqrt((feed.astype(np.float64) ** 2).sum(axis=(0, 2, 3)))
    got = Scorer("wanda", model=model, stats=stats).scores("conv2.weight", w)
    np.testing.assert_allclose(got, np.abs(w) * norms[None, :, None, None], rtol=1e-5)


def test_wanda_on_a_grouped_conv_uses_each_outputs_own_input_channels():
    model = builders.depthwise_separable(in_channels=3, channels=6, out_channels=4, seed=0)
    inv = find_prunable(model).by_name()
    dw = next(w for w in inv.values() if w.op_type == "Conv" and w.shape[1] == 1 and w.shape[0] == 6)
    node = next(n for n in model.graph.node if n.name == dw.node)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    feed = run(_with_output(model, node.input[0]), {"input": x})[node.input[0]].astype(np.float64)
    norms = np.sqrt((feed ** 2).sum(axis=(0, 2, 3)))
    stats = CalibrationStats(model, _reader(model, x))
    got = stats.input_norms(dw)
    assert got.shape == (6, 1, 1, 1)
    np.testing.assert_allclose(got.reshape(-1), norms, rtol=1e-5)


def test_wanda_through_the_scorer_on_a_grouped_conv_keeps_the_weights_shape():
    """A depthwise Conv's norms come per output already ([O, 1, 1, 1]): laid along the input axis again they
    broadcast [O, 1, k, k] to [O, O, k, k] (every paddle2onnx OCR model: 'returned shape (24, 24, 3, 3)')."""
    model = builders.depthwise_separable(in_channels=3, channels=6, out_channels=4, seed=0)
    inv = find_prunable(model).by_name()
    dw = next(w for w in inv.values() if w.op_type == "Conv" and w.shape[1] == 1 and w.shape[0] == 6)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    stats = CalibrationStats(model, _reader(model, x))
    w = weight_array(model, dw.name)
    got = Scorer("wanda", weights=inv, model=model, stats=stats).scores(dw.name, w)
    assert got.shape == w.shape
    np.testing.assert_allclose(got, np.abs(w) * stats.input_norms(dw), rtol=1e-6)


def time_major_lstm(steps=5, features=8):
    """[T, N, F] straight into an LSTM (as torch's legacy exporter writes nn.LSTM without batch_first)."""
    model = builders_control.lstm_classifier(features=features, hidden=6, steps=steps, out_features=3, seed=0)
    graph = model.graph
    transpose = next(n for n in graph.node if n.name == "/time_major")
    graph.node.remove(transpose)
    for node in graph.node:
        node.input[:] = ["input" if i == "x_tnf" else i for i in node.input]
    graph.input[0].CopyFrom(onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                                               [steps, "batch", features]))
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_weight_the_statistics_do_not_reach_is_ranked_by_magnitude_and_said_once():
    """Wanda's norms reach Conv/Gemm/MatMul inputs; an LSTM's W and R rank by |w| within their own layer (every
    path ranks within a layer or a row), counted in one note; a model none of whose weights it reaches is refused."""
    model = builders_control.lstm_classifier(features=8, hidden=6, steps=5, out_features=3, seed=0)
    x = np.random.default_rng(0).standard_normal((12, 5, 8)).astype(np.float32)
    scoring = Scoring("wanda", stats_for=lambda m: CalibrationStats(m, _reader(m, x)))
    scorer = scoring.bind(model)
    for name in ("lstm.W", "lstm.R"):
        w = weight_array(model, name)
        np.testing.assert_array_equal(scorer.scores(name, w), np.abs(w))
    fc = weight_array(model, "fc.weight")
    assert not np.array_equal(scorer.scores("fc.weight", fc), np.abs(fc))  # wanda where it reaches
    assert set(scoring.fallbacks) == {"lstm.W", "lstm.R"}
    assert scoring.note() == ("--criterion wanda: its statistics do not reach 2 weight(s) (of LSTM '/lstm'); those "
                              "are ranked by magnitude within their own layers")
    assert Scoring("wanda").note() is None
    alone = builders_control.lstm_classifier(features=8, hidden=6, steps=5, out_features=3, seed=0)
    alone.graph.initializer.remove(next(t for t in alone.graph.initializer if t.name == "fc.weight"))
    alone.graph.node.remove(next(n for n in alone.graph.node if n.op_type == "Gemm"))
    alone.graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info("h", onnx.TensorProto.FLOAT, None))
    stats = CalibrationStats(alone, _reader(alone, x))
    with pytest.raises(ConfigError, match=r"no weight of this model has input_norms statistics .*; use --criterion "
                                          r"magnitude, or obd/taylor"):
        Scorer("wanda", model=alone, stats=stats).scores("lstm.W", weight_array(alone, "lstm.W"))


def test_statistics_of_time_major_feeds_read_each_feed_whole():
    """A time-major input is read one complete feed at a time (axis 0 is time): the statistics count a feed as a
    sample and never cut it along axis 0 (torch_lstm_legacy: 'Got: 16 Expected: 28' at 1,024 samples)."""
    model = time_major_lstm()
    rng = np.random.default_rng(0)
    feeds = [{"input": rng.standard_normal((5, 3, 8)).astype(np.float32)} for _ in range(4)]
    reader = open_data(feeds, model)
    assert reader.per_feed
    got = list(CalibrationStats(model, reader, max_samples=3).batches())
    assert len(got) == 3 and all(f["input"].shape == (5, 3, 8) for f, _ in got)
    fc = find_prunable(model).by_name()["fc.weight"]
    norms = CalibrationStats(model, reader).input_norms(fc)
    h = np.concatenate([run(_with_output(model, "h"), f)["h"] for f in feeds]).astype(np.float64)
    np.testing.assert_allclose(norms, np.linalg.norm(h, axis=0)[None, :], rtol=1e-5)


def test_wanda_follows_a_transposed_matmul_weight():
    model = builders.mlp_matmul(in_features=6, hidden=(5,), out_features=3, transposed_weights=True, seed=0)
    x = np.random.default_rng(0).standard_normal((9, 6)).astype(np.float32)
    w = find_prunable(model).by_name()["fc1.weight"]  # stored [out, in], reaches MatMul through Transpose
    assert (w.out_axis, w.in_axis) == (0, 1)
    got = CalibrationStats(model, _reader(model, x)).input_norms(w)
    np.testing.assert_allclose(got, np.linalg.norm(x.astype(np.float64), axis=0)[None, :], rtol=1e-5)


def test_statistics_read_only_the_first_max_samples():
    model = builders.mlp_gemm(in_features=4, hidden=(3,), out_features=2, seed=0)
    x = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    w = find_prunable(model).by_name()["fc1.weight"]
    got = CalibrationStats(model, _reader(model, x), max_samples=10).input_norms(w)
    np.testing.assert_allclose(got[0], np.linalg.norm(x[:10].astype(np.float64), axis=0), rtol=1e-5)


def test_a_scoring_binds_statistics_once_per_model():
    model = builders.mlp_gemm(seed=0)
    made = []
    scoring = Scoring("wanda", stats_for=lambda m: made.append(m) or object())
    scoring.bind(model), scoring.bind(model)
    assert len(made) == 1
    scoring.bind(onnx.ModelProto())
    assert len(made) == 2
    assert Scoring().bind(model).stats is None  # magnitude: no statistics


def _with_output(model, name):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.append(onnx.ValueInfoProto(name=name))
    return out


def test_a_sparsity_under_one_keeps_a_weight_of_a_small_layer():
    """0.99 of 20 weights rounds to 20: a layer was emptied, and the automatic search then stopped on "sparsity 1.0
    is outside [0, 1)" (a helper's Gemm whose bias alone decides every class)."""
    from onnxprune.passes.criteria.rank import keep_mask

    scores = np.arange(20, dtype=np.float64).reshape(2, 10)
    assert keep_mask(scores, 0.99).sum() == 1 and keep_mask(scores, 0.99)[1, 9]  # the best stays
    per_row = keep_mask(scores, 0.99, axis=0)  # each row of 10 rounds to empty: the layer keeps its best weight
    assert per_row.sum() == 1 and per_row[1, 9]
    assert keep_mask(scores, 0.5).sum() == 10


def test_the_automatic_search_keeps_a_weight_in_a_layer_the_bias_alone_decides(tmp_path):
    import onnx
    from click.testing import CliRunner
    from onnx import TensorProto, helper, numpy_helper

    from onnxprune.calibration.runtime import make_session
    from onnxprune.converter.cli import cli

    rng = np.random.default_rng(0)
    w = (rng.standard_normal([2, 10]) * 0.1).astype(np.float32)
    b = np.zeros(10, np.float32)
    b[3] = 10.0
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "W", "b"], ["logits"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                              [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    x = rng.standard_normal([200, 2]).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    result = CliRunner().invoke(cli, ["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--data",
                                      str(tmp_path / "d.npz"), "--max-loss", "1", "--time-budget", "30s"])
    assert result.exit_code == 0, result.output
    out = onnx.load(str(tmp_path / "o.onnx"))
    got, want = make_session(out).run(None, {"x": x})[0], make_session(model).run(None, {"x": x})[0]
    assert (got.argmax(1) == want.argmax(1)).all()


def test_entries_ranked_last_go_only_after_every_other():
    """An embedding table's unread rows (converter/steps/rows.py): they rank after every other entry whatever their
    scores (finite, for sums over them such as LAMP's), and a sparsity is a share of the other entries: none of the
    unread ones goes, and s of the read ones do, as for a table the data reads whole."""
    from onnxprune.passes.criteria.rank import keep_mask
    from onnxprune.passes.criteria.scorer import Scorer, rank_last

    values = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    last = np.zeros((6, 4), bool)
    last[4:] = True
    values[4:] *= 1e-3  # the smallest magnitudes: plain magnitude would drop them first
    scorer = Scorer(last={"t": last})
    ranked = scorer.scores("t", values)
    assert np.isfinite(ranked).all() and ranked[last].min() > ranked[~last].max()
    for s in (0.25, 0.5, 0.75):
        keep = scorer.keep("t", values, s)
        assert keep[last].all() and (~keep).sum() == round(s * (~last).sum())
    assert not keep_mask(np.abs(values), 0.25)[last].all()  # without it they go first
    np.testing.assert_array_equal(rank_last(np.abs(values), None), np.abs(values))
