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
        got.append((h + np.where(pad, noise, 0), *ref[1:]))
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
    if kind == "rel_l2":  # no sample's real positions are near 0: the floor (0.1 of their RMS norm) does not bind
        norms = [np.linalg.norm(d) for _, d in _pairs(ev, got)]
        assert ev.scales[0][:1] == pytest.approx([np.sqrt(np.mean(np.square(norms)))], rel=1e-9)  # real positions only
        assert min(norms) > 0.1 * ev.scales[0][0]
        per_sample = [np.linalg.norm(a - d) / np.linalg.norm(d) for a, d in _pairs(ev, got)]
        want = 1 - float(np.mean(per_sample))
    else:  # real positions whose argmax over D is unchanged: each sample's share, averaged for the figure as the
        # rule averages them (sweep 17: pooled over positions, Whisper's figure read 0.87 pp beside the rule's 0.78)
        same = [(c.argmax(-1) == d.argmax(-1)) for c, d in _pairs(ev, got, flat=False)]
        assert len({len(s) for s in same}) > 1  # samples hold different numbers of real positions
        want = float(np.mean([s.mean() for s in same]))
        per_sample = [1 - s.mean() for s in same]
    assert 0.0 < want < 1.0 and ev.last["last_hidden_state"]["after"] == pytest.approx(want, rel=1e-9)
    np.testing.assert_allclose(BudgetRule(ev, 1.0).values(got)[0][:, 0], per_sample, rtol=1e-6)
    assert np.mean(per_sample) == pytest.approx(1 - ev.last["last_hidden_state"]["after"], rel=1e-6)


def _pairs(ev, got, flat=True):
    """(candidate, dense) states of each sample on its real positions."""
    for b, (cand, ref) in enumerate(zip(got, ev.reference_all)):
        for a, d, m in zip(cand[0], np.asarray(ref[0]), ev.position_masks[b]):
            if not m.any():  # a sample with no real position is no sample
                continue
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


def test_a_mask_of_another_name_is_read_as_padded_ids_and_an_empty_sentence_counts_everywhere():
    feed = tb.masked_encoder_feed(mask_name="segment")
    ev = _evaluator(tb.masked_encoder(mask_name="segment"), feed)
    assert ev.mask_input is None and ev.masked == {0} and ev.padding == "input_ids is 0 at the end of the rows"
    np.testing.assert_array_equal(np.concatenate(ev.position_masks), feed["segment"].astype(bool))
    feed["input_ids"][feed["segment"] == 0] = 3  # padded with a token that also occurs inside rows: the mask's run
    ev = _evaluator(tb.masked_encoder(mask_name="segment"), feed)
    assert ev.padding == "segment is 0 at the end of the rows" and ev.masked == {0}



def test_a_sample_with_no_real_position_is_not_scored_and_the_mask_still_holds_for_the_rest():
    """A sentence with no token (a finished sequence in a decoder's batch) dropped the mask for the whole run, so
    every padded position was scored (sweep 13: a merged GPT-2 decoder, 1.36% held out against a 0.88 bound). It is
    now no sample: the rest keep their mask, and the rule's n counts the samples that hold a real position."""
    model, feed = tb.masked_encoder(), tb.masked_encoder_feed()
    n = len(feed["attention_mask"])
    feed["attention_mask"][[5, 9]] = 0
    ev = _evaluator(model, feed, {"last_hidden_state": "cosine"})  # (the builder's mean pooling divides by 0 there)
    assert ev.masked == {0}
    ev.score(_disturbed(ev, "pad"))  # every padded position moved, the empty sentences' whole states too: no loss
    assert ev.last["last_hidden_state"]["after"] == pytest.approx(1.0, abs=1e-9)
    got = _disturbed(ev, "all")
    ev.score(got)
    cos = _real_positions(ev, got, lambda a, d: a @ d / np.linalg.norm(a) / np.linalg.norm(d))
    assert ev.last["last_hidden_state"]["after"] == pytest.approx(cos, rel=1e-9)
    rule = BudgetRule(ev, 1.0)
    values = rule.values(got)
    assert len(values[0]) == n - 2
    assert 100 * values[0].mean() == pytest.approx(100 * (1 - cos), rel=1e-9)
    assert rule.judge_outputs(ev.reference_all).outputs["last_hidden_state"]["n"] == n - 2


@pytest.mark.parametrize("side,pad", [("end", 0), ("start", 0), ("end", 7)])
def test_padding_is_read_from_the_token_ids_when_the_model_takes_no_mask(side, pad):
    """A Keras tagger without a mask input (sweep 6's slovorez: 58% of positions were id 0): the id that forms one
    run at the end (or start) of the rows is padding, and seq_agreement counts the real positions only."""
    model, feed = tb.padded_tagger(), tb.padded_tagger_feed(side=side, pad=pad)
    ev = _evaluator(model, feed, {"tags": "seq_agreement"})
    assert ev.mask_input is None and ev.masked == {0}
    assert ev.padding == f"chars is {pad} at the {side} of the rows"
    real = feed["chars"] != pad
    np.testing.assert_array_equal(np.concatenate(ev.position_masks), real)
    rng = np.random.default_rng(0)
    got = [(np.array(ref[0]) + rng.normal(0, 2.0, np.shape(ref[0])).astype(np.float32),) for ref in ev.reference_all]
    ev.score(got)
    same = np.array([row[real_row].mean() for g, r, m in zip(got, ev.reference_all, ev.position_masks)
                     for row, real_row in zip(g[0].argmax(-1) == np.asarray(r[0]).argmax(-1), m) if real_row.any()])
    assert 0.0 < same.mean() < 1.0 and ev.last["tags"]["after"] == pytest.approx(same.mean(), rel=1e-9)  # per sample


@pytest.mark.parametrize("case", ["id inside a row", "one final id per row", "no padding", "a row of padding"])
def test_ids_that_are_tokens_are_not_taken_for_padding(case):
    feed = tb.padded_tagger_feed()
    ids = feed["chars"]
    if case == "id inside a row":
        ids[3, 0] = 0  # 0 is also a real character somewhere
    elif case == "one final id per row":  # every word ends with id 2 once (an end mark), no padding
        ids[:] = np.where(ids == 0, 5, ids)
        ids[ids == 2] = 3
        ids[:, -1] = 2
    elif case == "no padding":
        ids[ids == 0] = 4
    else:
        ids[5] = 0
    ev = _evaluator(tb.padded_tagger(), {"chars": ids}, {"tags": "seq_agreement"})
    assert ev.padding is None and ev.masked == frozenset()


def test_the_decision_rule_says_which_positions_are_not_scored():
    model, feed = tb.padded_tagger(), tb.padded_tagger_feed()
    ev = _evaluator(model, feed, {"tags": "seq_agreement"})
    assert BudgetRule(ev, 1.0).statement().endswith("; padding not scored on 'tags': positions where chars is 0 at "
                                                    "the end of the rows")
    ids = feed["chars"].copy()
    ids[ids == 0] = 4
    assert "padding" not in BudgetRule(_evaluator(model, {"chars": ids}, {"tags": "seq_agreement"}), 1.0).statement()


def test_a_decoder_fed_a_past_is_masked_by_the_last_columns_of_its_attention_mask():
    """A KV-cache decoder's attention mask covers past + current tokens, [N, P + S]; its logits cover the current S:
    their mask is the last S columns (sweep 13: the whole mask was dropped, padding scored)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 5)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["logits"], name="head")], "decoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "S", 6]),
         helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, ["N", "P", 5]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "T"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "S", 5])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    n, past, s = 40, 3, 4
    mask = np.ones((n, past + s), np.int64)
    mask[::2, -1] = 0  # half the samples end with a padded position
    ev = Evaluator(open_data({"x": rng.standard_normal((n, s, 6)).astype(np.float32), "attention_mask": mask,
                              "past_key_values.0.key": np.zeros((n, past, 5), np.float32)},
                             model, batch_size=20), {"logits": "rel_l2"}, model)
    assert ev.masked == {0}
    np.testing.assert_array_equal(np.concatenate(ev.position_masks), mask[:, -s:].astype(bool))


def test_an_encoder_decoders_encoder_mask_is_not_applied_to_the_decoders_positions():
    """Sweep 17: T5 (legacy export) and BART (optimum's decoder, `encoder_attention_mask`) had the encoder's mask
    applied to the decoder's logits (its last columns, as a KV-cache decoder's), so which decoder positions were
    scored followed the encoder's padding. Without a cache the mask applies to the encoder's own outputs only."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 5)).astype(np.float32), "W")
    n, t_enc, s = 40, 8, 8  # the same length too: the mask still is the encoder's
    for mask_name in ("attention_mask", "encoder_attention_mask"):
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["decoder_x", "W"], ["logits"]),
             helper.make_node("Identity", ["x"], ["encoder_last_hidden_state"])], "seq2seq",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 6]),
             helper.make_tensor_value_info(mask_name, TensorProto.INT64, ["N", "T"]),
             helper.make_tensor_value_info("decoder_x", TensorProto.FLOAT, ["N", "S", 6])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "S", 5]),
             helper.make_tensor_value_info("encoder_last_hidden_state", TensorProto.FLOAT, ["N", "T", 6])], [w])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        mask = np.ones((n, t_enc), np.int64)
        mask[::2, -3:] = 0
        data = {"x": rng.standard_normal((n, t_enc, 6)).astype(np.float32), mask_name: mask,
                "decoder_x": rng.standard_normal((n, s, 6)).astype(np.float32)}
        ev = Evaluator(open_data(data, model, batch_size=20),
                       {"logits": "rel_l2", "encoder_last_hidden_state": "rel_l2"}, model)
        assert ev.masked == {1}, mask_name
