"""A decoder without a cache is fed its whole context each call, the call before's with that call's pick behind it
(a GPT exported without `past_key_values`: `input_ids [N, T]`, then `[N, T + 1]`); no state is fed back. Its
recorded calls are read as a greedy decoder's (calibration/carried.py `context_pairs`, `token_view`, `decoded_run`;
converter/steps/verify.decoded_budget): split by decode, its logits scored on their last position, the pick, at
--max-loss / L a call, and decoded with the written model's own context. Decoders 56: read one call at a time over
every position, such a GPT was pruned to 1.24x "within 1 pp" and changed 18.8% of 160 held-out decodes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.calibration.carried import causal_lm, context_pairs, follows, token_view, with_context
from onnxprune.calibration.runtime import make_session
from onnxprune.converter.auto.exam import exam_batches
from onnxprune.models import third_party_builders as tb
from tests.calibration.test_greedy_decoding import _Clock, _data_step, inspected, pruned_and_decoded
from tests.oracle import check_full, with_initializers


def _context_calls(sess, prompt: np.ndarray, steps: int, record=None) -> np.ndarray:
    """context_decoder decoding `prompt` [N, S] greedily for `steps` calls, each fed the whole context: its picks
    [N, steps]; each call's feed appended to `record`."""
    ids, picks = prompt, []
    for _ in range(steps):
        if record is not None:
            record.append({"input_ids": ids})
        picks.append(sess.run(["logits"], {"input_ids": ids})[0][:, -1].argmax(-1))
        ids = np.concatenate([ids, picks[-1][:, None].astype(np.int64)], axis=1)
    return np.stack(picks, 1)


def _recorded(model, decodes: int, rows: int = 4, steps: int = 8, seed: int = 0) -> list:
    rng, dense, feeds = np.random.default_rng(seed), make_session(model), []
    for _ in range(decodes):
        _context_calls(dense, rng.integers(0, 12, (rows, 3)).astype(np.int64), steps, feeds)
    return feeds


def _noised(model, scale: float = 0.3, seed: int = 1):
    rng = np.random.default_rng(seed)
    return with_initializers(model, lambda name: name == "fc2.weight",
                             lambda w: w + scale * rng.standard_normal(w.shape).astype(w.dtype))


def test_a_context_that_grows_by_the_call_befores_pick_is_read_as_a_fed_back_token():
    model = tb.context_decoder()
    check_full(model)
    feeds = _recorded(model, 1, steps=3)
    dense = make_session(model)
    first = {"logits": dense.run(["logits"], feeds[0])[0]}
    assert context_pairs(feeds[0], first, feeds[1]) == {"input_ids": "input_ids"}
    assert follows(with_context(first, feeds[0], {"input_ids": "input_ids"}), feeds[1], {"input_ids": "input_ids"})
    assert token_view(feeds[1], {"input_ids": "input_ids"})["input_ids"].shape == (4, 1)
    other = {"input_ids": np.concatenate([feeds[0]["input_ids"], (feeds[1]["input_ids"][:, -1:] + 1) % 12], 1)}
    assert context_pairs(feeds[0], first, other) == {}  # a token behind it that is not the pick
    assert context_pairs(feeds[0], first, {"input_ids": feeds[0]["input_ids"]}) == {}  # not grown
    assert not follows(with_context(first, feeds[0], {"input_ids": "input_ids"}), feeds[0], {"input_ids": "input_ids"})


def test_a_decoder_without_a_cache_is_judged_by_its_picks_at_the_decoded_budget_split_by_decode(tmp_path):
    """60 recorded batches of 4 prompts, 8 calls each, the context grown by the pick: 240 decodes of 8 picks, so
    'logits' is judged at 1 / 8 pp a call on its last position, and the calls go to a side by stream. On the old
    code nothing was read (no state fed back) and 'logits' was judged at 1 pp over every position."""
    model = tb.context_decoder()
    feeds = _recorded(model, 60)
    state = _data_step(tmp_path, model, feeds)
    assert state.decoded_budget["fed_back"] == {"input_ids": "logits"}
    assert (state.decoded_budget["sequences"], state.decoded_budget["length"]) == (240, 8.0)
    assert state.data.output_budgets == {"logits": 0.125} and state.data.last_positions == {"logits"}
    note = next(n for n in state.notes if n.startswith("greedy decoding:"))
    assert "'input_ids' holds the call before's 'input_ids' with the argmax of 'logits' at its last position " \
           "behind it, and the calls of folder 'calls/' (480 files) decode 240 sequences of 8.0 kept picks" in note
    assert "'logits' is judged at --max-loss 1 / 8.0 = 0.125 pp a call" in note
    assert "'logits' is scored on its last position only" in note
    assert "the data's decision part is split by stream (60 streams, each on one side)" in note
    streams = np.repeat(np.arange(60), 8)
    assert np.array_equal(state.data.groups, streams)
    # every evaluator scores the last position: a candidate's loss is the share of deciding calls whose pick
    # changes, as onnxruntime gives it by hand (the other positions changed too, and would count otherwise)
    evaluator = state.data.calibration
    assert "'logits' scored on its last position only" in _rule_words(evaluator)
    noised = _noised(model)
    written, dense = make_session(noised), make_session(model)
    part = list(state.data.reader(part="validation"))
    changed = [(written.run(["logits"], f)[0][:, -1].argmax(-1) != dense.run(["logits"], f)[0][:, -1].argmax(-1))
               for f in part]
    inner = [(written.run(["logits"], f)[0][:, :-1].argmax(-1) != dense.run(["logits"], f)[0][:, :-1].argmax(-1))
             for f in part]
    assert len(part) == sum(1 for k in range(480) if streams[k] % 4 != 0)  # every 4th stream trains
    loss = evaluator.loss_pp(evaluator.evaluate(noised)) * evaluator.loss_factor("logits")  # in pp of 'logits'
    assert loss == pytest.approx(100.0 * np.concatenate(changed).mean(), abs=1e-9)
    assert np.concatenate([c.ravel() for c in inner]).mean() != pytest.approx(np.concatenate(changed).mean())
    # a final exam takes whole decodes: every 3rd deciding stream, its 8 calls, none of them the search's
    exam, rest = exam_batches(evaluator, len(evaluator.reference_all))
    groups = evaluator.reader.feed_groups
    assert len(exam) == 15 * 8 and not set(groups[exam]) & set(groups[rest])


def _rule_words(evaluator) -> str:
    from onnxprune.converter.auto.decide import BudgetRule

    return BudgetRule(evaluator, 1.0)._copied()


def test_a_decoder_without_a_cache_is_decoded_with_its_own_context_as_onnxruntime_does_by_hand(tmp_path):
    result, changed = pruned_and_decoded(tmp_path, tb.context_decoder(), _context_calls, 0.4)
    carried = result.report["carried"]
    assert carried["pairs"] == {"input_ids": "input_ids"} and carried["decoded"]["fed_back"] == {"input_ids": "logits"}
    check_full(onnx.load(tmp_path / "out.onnx"))
    note = next(n for n in result.report["notes"] if n.startswith("greedy decoding:"))
    assert "fed its own context grown by its own picks, the written model decodes " \
           f"{changed} of 32 sequences differently" in note


def test_a_language_model_given_prompts_only_is_said_to_be_judged_one_call_at_a_time(tmp_path):
    """Prompts alone (one .npz of [N, T] ids) show no decode: the run judges every position one call at a time, and a
    note says that a greedy decode's changes compound and how to record its calls. A folder of those calls is read."""
    model = tb.context_decoder()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "prompts.npz", input_ids=np.random.default_rng(0).integers(0, 12, (400, 8)).astype(np.int64))
    state = _data_step_on(tmp_path / "prompts.npz", model)
    assert state.decoded_budget is None
    note = next(n for n in state.notes if n.startswith("greedy decoding:"))
    assert "'input_ids' [N, T] in and 'logits' [N, T, V] out look like a language model fed its whole context each " \
           "call, and no calls of --data decode" in note
    assert "each changed pick changes every call after it" in note and "one .npz file a call in a folder" in note
    calls = _data_step(tmp_path, model, _recorded(model, 60))
    assert not any("look like a language model" in n for n in calls.notes)
    assert causal_lm(model) == ("input_ids", "logits")
    assert causal_lm(tb.greedy_cache_decoder()) is None  # a cache fed back: its calls are its decodes' only form
    tagger = _tagger(model, 5)  # the same shapes, 5 labels a position where the ids read 12 rows: no vocabulary
    assert causal_lm(tagger) is None
    tagged = _data_step_on(tmp_path / "prompts.npz", tagger)
    assert not any("look like a language model" in n for n in tagged.notes)


def _tagger(model, labels: int):
    """context_decoder with `labels` classes a position where it has its vocabulary's (fc2 cut), checked."""
    tagger = with_initializers(model, lambda n: n in ("fc2.weight", "fc2.bias"), lambda w: w[..., :labels].copy())
    tagger.graph.output[0].type.tensor_type.shape.dim[2].dim_value = labels
    check_full(tagger)
    ids = np.array([[1, 2, 3]], np.int64)
    want = make_session(model).run(["logits"], {"input_ids": ids})[0][..., :labels]
    assert np.allclose(make_session(tagger).run(["logits"], {"input_ids": ids})[0], want, atol=1e-6)
    return tagger


def _data_step_on(data, model):
    from onnxprune.converter.steps.base import RunState
    from onnxprune.converter.steps.data import DataConfig, DataStep

    state = RunState(source=model, original=model)
    DataStep(DataConfig(data=data), split=True, small_data=True, budget=1.0).run(state)
    return state


def test_a_context_decoders_calls_the_guard_left_unread_are_split_by_whether_their_context_grows(tmp_path,
                                                                                                monkeypatch):
    """The reading stops at its guard (a second a clock reading, 150 s: 50 of 480 calls run); the later calls'
    contexts are read without the model, a decode starting where the context does not grow: their split is the
    true one where read (the rest in runs, said)."""
    from onnxprune.converter.steps import verify

    model = tb.context_decoder()
    feeds = _recorded(model, 60)
    monkeypatch.setattr(verify, "CARRIED_SECONDS", 150.0)
    monkeypatch.setattr(verify, "time", _Clock())
    state = _data_step(tmp_path, model, feeds)
    note = next(n for n in state.notes if n.startswith("greedy decoding:"))
    assert "the 151 calls past the 50 read were not run: a stream starts where 'input_ids' is not the call before's " \
           "with one token behind it, as at the start of each of the 7 streams of calls read; the 279 calls past the " \
           "201 read in the time (of 480) were not decoded" in note
    assert np.array_equal(state.data.groups[:201], np.repeat(np.arange(60), 8)[:201])


def test_inspect_says_how_to_record_a_language_models_calls_from_its_declared_shapes(tmp_path):
    """`inspect` reads declared shapes only (no onnxruntime, no torch): an integer [N, T] in and a float [N, T, V] out,
    nothing fed back, is said to be a language model fed its whole context, with how to record its calls."""
    text = inspected(tmp_path, tb.context_decoder())
    assert "(the model looks like a language model fed its whole context each call, 'input_ids' [N, T] -> 'logits' " \
           "[N, T, V]: if it generates by greedy decoding, save the calls of a few decodes instead" in text
    assert "each call's 'input_ids' the call before's with its pick appended" in text
