"""Padding is not scored: an encoder's [N, S, D] states at positions its attention mask marks 0 are left out of
cosine, rel_l2 and seq_agreement, in the Evaluator, the decision rule and the sequential scorer alike (sweep 5:
63% of all-MiniLM-L6-v2's scored positions were padding)."""

import numpy as np
import pytest

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.sampling import SequentialScorer
from onnxprune.converter.auto.decide import BudgetRule
from onnxprune.models import third_party_builders as tb
from tests.oracle import with_initializer


def _evaluator(model, feed, metric=None):
    return Evaluator(open_data(feed, model, batch_size=32), metric, model)


def _disturbed(ev, where: str, scale: float = 0.5, seed: int = 3):
    """The reference's outputs with last_hidden_state moved at the padded positions ('pad'), or everywhere."""
    rng = np.random.default_rng(seed)
    got = []
    for b, ref in enumerate(ev.reference_all):
        h = np.array(ref[0])
        noise = scale * rng.standard_normal(h.shape).astype(h.dtype) * np.abs(h).mean()
        pad = ~ev.position_masks[b][..., None] if where == "pad" else np.ones(h.shape[:2] + (1,), bool)
        got.append((h + np.where(pad, noise, 0), ref[1]))
    return got


def _real_positions(ev, got, fn):
    """fn(candidate, dense) per sample on its real positions, averaged over the samples."""
    return float(np.mean([fn(a, d) for a, d in _pairs(ev, got)]))


def test_the_states_padding_is_not_scored_and_the_rest_is_scored_on_real_tokens_only():
    model, feed = tb.masked_encoder(), tb.masked_encoder_feed()
    ev = _evaluator(model, feed)
    assert ev.mask_input == "attention_mask" and ev.plan["last_hidden_state"] == "cosine"
    assert ev.masked == {0}  # the pooled [N, D] embedding has no positions
    ev.score(_disturbed(ev, "pad"))
    assert ev.last["last_hidden_state"]["after"] == pytest.approx(1.0, abs=1e-9)  # padding moved: no loss
    got = _disturbed(ev, "all")
    ev.score(got)
    cos = _real_positions(ev, got, lambda a, d: a @ d / np.linalg.norm(a) / np.linalg.norm(d))
    assert ev.last["last_hidden_state"]["after"] == pytest.approx(cos, rel=1e-9)
    rule = BudgetRule(ev, 1.0)  # the rule's per-sample losses average to the Evaluator's loss
    assert 100 * rule.values(got)[0].mean() == pytest.approx(100 * (1 - cos), rel=1e-9)


@pytest.mark.parametrize("kind", ["rel_l2", "seq_agreement"])
def test_rel_l2_and_seq_agreement_read_real_positions_only(kind):
    model, feed = tb.masked_encoder(), tb.masked_encoder_feed()
    ev = _evaluator(model, feed, {"last_hidden_state": kind, "sentence_embedding": "cosine"})
    assert ev.masked == {0}
    ev.score(_disturbed(ev, "pad"))
    assert ev.last["last_hidden_state"]["after"] == pytest.approx(1.0, abs=1e-9)
    got = _disturbed(ev, "all", scale=0.3 if kind == "rel_l2" else 2.0)  # rel_l2's figure is floored at 0
    ev.score(got)
    if kind == "rel_l2":
        per_sample = [np.linalg.norm(a - d) / np.linalg.norm(d) for a, d in _pairs(ev, got)]
        want = 1 - float(np.mean(per_sample))
    else:  # real positions whose argmax over D is unchanged: pooled for the figure, a share per sample for the rule
        same = [(c.argmax(-1) == d.argmax(-1)) for c, d in _pairs(ev, got, flat=False)]
        want = float(np.concatenate(same).mean())
        per_sample = [1 - s.mean() for s in same]
    assert 0.0 < want < 1.0 and ev.last["last_hidden_state"]["after"] == pytest.approx(want, rel=1e-9)
    np.testing.assert_allclose(BudgetRule(ev, 1.0).values(got)[0][:, 0], per_sample, rtol=1e-6)


def _pairs(ev, got, flat=True):
    """(candidate, dense) states of each sample on its real positions."""
    for b, (cand, ref) in enumerate(zip(got, ev.reference_all)):
        for a, d, m in zip(cand[0], np.asarray(ref[0]), ev.position_masks[b]):
            a, d = a[m].astype(np.float64), d[m].astype(np.float64)
            yield (a.ravel(), d.ravel()) if flat else (a, d)


def test_a_pruned_model_is_judged_alike_by_the_evaluator_the_rule_and_the_sequential_scorer():
    model, feed = tb.masked_encoder(), tb.masked_encoder_feed()
    ev = _evaluator(model, feed)
    candidate = with_initializer(model, "fc1.weight", lambda w: np.where(np.abs(w) < 0.5, 0, w))
    got = list(ev.run_all(candidate))
    score = ev.score(got)
    assert ev.last["last_hidden_state"]["after"] < 1.0
    measured = SequentialScorer(ev).measure(lambda order: (got[b] for b in order))
    assert measured.complete and measured.value == pytest.approx(100 * score, abs=1e-9)


def test_without_a_mask_input_or_with_an_empty_sentence_every_position_counts():
    feed = tb.masked_encoder_feed(mask_name="segment")
    ev = _evaluator(tb.masked_encoder(mask_name="segment"), feed)
    assert ev.mask_input is None and ev.masked == frozenset()
    feed = tb.masked_encoder_feed()
    feed["attention_mask"][5] = 0  # a sentence with no token: its states would score nothing
    assert _evaluator(tb.masked_encoder(), feed).masked == frozenset()
