"""A relative error is judged against the output's typical scale where a sample's own norm is tiny: the denominator
is max(||d_i||, 0.1 s), s the RMS of ||d_j|| over the whole set scored (per channel for the channel kinds). Sweep 8:
a value head [N, 1] of std 4.1 with one calibration sample at 0.013 made a tiny change "39.8 pp" and every
pruning candidate was rejected. The figure does not depend on the batches, and outputs without tiny norms score
exactly as before."""


import numpy as np
import pytest

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.output_metrics import FLOOR, METRICS, _TINY, reference_scale
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.sampling import SequentialScorer
from onnxprune.converter.auto.decide import BudgetRule
from onnxprune.models import third_party_builders as tb
from tests.oracle import with_initializer

X8 = np.random.default_rng(5).standard_normal((96, 8)).astype(np.float32)


def loss_pp(kind, out, ref):
    return 100.0 * (1.0 - METRICS[kind].finish(*METRICS[kind].batch(out, ref, None)))


def user_rel_l2(y, d):
    """What docs/metrics.md tells a user to compute for rel_l2 over the whole set, in pp."""
    y = y.reshape(len(y), -1).astype(np.float64)
    d = d.reshape(len(d), -1).astype(np.float64)
    norm = np.linalg.norm(d, axis=1)
    floor = 0.1 * np.sqrt(np.mean(norm ** 2))
    return 100 * float(np.mean(np.linalg.norm(y - d, axis=1) / np.maximum(norm, floor)))


def test_a_value_crossing_zero_is_judged_against_the_outputs_scale_not_its_own():
    rng = np.random.default_rng(0)
    d = (4.1 * rng.standard_normal((300, 1))).astype(np.float32)  # a standardized regression value, std 4.1
    y = (d + 0.02 * rng.standard_normal(d.shape)).astype(np.float32)  # a small absolute change everywhere
    d[17], y[17] = 0.013, 0.033  # one sample near zero moved by 0.02: 1.5 of itself
    got = loss_pp("rel_l2", y, d)
    assert got == pytest.approx(user_rel_l2(y, d), rel=1e-6)  # float32 differences, as the tool takes them
    assert got == pytest.approx(loss_pp("rel_l2", y[:, 0], d[:, 0]), rel=1e-12)  # [N] alike
    floor = 0.1 * np.sqrt(np.mean(d.astype(np.float64) ** 2))  # 0.41
    terms = METRICS["rel_l2"].terms(y, d, None)[0][:, 0]
    assert terms[17] == pytest.approx(0.02 / floor, rel=1e-5)  # 0.05, not 1.54
    big = np.abs(d[:, 0]) >= floor  # every other sample as before: relative to itself
    assert terms[big] == pytest.approx(np.abs(y - d)[big, 0] / np.abs(d[big, 0]), rel=1e-6)
    own = 100 * np.mean(np.abs(y - d)[:, 0] / np.abs(d[:, 0]))  # what it was: the samples near 0 decided it
    assert got < 1.0 < 2 * got < own


def test_the_check_docs_metrics_md_gives_users_is_the_tools_loss():
    from tests.calibration.docs_checks import docs_function

    user_check = docs_function("rel_l2_loss")
    rng = np.random.default_rng(4)
    for shape in [(200, 1), (200,), (50, 3, 4)]:
        d = rng.standard_normal(shape).astype(np.float32)
        y = (d + 0.03 * rng.standard_normal(shape)).astype(np.float32)
        assert user_check(y, d) == pytest.approx(loss_pp("rel_l2", y, d), rel=1e-6)
        assert user_check(y, d) == pytest.approx(user_rel_l2(y, d), rel=1e-12)


def test_ordinary_outputs_score_exactly_as_before():
    rng = np.random.default_rng(1)
    d = rng.standard_normal((40, 16)).astype(np.float32)  # norms ~4, none near 0.1 of the RMS
    y = (d + 0.05 * rng.standard_normal(d.shape)).astype(np.float32)
    d2 = np.square(y - d).sum(axis=1, dtype=np.float64)
    b2 = np.square(d).sum(axis=1, dtype=np.float64)
    before = np.sqrt(d2) / np.maximum(np.sqrt(b2), _TINY)  # the definition until now, as it was computed
    assert np.sqrt(b2).min() > FLOOR * reference_scale(METRICS["rel_l2"], [d])[0]
    assert np.array_equal(METRICS["rel_l2"].terms(y, d, None)[0][:, 0], before)
    head = np.concatenate([rng.uniform(0, 320, (10, 4, 50)), rng.uniform(-1, 1, (10, 3, 50))], axis=1)
    moved = head + rng.normal(0, 0.5, head.shape) * np.where(np.arange(7) < 4, 1.0, 0.01)[:, None]
    head, moved = head.astype(np.float32), moved.astype(np.float32)
    diff = np.sqrt(np.square(moved - head).sum(axis=2, dtype=np.float64))
    norm = np.sqrt(np.square(head).sum(axis=2, dtype=np.float64))
    per_channel = np.minimum(1.0, diff / np.maximum(norm, _TINY)).max(axis=1)
    for kind in ("channel_rel_l2", "channel_prob"):  # no channel of this head lies in [0, 1]
        assert np.array_equal(METRICS[kind].terms(moved, head, None)[0][:, 0], per_channel), kind


def test_a_channel_tiny_in_one_sample_is_judged_against_that_channels_scale():
    rng = np.random.default_rng(2)
    head = rng.uniform(1, 2, (20, 3, 50)).astype(np.float32)
    head[0, 2] *= 1e-3  # channel 2 of sample 0 nearly silent
    moved = (head + 0.01 * rng.standard_normal(head.shape)).astype(np.float32)
    norm = np.linalg.norm(head.astype(np.float64), axis=2)
    floor = 0.1 * np.sqrt(np.mean(norm ** 2, axis=0))
    want = np.minimum(1, np.linalg.norm((moved - head).astype(np.float64), axis=2) / np.maximum(norm, floor))
    got = METRICS["channel_rel_l2"].terms(moved, head, None)[0][:, 0]
    assert got == pytest.approx(want.max(axis=1), rel=1e-6)
    assert got[0] < 0.1  # relative to itself it was capped at 1: the whole sample lost for a change of 0.01
    assert np.linalg.norm(moved[0, 2] - head[0, 2]) / np.linalg.norm(head[0, 2]) > 1


@pytest.fixture(scope="module")
def regressor():
    """A regression value [N, 1] crossing zero, some calibration samples near it, and a candidate with its output
    layer moved by 5%."""
    model = tb.regressor()
    candidate = with_initializer(model, "fc2.weight", lambda w: 1.05 * w)
    return model, candidate


def test_the_figure_is_the_same_whatever_the_batch_size_and_is_what_a_user_computes(regressor):
    model, candidate = regressor
    figures = []
    for batch_size in (1, 7, 32, 96):
        ev = Evaluator(open_data({"input": X8}, model, batch_size=batch_size), None, model)
        assert ev.plan == {"value": "rel_l2"}
        d, y = ev.outputs_of(model)[0], ev.outputs_of(candidate)[0]
        scale = np.sqrt(np.mean(d.astype(np.float64) ** 2))
        assert ev.scales[0][:1] == pytest.approx([scale], rel=1e-12)  # the whole set's, however it is batched
        assert (np.abs(d) < FLOOR * scale).sum() >= 3  # the floor binds here: the case this is about
        figure = ev.loss_pp(ev.evaluate(candidate))
        assert figure == pytest.approx(user_rel_l2(y, d), rel=1e-6)
        # the decision rule, the sequential scorer and the report's mean relative error read the same figure
        assert BudgetRule(ev, 1.0).judge(candidate).loss_pp == pytest.approx(figure, rel=1e-9)
        measured = SequentialScorer(ev).measure(lambda order: ev.run_batches(ev.session(candidate), order))
        assert measured.complete and measured.loss_pp == pytest.approx(figure, rel=1e-9)
        assert 100 * ev.output_errors(candidate)["value"]["mean_rel"] == pytest.approx(figure, rel=1e-9)
        figures.append(figure)
    assert figures == pytest.approx([figures[-1]] * len(figures), rel=1e-12)


def test_a_split_evaluator_floors_with_the_whole_sets_scale(regressor):
    """The run's Evaluator cuts cached batches into parts for the sequential scorer: the scale stays the set's."""
    model, candidate = regressor
    whole = Evaluator(open_data({"input": X8}, model, batch_size=96), None, model)
    split = Evaluator(open_data({"input": X8}, model, batch_size=96), None, model, split=8)
    assert len(split.labels) == 12 and split.scales[0] == pytest.approx(whole.scales[0], rel=1e-12)
    assert split.evaluate(candidate) == pytest.approx(whole.evaluate(candidate), rel=1e-12)
