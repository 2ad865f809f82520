"""LAMP: a global number of kept weights, distributed over layers by layer-adaptive scores."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.converter.auto.allocation import global_masks, lamp_scores
from onnxprune.errors import ConfigError


def test_lamp_score_is_the_share_of_the_squared_tail():
    w = np.array([3.0, -1.0, 2.0, 0.5])
    keep = np.ones(4, dtype=bool)
    got = lamp_scores(np.abs(w), keep)
    # ascending 0.5, 1, 2, 3: squares .25, 1, 4, 9 -> tails 14.25, 14, 13, 9
    assert got == pytest.approx([1.0, 1 / 14, 4 / 13, 0.25 / 14.25])
    keep[0] = False  # pruned entries score -1; the strongest survivor scores 1
    assert lamp_scores(np.abs(w), keep).tolist()[0] == -1.0
    assert lamp_scores(np.abs(w), keep)[2] == 1.0


def test_global_masks_keep_the_count_never_regrow_and_never_empty_a_layer():
    rng = np.random.default_rng(0)
    weights = {"big": rng.normal(size=(50, 40)), "flat": np.ones((10, 10)) * 0.01 + rng.random((10, 10)) * 1e-4,
               "small": rng.normal(size=(5, 4))}
    masks = {n: np.ones(w.shape, dtype=bool) for n, w in weights.items()}
    masks["big"][0] = False
    out = global_masks(weights, masks, 300)
    assert sum(int(m.sum()) for m in out.values()) == 300
    assert not out["big"][0].any()  # never regrow
    assert all(m.any() for m in out.values())
    # the layer of tiny but equal weights keeps more than plain global magnitude would (it would keep 1)
    assert out["flat"].sum() > 1
    # within a layer the kept weights are the largest
    kept, gone = np.abs(weights["big"][out["big"]]), np.abs(weights["big"][masks["big"] & ~out["big"]])
    assert kept.min() >= gone.max()


def test_asking_for_more_than_alive_keeps_everything():
    weights = {"a": np.arange(1.0, 7.0).reshape(2, 3)}
    masks = {"a": np.array([[True, False, True], [True, True, True]])}
    assert np.array_equal(global_masks(weights, masks, 100)["a"], masks["a"])


class RowScorer:
    """A criterion ranked within each output row (as Wanda is): scores |w| times a per-input factor."""

    def __init__(self, factor):
        self.factor = factor

    def rescore(self, name, values):
        return np.abs(values) * self.factor[name]

    def axis(self, name):
        return 0


def test_a_row_criterion_keeps_lamps_layer_counts_chosen_per_output_row():
    rng = np.random.default_rng(1)
    weights = {"a": rng.normal(size=(8, 10)), "b": rng.normal(size=(4, 5)) * 3}
    factor = {"a": rng.random(10)[None, :] + 0.1, "b": rng.random(5)[None, :] + 0.1}
    masks = {n: np.ones(w.shape, dtype=bool) for n, w in weights.items()}
    scorer = RowScorer(factor)
    lamp = global_masks({n: np.abs(w) * factor[n] for n, w in weights.items()}, masks, 40)  # LAMP's counts
    out = global_masks(weights, masks, 40, scorer)
    for n, w in weights.items():
        gone = (~out[n]).sum(axis=1)
        assert (gone == gone[0]).all(), n  # every output row gives up the same share
        assert abs(int(out[n].sum()) - int(lamp[n].sum())) < w.shape[0], n  # the layer's count is LAMP's (rounded)
        s = scorer.rescore(n, w)
        for r in range(w.shape[0]):  # within a row the kept score higher than the dropped
            if (~out[n][r]).any():
                assert s[r][out[n][r]].min() >= s[r][~out[n][r]].max()


def test_a_row_count_under_one_weight_a_row_keeps_lamps_own_choice():
    weights = {"a": np.arange(1.0, 13.0).reshape(4, 3)}
    masks = {"a": np.ones((4, 3), dtype=bool)}
    out = global_masks(weights, masks, 1, RowScorer({"a": np.ones((1, 3))}))
    assert int(out["a"].sum()) == 1 and out["a"][3, 2]  # per row it would empty the layer


def test_an_unknown_criterion_is_refused_naming_the_registered_ones():
    from onnxprune.converter.auto.config import AutoConfig

    with pytest.raises(ConfigError, match="'nonesuch' is not one of magnitude, .*wanda"):
        AutoConfig(max_loss=1.0, criterion="nonesuch").validate()
