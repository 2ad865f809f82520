"""The corpus metrics (numpy only, milliseconds): each figure on hand-made outputs whose answer is known."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("corpus_fidelity", Path(__file__).with_name("fidelity.py"))
fid = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fid)


def test_top1_agree_counts_rows_over_all_leading_axes():
    a = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.3, 0.7]]])
    b = a.copy()
    b[1, 0] = [0.4, 0.6]                      # one of four rows flips
    fig, ok = fid.score({"output": "y", "metric": "top1_agree", "bar": 0.99}, [a], [b])
    assert fig == pytest.approx(0.75) and not ok


def test_rel_l2_is_pooled_over_feeds_and_lower_is_better():
    a1, a2 = np.ones((2, 3)), np.full((1, 3), 2.0)
    b1, b2 = a1 + 0.1, a2
    fig, ok = fid.score({"output": "y", "metric": "rel_l2", "bar": 0.05}, [a1, a2], [b1, b2])
    assert fig == pytest.approx(np.sqrt(6 * 0.01 / (6 + 12)))
    assert ok is False and fid.score({"output": "y", "metric": "rel_l2", "bar": 0.1}, [a1, a2], [b1, b2])[1]


def test_slice_scores_only_the_named_rows():
    a = np.zeros((1, 6, 5), np.float32)
    a[0, 4:] = 0.9
    b = a.copy()
    b[0, :4] += 100.0                          # the boxes move, the class scores do not
    cls = {"output": "o", "slice": {"axis": 1, "start": 4, "stop": 6}, "metric": "thresh_agree", "threshold": 0.25,
           "bar": 0.999}
    box = {"output": "o", "slice": {"axis": 1, "start": 0, "stop": 4}, "metric": "rel_l2", "bar": 0.01}
    assert fid.score(cls, [a], [b]) == (1.0, True)
    assert fid.score(box, [a], [b])[1] is False


def test_ctc_collapses_repeats_and_blanks_and_reads_time_first():
    def onehot(ids, c=4):
        return np.eye(c)[ids]
    a = onehot([1, 1, 0, 1, 2, 2])[None]                 # "1 1 2" after decoding
    b = onehot([1, 0, 1, 1, 2, 0])[None]                 # same text, other alignment
    c = onehot([1, 1, 1, 0, 2, 2])[None]                 # "1 2"
    assert fid.score({"output": "y", "metric": "ctc_agree", "bar": 0.99}, [a, a], [b, c])[0] == 0.5
    t_first = np.moveaxis(np.concatenate([a, a]), 0, 1)  # [T, N, C]
    assert fid.score({"output": "y", "metric": "ctc_agree", "time_first": True, "bar": 0.99},
                     [t_first], [t_first]) == (1.0, True)


def test_zipmap_outputs_are_compared_by_value():
    a = [{0: 0.7, 1: 0.3}, {0: 0.1, 1: 0.9}]
    b = [{1: 0.6, 0: 0.4}, {0: 0.1, 1: 0.9}]
    np.testing.assert_array_equal(fid.as_array(b), [[0.4, 0.6], [0.1, 0.9]])
    assert fid.score({"output": "p", "metric": "top1_agree", "bar": 0.99}, [a], [b])[0] == 0.5


def test_mask_iou_cosine_exact_and_shape_mismatch():
    a = np.array([[0.9, 0.9, 0.1, 0.1]])
    b = np.array([[0.9, 0.1, 0.9, 0.1]])
    assert fid.score({"output": "m", "metric": "mask_iou", "threshold": 0.5, "bar": 0.95}, [a], [b])[0] == \
        pytest.approx(1 / 3)
    e = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert fid.score({"output": "e", "metric": "cosine", "bar": 0.99}, [e], [e * 3]) == (pytest.approx(1.0), True)
    assert fid.score({"output": "l", "metric": "exact_agree", "bar": 0.99}, [np.array([1, 2, 3])],
                     [np.array([1, 2, 4])])[0] == pytest.approx(2 / 3)
    fig, ok = fid.score({"output": "y", "metric": "rel_l2", "bar": 1.0}, [np.ones((2, 3))], [np.ones((2, 4))])
    assert np.isnan(fig) and not ok


# ---- held-out noise -------------------------------------------------------------------------------------------------
_CHECKS = [("top1_agree", {}), ("thresh_agree", {}), ("mask_iou", {}), ("exact_agree", {}), ("rel_l2", {}),
           ("cosine", {}), ("ctc_agree", {}), ("ctc_agree", {"time_first": True})]


@pytest.mark.parametrize("metric,extra", _CHECKS)
@pytest.mark.parametrize("per_feed", [False, True])
def test_sample_terms_add_up_to_the_figure(metric, extra, per_feed):
    """The bootstrap resamples samples through their (numerator, denominator): summed over all samples once, they
    give exactly the metric's own figure, for stacked batches and for one feed per sample."""
    rng = np.random.default_rng(1)
    shape = (6, 2, 5) if extra.get("time_first") else (2, 6, 5)
    if per_feed:
        shape = (6, 1, 5) if extra.get("time_first") else (1, 6, 5)
    original = [rng.random(shape) for _ in range(3)]
    pruned = [a + rng.normal(0, 0.2, a.shape) for a in original]
    if metric == "exact_agree":
        pruned[1] = original[1].copy()
    check = {"output": "y", "metric": metric, "bar": 0.5, **extra}
    fig, _ = fid.score(check, original, pruned)
    tf = extra.get("time_first", False)
    terms = np.array([fid._terms(metric, a, b, time_first=tf)
                      for a, b in fid.units(list(zip(original, pruned)), per_feed=per_feed, time_first=tf)])
    assert float(fid._finish(metric, terms[:, 0].sum(), terms[:, 1].sum())) == pytest.approx(fig)


def test_meets_share_tells_noise_from_a_real_loss():
    """400 samples, a 99% agreement bar (4 changes allowed): 6 changes are within the set's noise (a true 99% shows 5
    or more 37% of the time), 20 changes are not, and a passing figure holds in most resamples."""
    a = np.tile(np.array([[0.9, 0.1]]), (400, 1))
    check = {"output": "y", "metric": "top1_agree", "bar": 0.99}

    def flipped(k):
        b = a.copy()
        b[:k] = [0.1, 0.9]
        return [b[i:i + 16] for i in range(0, 400, 16)]

    original = [a[i:i + 16] for i in range(0, 400, 16)]
    six, twenty, two = (fid.meets_share(check, original, flipped(k), per_feed=False) for k in (6, 20, 2))
    assert 0.1 < six < 0.5
    assert twenty < 0.01
    assert two > 0.9


def test_meets_share_is_nan_for_mismatched_shapes():
    check = {"output": "y", "metric": "rel_l2", "bar": 0.01}
    assert np.isnan(fid.meets_share(check, [np.ones((2, 3))], [np.ones((2, 4))], per_feed=False))


def test_distinct_rows_keeps_each_rows_first_copy_in_order():
    """magika's file pool held the same file installed twice: its rows were in both the calibration set and the
    holdout (6 of 400), so the corpus now draws distinct rows before it splits them."""
    spec = importlib.util.spec_from_file_location("corpus_builders", Path(__file__).with_name("build_corpus.py"))
    builders = sys.modules.setdefault("corpus_builders", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(builders)  # its dataclass looks its module up in sys.modules
    a = np.array([[3, 1], [0, 2], [3, 1], [5, 5], [0, 2], [4, 4]], np.int32)
    out = builders.distinct_rows(a)
    assert out.tolist() == [[3, 1], [0, 2], [5, 5], [4, 4]]
