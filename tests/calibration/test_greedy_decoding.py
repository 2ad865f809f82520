"""A greedy decoder's calls, recorded in order one file each, are run as it decodes: each model fed its own picks
and states (calibration/carried.py `value_pairs`, `token_pairs`, `decoded_run`; converter/steps/verify.carried_check).
Every other figure judges one call at a time from the input model's tokens, where a changed pick changes every call
after it (real models 53's Keras seq2seq decoder: 0.22 pp of steps changed, 5.9% of held-out words; decoders 54's
GPT with a KV cache: 0.61 pp of positions, 21% of held-out sequences)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune import prune
from onnxprune.calibration.carried import token_pairs, value_pairs
from onnxprune.calibration.runtime import make_session
from onnxprune.converter.steps.verify import decoded_note
from onnxprune.models import third_party_builders as tb
from tests.oracle import with_initializers


def _cache_calls(sess, prompt: np.ndarray, steps: int, record=None, merged: bool = False) -> np.ndarray:
    """greedy_cache_decoder decoding `prompt` [N, S] for `steps` calls, the first with an empty past: its picks
    [N, steps]; each call's feed appended to `record`. `merged`: merged_greedy_cache_decoder as optimum runs it,
    'use_cache_branch' False at the first call, True at the others."""
    ids, past, picks = prompt, np.zeros((len(prompt), 0, 8), np.float32), []
    for t in range(steps):
        feed = {"input_ids": ids, "past": past, **({"use_cache_branch": np.array([t > 0])} if merged else {})}
        if record is not None:
            record.append(feed)
        logits, past = sess.run(["logits", "present"], feed)
        picks.append(logits[:, -1].argmax(-1))
        ids = picks[-1][:, None].astype(np.int64)
    return np.stack(picks, 1)


def _save(folder, feeds) -> None:
    folder.mkdir()
    for k, feed in enumerate(feeds):
        np.savez(folder / f"call{k:04d}.npz", **feed)


def test_a_grown_cache_and_a_fed_back_token_are_read_from_consecutive_calls():
    model = tb.greedy_cache_decoder()
    feeds: list = []
    _cache_calls(make_session(model), np.array([[1, 2, 3], [4, 5, 6]], np.int64), 2, feeds)
    sess = make_session(model)
    first = dict(zip(["logits", "present"], sess.run(["logits", "present"], feeds[0])))
    assert value_pairs(first, feeds[1]) == {"past": "present"}  # [2, 3, 8] out, fed as is; no name pairs them
    assert token_pairs(first, feeds[1]) == {"input_ids": "logits"}  # the argmax at the last position, [N, 1]
    other = {**feeds[1], "input_ids": (feeds[1]["input_ids"] + 1) % 12}
    assert token_pairs(first, other) == {}
    assert value_pairs(first, {**feeds[1], "past": feeds[1]["past"] + 1}) == {}


def pruned_and_decoded(tmp_path, model, calls, sparsity: float) -> tuple:
    """The calls `calls` (a greedy loop by hand: session, prompt, steps, record) makes decoding 8 prompts [4, 3] 8
    picks, saved a file each, `model` pruned on them at `sparsity`: (the run's result, decodes changed by hand), its
    carried check's decoded counts asserted equal to each model decoding every prompt by hand in onnxruntime."""
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 12, (4, 3)).astype(np.int64) for _ in range(8)]
    feeds: list = []
    dense = make_session(model)
    for p in prompts:
        calls(dense, p, 8, feeds)
    _save(tmp_path / "calls", feeds)
    onnx.save(model, tmp_path / "m.onnx")
    result = prune(tmp_path / "m.onnx", output=tmp_path / "out.onnx", data=tmp_path / "calls", sparsity=sparsity)
    written = make_session(onnx.load(tmp_path / "out.onnx"))
    changed = tokens = 0
    for p in prompts:  # by hand: each model decodes every prompt greedily
        a, b = calls(dense, p, 8), calls(written, p, 8)
        changed += int((a != b).any(1).sum())
        tokens += int((a != b).sum())
    decoded = result.report["carried"]["decoded"]
    assert (decoded["sequences"], decoded["tokens"]) == (32, 32 * 8)
    assert (decoded["changed"], decoded["tokens_changed"]) == (changed, tokens)
    assert 0 < changed < 32 and decoded["tokens_changed"] > decoded["one_call_changed"]
    return result, changed


def test_a_decoders_decodes_are_said_to_be_datas_own_or_counted_on_eval_data_as_by_hand(tmp_path):
    """The decoding check's figures are --data's own decodes (a search trains and decides on them), which say
    nothing of other text (decoders 57's L1: a per-call rate of 0.11 pp there, 0.53% on other text, 16.2% of held-out
    decodes changed where about 8% was asked); the note says so, and calls recorded on other text given as
    --eval-data are decoded instead, their counts those of each model decoding those prompts by hand."""
    model, rng = tb.greedy_cache_decoder(), np.random.default_rng(5)
    dense, feeds, other = make_session(model), [], []
    for _ in range(8):
        _cache_calls(dense, rng.integers(0, 6, (4, 3)).astype(np.int64), 8, feeds)  # --data: ids 0-5
    held = [rng.integers(6, 12, (4, 3)).astype(np.int64) for _ in range(8)]  # other text: ids 6-11
    for p in held:
        _cache_calls(dense, p, 8, other)
    _save(tmp_path / "calls", feeds)
    _save(tmp_path / "other", other)
    onnx.save(model, tmp_path / "m.onnx")
    result = prune(tmp_path / "m.onnx", output=tmp_path / "out.onnx", data=tmp_path / "calls",
                   eval_data=tmp_path / "other", sparsity=0.3)
    written = make_session(onnx.load(tmp_path / "out.onnx"))
    changed = sum(int((_cache_calls(dense, p, 8) != _cache_calls(written, p, 8)).any(1).sum()) for p in held)
    decoded = result.report["carried"]["decoded"]
    assert (decoded["sequences"], decoded["changed"]) == (32, changed)
    note = next(n for n in result.report["notes"] if n.startswith("greedy decoding:"))
    assert f"decodes {changed} of 32 sequences differently" in note
    assert "; these are eval_data's decodes (folder 'other/' (64 files)), which no decision of the run read" in note
    result = prune(tmp_path / "m.onnx", output=tmp_path / "own.onnx", data=tmp_path / "calls", sparsity=0.3)
    note = next(n for n in result.report["notes"] if n.startswith("greedy decoding:"))
    assert "; these are data's own decodes (folder 'calls/' (64 files)), and they hold for prompts like those " \
           "recorded: on other text a call's pick may change more often" in note


def test_a_kv_cache_decoder_is_decoded_with_its_own_picks_as_onnxruntime_does_by_hand(tmp_path):
    result, changed = pruned_and_decoded(tmp_path, tb.greedy_cache_decoder(), _cache_calls, 0.3)
    assert result.report["carried"]["pairs"] == {"past": "present"}
    assert result.report["carried"]["decoded"]["fed_back"] == {"input_ids": "logits"}
    note = next(n for n in result.report["notes"] if n.startswith("greedy decoding:"))
    assert "'input_ids' holds the argmax of 'logits'" in note and f"decodes {changed} of 32 sequences" in note
    assert "more than --max-loss" not in note  # no budget asked
    said = decoded_note(result.report["carried"], 1.0)  # with --max-loss 1 the share of sequences is over it
    assert f"{100 * changed / 32:.1f}% of sequences is more than --max-loss 1 as a share" in said
    assert "`--max-loss logits=L`" in said


def _rnn_calls(sess, h0: np.ndarray, prompt: np.ndarray, steps: int, record=None, state=("h", "h_out")) -> np.ndarray:
    """greedy_rnn_step from state `h0` [N, H]: the prompt's tokens [N, S] forced, then its own picks, `steps` calls in
    all; returns the picks it keeps (those of the calls from the last prompt token on) [N, steps - S + 1]."""
    h, picks, tok = h0, [], prompt[:, 0]
    for t in range(steps):
        feed = {"prev_token": tok, state[0]: h}
        if record is not None:
            record.append(feed)
        logits, h = sess.run(["logits", state[1]], feed)
        pick = logits.argmax(-1).astype(np.int64)
        if t >= prompt.shape[1] - 1:
            picks.append(pick)
        tok = prompt[:, t + 1] if t + 1 < prompt.shape[1] else pick
    return np.stack(picks, 1)


def _unprompted_calls(dense, rng, streams: int) -> list:
    """The calls of `streams` greedy_rnn_step streams of 8 calls, each from a random state [4, 8] and token 0."""
    feeds: list = []
    for _ in range(streams):
        _rnn_calls(dense, rng.standard_normal((4, 8)).astype(np.float32), np.zeros((4, 1), np.int64), 8, feeds)
    return feeds


def _prompts(dense, seed: int, length: int, own_rows=(), state=("h", "h_out")) -> list:
    """Ten (h0 [4, 8], prompt [4, length]) starts whose prompt tokens are never the input model's pick after the
    token before, but in `own_rows`, where they are its picks from the second token on."""
    rng, starts = np.random.default_rng(seed), []
    for _ in range(10):
        h0 = rng.standard_normal((4, 8)).astype(np.float32)
        prompt = rng.integers(0, 12, (4, length)).astype(np.int64)
        h = h0
        for t in range(length - 1):
            logits, h = dense.run(["logits", state[1]], {"prev_token": prompt[:, t], state[0]: h})
            top = logits.argmax(-1)
            prompt[:, t + 1] = np.where(prompt[:, t + 1] == top, (top + 1) % 12, prompt[:, t + 1])
            prompt[list(own_rows), t + 1] = top[list(own_rows)]
        starts.append((h0, prompt))
    return starts


def _pruned_on_calls(tmp_path, model, feeds):
    """The calls saved a file each, `model` pruned on them (--sparsity 0.5): the run and the written model's session."""
    _save(tmp_path / "calls", feeds)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = prune(path, output=tmp_path / "out.onnx", data=tmp_path / "calls", sparsity=0.5)
    return result, make_session(onnx.load(tmp_path / "out.onnx"))


def _decoded_by_hand(dense, written, starts, calls: int, state=("h", "h_out")) -> tuple[int, int]:
    """(sequences, tokens) the written model decodes differently from the input model, each from (h0, prompt)."""
    changed = tokens = 0
    for h0, prompt in starts:
        a, b = _rnn_calls(dense, h0, prompt, calls, state=state), _rnn_calls(written, h0, prompt, calls, state=state)
        changed += int((a != b).any(1).sum())
        tokens += int((a != b).sum())
    return changed, tokens


@pytest.mark.parametrize("state", [("h", "h_out"), ("state_in", "gru")])
def test_a_batch_first_step_decoder_recorded_a_file_a_call_is_decoded_past_its_forced_prompt(tmp_path, state):
    """Files of stacked samples (every input leads with the batch) are read as samples; a folder of them in call
    order is still a decoder's calls: each file is one call here, the state paired by its names or, where they pair
    by no word (tf2onnx's Keras GRU step: 'state_in' -> 'gru'), by its values in the second file. A prompt's tokens
    (not the input model's picks) stay forced; the picks fed back from the last of them on are the model's own."""
    model = tb.greedy_rnn_step(state=state)
    dense = make_session(model)
    starts = _prompts(dense, 1, 3, state=state)  # a prompt token that is the input model's pick reads as fed back
    feeds: list = []
    for h0, prompt in starts:
        _rnn_calls(dense, h0, prompt, 9, feeds, state)
    forced_picks = [feeds[k]["prev_token"] for k in range(len(feeds)) if k % 9 in (1, 2)]
    result, written = _pruned_on_calls(tmp_path, model, feeds)
    carried = result.report["carried"]
    assert carried["pairs"] == {state[0]: state[1]} and carried["streams"] == 10 and carried["feeds"] == 90
    decoded = carried["decoded"]
    assert decoded["fed_back"] == {"prev_token": "logits"}
    changed, tokens = _decoded_by_hand(dense, written, starts, 9, state)
    assert len(forced_picks) == 20 and (decoded["sequences"], decoded["tokens"]) == (40, 40 * 7)
    assert (decoded["changed"], decoded["tokens_changed"]) == (changed, tokens) and changed > 0


def test_shuffled_calls_are_said_to_measure_nothing_decoded(tmp_path):
    """The same calls in another order: no file holds the state the call before gave; nothing is decoded."""
    model = tb.greedy_rnn_step()
    dense = make_session(model)
    rng = np.random.default_rng(2)
    feeds = _unprompted_calls(dense, rng, 6)
    _save(tmp_path / "calls", [feeds[k] for k in rng.permutation(len(feeds))])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = prune(path, output=tmp_path / "out.onnx", data=tmp_path / "calls", sparsity=0.5)
    assert "decoded" not in (result.report.get("carried") or {})
    note = next(n for n in result.report["notes"] if n.startswith("carried state:"))
    assert "record consecutive calls of a stream, one feed a file in order" in note


@pytest.mark.parametrize("rows", [[4, 4, 3], [4]])
def test_files_of_unequal_rows_or_one_file_are_no_calls(tmp_path, rows):
    from onnxprune.calibration.carried import call_files

    folder = tmp_path / "f"
    folder.mkdir()
    for k, n in enumerate(rows):
        np.savez(folder / f"c{k}.npz", prev_token=np.zeros(n, np.int64), h=np.zeros((n, 8), np.float32))
    assert call_files(folder, {"prev_token", "h"}) is None


def _merged_calls(sess, prompt: np.ndarray, steps: int, record=None) -> np.ndarray:
    return _cache_calls(sess, prompt, steps, record, merged=True)


def test_a_merged_decoders_calls_with_their_one_value_flag_are_decoded_as_the_other_forms(tmp_path):
    """Optimum's merged form: 'use_cache_branch' [1] holds one value a file beside the stacked rows, so the folder
    is read a sample a feed (readers._shared_folder_reader); its files in order are still the decoder's calls, each
    one call here, the flag as recorded (decoders 54's merged GPT had no decoding note)."""
    model = tb.merged_greedy_cache_decoder()
    onnx.checker.check_model(model, full_check=True)
    dense = make_session(model)
    plain = make_session(tb.greedy_cache_decoder())
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, 12, (4, 3)).astype(np.int64) for _ in range(8)]
    feeds: list = []
    for p in prompts:  # the merged form decodes as the plain one it merges
        assert np.array_equal(_merged_calls(dense, p, 8, feeds), _cache_calls(plain, p, 8))
    _save(tmp_path / "calls", feeds)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = prune(path, output=tmp_path / "out.onnx", data=tmp_path / "calls", sparsity=0.3)
    carried = result.report["carried"]
    assert carried["pairs"] == {"past": "present"} and carried["streams"] == 8 and carried["feeds"] == 64
    decoded = carried["decoded"]
    assert decoded["fed_back"] == {"input_ids": "logits"}
    written = make_session(onnx.load(tmp_path / "out.onnx"))
    changed = tokens = 0
    for p in prompts:
        a, b = _merged_calls(dense, p, 8), _merged_calls(written, p, 8)
        changed += int((a != b).any(1).sum())
        tokens += int((a != b).sum())
    assert (decoded["sequences"], decoded["tokens"]) == (32, 32 * 8)
    assert (decoded["changed"], decoded["tokens_changed"]) == (changed, tokens) and changed > 0
    assert any(n.startswith("greedy decoding:") for n in result.report["notes"])


def test_a_kv_cache_decoders_shuffled_calls_are_said_to_measure_nothing_decoded(tmp_path):
    """A cache that grows pairs by no name rule in a call and shuffled calls hold no output of the call before:
    the model's declared cache ('past' -> 'present', open on its length) is said, with how to record the calls
    (decoders 54's GPT on shuffled calls said nothing, L2)."""
    model = tb.greedy_cache_decoder()
    dense = make_session(model)
    rng = np.random.default_rng(4)
    feeds: list = []
    for _ in range(8):
        _cache_calls(dense, rng.integers(0, 12, (4, 3)).astype(np.int64), 8, feeds)
    order = [8 * d + t for t in range(8) for d in range(8)]  # by step: each call after another decode's same step
    _save(tmp_path / "calls", [feeds[k] for k in order])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = prune(path, output=tmp_path / "out.onnx", data=tmp_path / "calls", sparsity=0.3)
    assert "carried" not in result.report or not result.report["carried"]
    note = next(n for n in result.report["notes"] if n.startswith("carried state:"))
    assert "'present' as 'past' (a cache that grows)" in note and "the argmax of 'logits' as 'input_ids'" in note
    assert "holds an output of the call before (of 8 read of 64)" in note
    assert "record consecutive calls of a few decodes, one feed a file in order" in note, note


def _renamed(model: onnx.ModelProto, names: dict[str, str]) -> onnx.ModelProto:
    """`model` with its graph inputs and outputs renamed (`names`), every node reading or writing them too."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in list(out.graph.input) + list(out.graph.output):
        vi.name = names.get(vi.name, vi.name)
    for n in out.graph.node:
        n.input[:] = [names.get(i, i) for i in n.input]
        n.output[:] = [names.get(o, o) for o in n.output]
    return out


def test_inspect_names_a_decoders_cache_its_state_and_its_fed_back_token_from_declared_shapes(tmp_path):
    """`inspect` reads names and declared shapes only (no onnxruntime, no torch): a cache that grows (Hugging Face's
    'past_key_values.0.key' -> 'present.0.key', the GPT exports of decoders 54), a state its names do not pair
    (tf2onnx's Keras GRU step 'state_in' -> 'gru') and the token a greedy decoder feeds back are said, with how to
    record the calls; a model with an integer input but nothing fed back (a classifier of ids) gets no such line."""
    from onnxprune.calibration.carried import declared_feedback

    hf = _renamed(tb.greedy_cache_decoder(), {"past": "past_key_values.0.key", "present": "present.0.key"})
    onnx.checker.check_model(hf, full_check=True)
    feed = {"input_ids": np.array([[1, 2], [3, 4]], np.int64), "past_key_values.0.key": np.zeros((2, 0, 8), np.float32)}
    assert make_session(hf).run(["present.0.key"], feed)[0].shape == (2, 2, 8)
    found = declared_feedback(hf)
    assert found["caches"] == {"past_key_values.0.key": "present.0.key"} and found["tokens"] == {"input_ids": "logits"}
    assert declared_feedback(tb.merged_greedy_cache_decoder())["caches"] == {"past": "present"}
    keras = declared_feedback(tb.greedy_rnn_step(state=("state_in", "gru")))
    assert keras["shaped"] == {"state_in": "gru"} and keras["tokens"] == {"prev_token": "logits"}
    step = declared_feedback(tb.stacked_cache_step())  # 'cache' [L, N, 'P', D] -> 'new_cache' [L, N, 'P1', D]
    assert step["caches"] == {"cache": "new_cache"} and step["tokens"] == {"token": "probs"}
    assert declared_feedback(tb.chunk_sequence_vad())["states"] == {"h": "hn", "c": "cn"}  # one shape: states
    assert declared_feedback(tb.streaming_vad())["tokens"] == {}  # a state, no token
    ids = _renamed(tb.stacked_cache_step(), {})  # a token with nothing fed back is no decoder's: cut the cache out
    del ids.graph.output[1:]
    assert not any(declared_feedback(ids).values())
    for model in (tb.regressor(), tb.flat_autoencoder()):
        assert not any(declared_feedback(model).values())
    text = inspected(tmp_path, hf)
    assert ("the model looks like a decoder: it feeds back 'present.0.key' as 'past_key_values.0.key' (a cache that "
            "grows), the argmax of 'logits' as 'input_ids' (a greedy decoder's token, if it decodes so) on its next "
            "call") in text
    assert "a folder of one .npz file a call in order" in text


def inspected(tmp_path, model: onnx.ModelProto) -> str:
    """`onnxprune inspect`'s output on `model`, its whitespace runs one space, run in a fresh process that must not
    import onnxruntime or torch."""
    import subprocess
    import sys

    path = tmp_path / "inspected.onnx"
    onnx.save(model, path)
    code = ("import sys; from click.testing import CliRunner; from onnxprune.converter.cli import cli; "
            f"print(CliRunner().invoke(cli, ['inspect', {str(path)!r}]).output); "
            "assert 'onnxruntime' not in sys.modules and 'torch' not in sys.modules, "
            "[m for m in ('onnxruntime', 'torch') if m in sys.modules]")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return " ".join(run.stdout.split())


def test_a_prompts_last_tokens_that_are_the_input_models_picks_stay_forced(tmp_path):
    """A batch's prompts stepped in together: where a row's last prompt tokens happen to be the input model's picks,
    the call is still forced in every row (another row's token there is no pick), so the decoded picks counted are
    the generated ones and the written model is fed the prompt there, as a decoder does (decoders 54's L4: the GPT
    step counted 1,752 decoded picks for 80 sequences of 20)."""
    model = tb.greedy_rnn_step()
    dense = make_session(model)
    starts = _prompts(dense, 5, 4, own_rows=[0])  # row 0's prompt is the input model's picks from its second token
    feeds: list = []
    for h0, prompt in starts:
        _rnn_calls(dense, h0, prompt, 10, feeds)
    result, written = _pruned_on_calls(tmp_path, model, feeds)
    decoded = result.report["carried"]["decoded"]
    changed, tokens = _decoded_by_hand(dense, written, starts, 10)  # the prompt forced in every row, then own picks
    assert (decoded["sequences"], decoded["tokens"]) == (40, 40 * 7)  # 7 kept picks a row, from the last prompt token
    assert (decoded["changed"], decoded["tokens_changed"]) == (changed, tokens) and changed > 0


class _Clock:
    """A clock for verify's carried check: each reading one second after the last (every call of the input model
    costs a second), anything else as the time module has it."""

    def __init__(self):
        import time

        self.now, self.time = 0.0, time

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now

    def __getattr__(self, name):
        return getattr(self.time, name)


def test_the_time_guard_counts_the_decoded_passes(tmp_path, monkeypatch):
    """With a token fed back the check runs the written model twice more (one call at a time and decoded): six
    passes over the feeds, not four. At a second a call and 70 s, four passes would read all 16 calls (4 x 17 = 68);
    six stop after 11 (6 x 12 = 72 > 70), and the note says so (decoders 54's L5: up to 1.5x its time)."""
    from onnxprune.converter.steps import verify

    model = tb.greedy_rnn_step()
    dense = make_session(model)
    feeds = _unprompted_calls(dense, np.random.default_rng(6), 2)
    _save(tmp_path / "calls", feeds)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    monkeypatch.setattr(verify, "CARRIED_SECONDS", 70.0)
    monkeypatch.setattr(verify, "time", _Clock())
    result = prune(path, output=tmp_path / "out.onnx", data=tmp_path / "calls", sparsity=0.5)
    carried = result.report["carried"]
    assert (carried["read"], carried["of"]) == (11, 16) and carried["decoded"]["fed_back"] == {"prev_token": "logits"}
    note = next(n for n in result.report["notes"] if n.startswith("carried state:"))
    assert "(the first 11 of 16 read in its time)" in note


def test_a_keras_input_named_input_n_is_no_state_by_its_shape_alone():
    """tf2onnx names a Keras model's inputs 'input_2', 'input_3': real models 53's g2p_id LSTM decoder feeds back the
    one-hot of its pick as 'input_2' [N, T, 32], the shape of its softmax 'dense', but not 'dense' as it is; a
    generic input name is no evidence of a state (the shaped rule needs 'state', 'in', 'prev', ...)."""
    from onnx import TensorProto, helper

    from onnxprune.calibration.carried import declared_feedback

    def io(name, dims):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    graph = helper.make_graph([helper.make_node("Identity", ["input_2"], ["dense"]),
                               helper.make_node("Identity", ["state_in"], ["gru"])], "g",
                              [io("input_2", ["a", "b", 32]), io("state_in", ["c", 96])],
                              [io("dense", ["d", "e", 32]), io("gru", ["f", 96])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    assert declared_feedback(model)["shaped"] == {"state_in": "gru"}


def test_a_greedy_decoders_budget_bounds_its_decodes_by_the_length_of_its_recorded_decodes(tmp_path):
    """--max-loss 1 on a greedy decoder's recorded calls judges its fed-back output at 1 / L pp a call, L the kept
    picks of a recorded decode (8 here): a decode changes where a call on the input model's history first changes
    its pick, so the share of decodes that change is at most about L times the share of calls that do (decoders 54:
    within 1 pp a call, 3.9-24.4% of held-out decodes changed). --max-loss logits=1 keeps the per-call judgement."""
    model = tb.greedy_cache_decoder()
    rng, dense, feeds = np.random.default_rng(0), make_session(model), []
    for _ in range(60):  # 240 decodes of 8 picks: 1,440 decision samples certify 0.125 pp (799 would)
        _cache_calls(dense, rng.integers(0, 12, (4, 3)).astype(np.int64), 8, feeds)
    _save(tmp_path / "calls", feeds)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    held = [np.random.default_rng(1).integers(0, 12, (4, 3)).astype(np.int64) for _ in range(100)]

    def decodes_changed(out) -> int:  # of the 400 held-out prompts, decoded 8 picks by both models by hand
        written = make_session(onnx.load(out))
        return sum(int((_cache_calls(dense, p, 8) != _cache_calls(written, p, 8)).any(1).sum()) for p in held)

    result = prune(path, output=tmp_path / "out.onnx", data=tmp_path / "calls", max_loss=1.0)
    assert result.report["budget"]["by_output"] == {"logits": 0.125}
    note = next(n for n in result.report["notes"] if n.startswith("greedy decoding: 'input_ids' holds the argmax of "
                                                                     "'logits' of the call before, and the calls"))
    assert "decode 240 sequences of 8.0 kept picks on average" in note and "= 0.125 pp a call" in note
    stopped = next(n for n in result.report["notes"] if n.startswith("what stopped the search"))
    assert "logits=0.125" in stopped  # the search itself was judged so
    # split by stream (decoders 55b), its 15 training streams refit nothing within 0.125 pp: the input model is kept,
    # and a kept model has no carried check (split by feed it was 1.01x)
    decoded = result.report.get("carried", {}).get("decoded") or {"sequences": 240, "changed": 0}
    assert decoded["sequences"] == 240 and decodes_changed(tmp_path / "out.onnx") <= 4
    per_call = prune(path, output=tmp_path / "call.onnx", data=tmp_path / "calls", max_loss=1.0,
                     output_budgets={"logits": 1.0})
    assert per_call.report["budget"]["by_output"] == {"logits": 1.0}
    assert any("'logits' keeps its own --max-loss logits=1" in n or "'logits' keeps its own output_budgets" in n
               for n in per_call.report["notes"])
    assert per_call.report["carried"]["decoded"]["changed"] > decoded["changed"]


def _lstm_step(x, h, c, w, r, b):
    """numpy: one LSTM step as ONNX computes it (gates i, o, f, c; no peepholes)."""
    z = x @ w.T + h @ r.T + b[: len(b) // 2] + b[len(b) // 2:]
    i, o, f, g = np.split(z, 4, axis=-1)
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    c = sig(f) * c + sig(i) * np.tanh(g)
    return sig(o) * np.tanh(c), c


def test_inspect_names_a_keras_decoders_lstm_states_by_its_node_and_its_one_hot_token_by_its_width(tmp_path):
    """Decoders 54b's L4: real models 53's g2p_id Keras decoder declares 'input_2' [N, T, 32] (the one-hot of its
    last pick), 'input_3', 'input_4' [N, 256] -> 'dense' [N, T, 32], 'lstm_1', 'lstm_1_1' [N, 256]: two states of one
    shape whose names pair by no word, and a float token, so `inspect` named nothing. The states are read from the
    graph instead (an LSTM's initial_h / initial_c fed from the inputs, its Y_h / Y_c reaching the outputs), and a
    float input of the width of the one other float output beside them as its pick fed back one-hot."""
    from click.testing import CliRunner

    from onnxprune.calibration.carried import declared_feedback
    from onnxprune.converter.cli import cli

    model = tb.keras_onehot_lstm_decoder()
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(0)
    x = np.eye(6, dtype=np.float32)[rng.integers(0, 6, (3, 1))]
    h, c = rng.standard_normal((2, 3, 5)).astype(np.float32)
    dense, h1, c1 = make_session(model).run(["dense", "lstm_1", "lstm_1_1"], {"input_2": x, "input_3": h, "input_4": c})
    w = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    hh, cc = _lstm_step(x[:, 0], h, c, w["W0"][0], w["R0"][0], w["B0"][0])
    logits = hh @ w["dense.weight"] + w["dense.bias"]
    want = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert np.allclose(h1, hh, atol=1e-5) and np.allclose(c1, cc, atol=1e-5)
    assert np.allclose(dense[:, 0], want, atol=1e-5)
    found = declared_feedback(model)
    assert found["cells"] == {"input_3": "lstm_1", "input_4": "lstm_1_1"} and found["one_hot"] == {"input_2": "dense"}
    assert found["states"] == found["shaped"] == found["tokens"] == {}
    swapped = onnx.ModelProto()  # h and c read the other way: the node says which output each one is fed
    swapped.CopyFrom(model)
    lstm = next(n for n in swapped.graph.node if n.op_type == "LSTM")
    lstm.input[5], lstm.input[6] = lstm.input[6], lstm.input[5]
    assert declared_feedback(swapped)["cells"] == {"input_4": "lstm_1", "input_3": "lstm_1_1"}
    path = tmp_path / "dec.onnx"
    onnx.save(model, path)
    run = CliRunner().invoke(cli, ["inspect", str(path)])
    assert run.exit_code == 0, run.output
    text = " ".join(run.output.split())
    assert ("it feeds back 'lstm_1' as 'input_3' (a state: the recurrent node's initial state and its last), "
            "'lstm_1_1' as 'input_4' (a state: the recurrent node's initial state and its last), the one-hot of the "
            "argmax of 'dense' as 'input_2'") in text


def _one_hot_calls(sess, h0: np.ndarray, start: np.ndarray, steps: int, record=None) -> np.ndarray:
    """keras_onehot_lstm_decoder decoding from state h0 (its c too) and `start` ids [N]: each call fed the one-hot of
    the last pick [N, 1, 6]; its picks [N, steps]."""
    h, c, tok, out = h0, h0, start, []
    for _ in range(steps):
        feed = {"input_2": np.eye(6, dtype=np.float32)[tok][:, None], "input_3": h, "input_4": c}
        if record is not None:
            record.append(feed)
        probs, h, c = sess.run(["dense", "lstm_1", "lstm_1_1"], feed)
        tok = probs[:, -1].argmax(-1)
        out.append(tok)
    return np.stack(out, 1)


def test_a_decoder_fed_the_one_hot_of_its_pick_is_decoded_with_its_own_picks(tmp_path):
    """The one-hot of the pick (a float [N, 1, V] input) is a fed-back token too: the written model is fed the
    one-hot of its own pick where the input model's was fed, and the note's counts equal decoding by hand."""
    model = tb.keras_onehot_lstm_decoder()
    dense, rng, feeds, starts = make_session(model), np.random.default_rng(3), [], []
    for _ in range(10):
        starts.append((rng.standard_normal((4, 5)).astype(np.float32), rng.integers(0, 6, 4)))
        _one_hot_calls(dense, *starts[-1], 6, feeds)
    result, written = _pruned_on_calls(tmp_path, model, feeds)
    carried = result.report["carried"]
    assert carried["pairs"] == {"input_3": "lstm_1", "input_4": "lstm_1_1"} and carried["streams"] == 10
    decoded = carried["decoded"]
    assert decoded["fed_back"] == {"input_2": "dense"} and (decoded["sequences"], decoded["tokens"]) == (40, 240)
    a = [_one_hot_calls(dense, h0, s, 6) for h0, s in starts]
    b = [_one_hot_calls(written, h0, s, 6) for h0, s in starts]
    changed = sum(int((x != y).any(1).sum()) for x, y in zip(a, b))
    assert (decoded["changed"], decoded["tokens_changed"]) == (changed, sum(int((x != y).sum()) for x, y in zip(a, b)))
    assert changed > 0


def _step_calls(sess, token: np.ndarray, steps: int, record=None) -> np.ndarray:
    """stacked_cache_step(dim=8) decoding greedily from `token` [N] with an empty cache for `steps` calls: its picks
    [N, steps]; each call's feed appended to `record`."""
    cache, picks = np.zeros((2, len(token), 0, 8), np.float32), []
    for _ in range(steps):
        feed = {"token": token, "cache": cache}
        if record is not None:
            record.append(feed)
        probs, cache = sess.run(["probs", "new_cache"], feed)
        token = probs.argmax(-1).astype(np.int64)
        picks.append(token)
    return np.stack(picks, 1)


def _hotter(model: onnx.ModelProto, factor: float) -> onnx.ModelProto:
    """The model with its last layer (fc2, before the Softmax) scaled by `factor`: every probability moves, no
    argmax does."""
    return with_initializers(model, lambda name: name.startswith("fc2"), lambda w: w * factor)


def test_a_decoders_probabilities_are_held_to_the_runs_budget_and_only_its_picks_to_the_decoded_one():
    """A decode changes only where a pick changes, so a greedy decoder's `prob` output holds its class-change part to
    --max-loss / L and its probability part to --max-loss (decoders 55's L4): a candidate whose probabilities move
    0.75 pp and whose picks do not is within 1 pp with 'probs' at 0.25 pp a call, by the rule, the Evaluator's loss
    and the sequential scorer alike; one whose picks move is not."""
    from onnxprune.calibration.metrics import Evaluator
    from onnxprune.calibration.readers import open_data
    from onnxprune.calibration.sampling import SequentialScorer
    from onnxprune.converter.auto.decide import BudgetRule

    model, rng = tb.stacked_cache_step(), np.random.default_rng(0)
    feed = {"token": rng.integers(0, 12, 1200).astype(np.int64),
            "cache": rng.standard_normal((2, 1200, 3, 4)).astype(np.float32)}
    ev = Evaluator(open_data(feed, model), None, model, budget=1.0, output_budgets={"probs": 0.25})
    assert ev.plan == {"probs": "prob", "new_cache": "rel_l2"}
    hot = _hotter(model, 1.05)
    whole = BudgetRule(ev, 1.0).judge(hot)  # the output held to 0.25 pp whole: its probabilities are over it
    assert not whole.within and whole.outputs["probs"]["part"] == "probability change"
    moved = whole.outputs["probs"]["loss_pp"]
    assert 0.5 < moved < 0.9
    ev.held_parts = {"probs": (0,)}  # what Data.own_budget gives a greedy decoder's `prob` output
    decision = BudgetRule(ev, 1.0).judge(hot)
    probs = decision.outputs["probs"]
    assert decision.within and probs["part"] == "probability change" and probs["part_budget_pp"] == 1.0
    assert ev.part_factors == ((0.25, 1.0), 1.0)
    assert decision.loss_pp == pytest.approx(moved) and probs["loss_pp"] == pytest.approx(moved)
    assert ev.loss_pp(ev.evaluate(hot)) == pytest.approx(moved)  # in pp of the run's budget: as itself
    outputs = list(ev.run_all(hot))
    scorer = SequentialScorer(ev)
    measured = scorer.measure(lambda order: [outputs[b] for b in order], 1.0, stop_known=False, estimate=False)
    assert measured.loss_pp == pytest.approx(moved) and scorer.within(measured, 1.0)
    # picks that change: held to 0.25 pp, not to 1 pp
    noisy = onnx.ModelProto()
    noisy.CopyFrom(model)
    for t in noisy.graph.initializer:
        if t.name == "fc2.weight":
            w = onnx.numpy_helper.to_array(t)
            noise = np.random.default_rng(1).standard_normal(w.shape).astype(np.float32)
            t.CopyFrom(onnx.numpy_helper.from_array(w + 0.02 * np.abs(w).mean() * noise, t.name))
    bad = BudgetRule(ev, 1.0).judge(noisy)
    changed = bad.outputs["probs"]
    assert not bad.within and changed["part"] == "changed" and 0 < changed["changed"] < 12  # under 1% of 1,200
    assert bad.loss_pp == pytest.approx(changed["loss_pp"] / 0.25)


def test_a_greedy_decoders_probabilities_do_not_hold_back_its_search_beyond_what_its_decodes_need(tmp_path):
    """End to end: a stacked-cache step's recorded decodes (240 of 8 picks) at --max-loss 1: 'probs' is judged at
    0.125 pp a call on its picks and 1 pp on its probabilities (said in the note), so the search goes past the 1.01x
    that holding its probabilities to 0.125 pp gave, and the held-out decodes stay within 1%."""
    model = tb.stacked_cache_step(dim=8)
    dense, rng, feeds = make_session(model), np.random.default_rng(0), []
    for _ in range(60):
        _step_calls(dense, rng.integers(0, 12, 4).astype(np.int64), 8, feeds)
    _save(tmp_path / "calls", feeds)
    onnx.save(model, tmp_path / "m.onnx")
    result = prune(tmp_path / "m.onnx", output=tmp_path / "out.onnx", data=tmp_path / "calls", max_loss=1.0)
    assert result.report["budget"]["by_output"] == {"probs": 0.125}
    note = next(n for n in result.report["notes"] if n.startswith("greedy decoding: 'token' holds the argmax of "
                                                                     "'probs' of the call before, and the calls"))
    assert "= 0.125 pp a call (its picks; its probability change at 1 pp)" in note
    assert result.report["compression"] > 1.15
    written, held = make_session(onnx.load(tmp_path / "out.onnx")), np.random.default_rng(1)
    tokens = [held.integers(0, 12, 4).astype(np.int64) for _ in range(100)]
    assert sum(int((_step_calls(dense, t, 8) != _step_calls(written, t, 8)).any(1).sum()) for t in tokens) <= 4


def test_a_decoders_stacked_calls_are_split_by_decode_and_the_decision_part_grown_to_certify_its_budget(tmp_path):
    """Files of 4 stacked rows a call, 720 decodes of 14 calls (12 kept picks: 'logits' at 1 / 12 pp a call, which
    1,199 decision samples certify). Split by row, --validation's tenth held 1,008 of the 10,080 rows, cut from every
    decode's calls (the others of each decode trained on), and the search fell back to one shot without retraining
    (decoders 55's L6). Now each decode is on one side, and every 8th decode decides: 1,260 rows, so it retrains."""
    from onnxprune.calibration.carried import follows
    from onnxprune.calibration.readers import open_data
    from onnxprune.converter.steps.verify import _decodes

    model = tb.greedy_rnn_step()
    dense, feeds = make_session(model), []
    for seed in range(18):
        for h0, prompt in _prompts(dense, 100 + seed, 3):
            _rnn_calls(dense, h0, prompt, 14, feeds)
    _save(tmp_path / "calls", feeds)
    onnx.save(model, tmp_path / "m.onnx")
    # the split: a decode's rows all on one side (decodes by the calls that follow one another, as the run reads them)
    outs = [dict(zip(["logits", "h_out"], dense.run(["logits", "h_out"], f))) for f in feeds]
    after = [k > 0 and follows(outs[k - 1], feeds[k], {"h": "h_out"}) for k in range(len(feeds))]
    groups = _decodes(after, 4)
    assert len(groups) == 10080 and len(set(groups.tolist())) == 720
    part = open_data(tmp_path / "calls", model).part(8, True, groups=groups, unit="decode")
    got = np.concatenate([f["h"] for f in part])
    rows = np.concatenate([f["h"] for f in feeds])
    assert part.num_samples == 1260 and np.array_equal(got, rows[groups % 8 == 0])
    result = prune(tmp_path / "m.onnx", output=tmp_path / "out.onnx", data=tmp_path / "calls", max_loss=1.0)
    note = next(n for n in result.report["notes"] if n.startswith("greedy decoding: 'prev_token' holds the argmax"))
    assert "= 0.0833 pp a call" in note
    assert "split by decode (720 decodes, each on one side), every 8th decode deciding so that 1,260 calls' rows " \
           "decide where validation's share held fewer than the 1,199 the budget needs" in note  # the API's words
    assert not any("the one-shot search ran" in n for n in result.report["notes"])
    assert any(n.startswith("recovery by reconstruct (no labels and 8820 training samples") for n in
               result.report["notes"])  # the search retrains, on the other 630 decodes


def test_a_decoders_calls_read_as_they_are_are_split_by_stream(tmp_path):
    """A KV-cache decoder's calls (a file each, the cache growing: feeds used as they are) split a stream of calls
    to a side: 60 streams of 8 calls, every 3rd stream's 8 calls decide, none of their calls trained on."""
    from onnxprune.calibration.readers import open_data
    from onnxprune.converter.steps.verify import _decodes

    model = tb.greedy_cache_decoder()
    rng, dense, feeds = np.random.default_rng(0), make_session(model), []
    for _ in range(60):
        _cache_calls(dense, rng.integers(0, 12, (4, 3)).astype(np.int64), 8, feeds)
    _save(tmp_path / "calls", feeds)
    onnx.save(model, tmp_path / "m.onnx")
    groups = _decodes([k % 8 > 0 for k in range(480)], 1)
    part = open_data(tmp_path / "calls", model).part(3, True, groups=groups, unit="stream of calls")
    got = [f["past"].shape[1] for f in part]
    assert part.per_feed and len(got) == 20 * 8 and got[:8] == [0, 3, 4, 5, 6, 7, 8, 9]
    assert "every 3rd stream of calls" in part.description
    result = prune(tmp_path / "m.onnx", output=tmp_path / "out.onnx", data=tmp_path / "calls", max_loss=1.0)
    note = next(n for n in result.report["notes"] if n.startswith("greedy decoding: 'input_ids' holds the argmax"))
    assert "the data's decision part is split by stream (60 streams, each on one side)" in note


def _data_step(tmp_path, model, feeds, budgets=None):
    """The calls saved a file each and the data step run on them as the automatic search's plan runs it (--max-loss 1
    and `budgets`, a split, the small-data policy): the run state, its `decoded_budget` read."""
    from onnxprune.converter.steps.base import RunState
    from onnxprune.converter.steps.data import DataConfig, DataStep

    _save(tmp_path / "calls", feeds)
    state = RunState(source=model, original=model)
    DataStep(DataConfig(data=tmp_path / "calls"), split=True, small_data=True, budget=1.0,
             output_budgets=budgets).run(state)
    return state


def _true_decodes(dense, feeds, rows: int) -> np.ndarray:
    """Each row's decode, from the calls that follow one another by the input model's own outputs."""
    from onnxprune.calibration.carried import follows
    from onnxprune.converter.steps.verify import _decodes

    outs = [dict(zip(["logits", "h_out"], dense.run(["logits", "h_out"], f))) for f in feeds]
    return _decodes([k > 0 and follows(outs[k - 1], feeds[k], {"h": "h_out"}) for k in range(len(feeds))], rows)


def test_a_decoders_calls_are_split_by_decode_whatever_the_form_of_its_budget(tmp_path):
    """--max-loss logits=L on the fed-back output keeps its per-call judgement; its calls are still a recording of
    decodes, so the split keeps each decode on one side and grows the deciding part to certify L (decoders 55b's
    L1: there the split stayed by row, every 10th row of every decode deciding, and the search fell back to one
    shot). The split is the one the derived budget gives (`test_a_decoders_stacked_calls_are_split_by_decode_...`)."""
    model = tb.greedy_rnn_step()
    dense, feeds = make_session(model), []
    for seed in range(18):
        for h0, prompt in _prompts(dense, 100 + seed, 3):
            _rnn_calls(dense, h0, prompt, 14, feeds)
    state = _data_step(tmp_path, model, feeds, {"logits": 1 / 12})
    assert np.array_equal(state.data.groups, _true_decodes(dense, feeds, 4))
    note = next(n for n in state.notes if n.startswith("greedy decoding: 'prev_token' holds the argmax"))
    assert "the data's decision part is split by decode (720 decodes, each on one side), every 8th decode deciding " \
           "so that 1,260 calls' rows decide where --validation's share held fewer than the 1,199 the budget needs" \
           in note
    assert "'logits' keeps its own --max-loss logits=0.0833333, judged one call at a time" in note
    assert state.data.reader(part="validation").num_samples == 1260


@pytest.mark.parametrize("zero", [True, False], ids=["zero-state", "random-state"])
def test_calls_the_time_guard_left_unread_are_split_by_the_decodes_they_show_or_in_runs_said(tmp_path, monkeypatch,
                                                                                            zero):
    """The reading before the search stops at its guard (a second a clock reading, 150 s: 50 of 560 calls run).
    Where a decode starts exactly at each call read whose state is all zeros, the calls after are read without the
    model in another 150 s (151 of them) and a decode starts where their state is zero: their split is the true
    one; the last 359 are cut in runs of 12 calls (the read decodes' length), said. A random first state marks
    nothing: all 510 in runs, said (decoders 55b's L2: the whole recording split by row, no decode known)."""
    from onnxprune.converter.steps import verify

    model = tb.greedy_rnn_step()
    dense, feeds, rng = make_session(model), [], np.random.default_rng(3)
    for _ in range(40):
        h0 = np.zeros((4, 8), np.float32) if zero else rng.standard_normal((4, 8)).astype(np.float32)
        _rnn_calls(dense, h0, rng.integers(0, 12, (4, 3)).astype(np.int64), 14, feeds)
    monkeypatch.setattr(verify, "CARRIED_SECONDS", 150.0)
    monkeypatch.setattr(verify, "time", _Clock())
    state = _data_step(tmp_path, model, feeds)
    groups, true = state.data.groups, _true_decodes(dense, feeds, 4)
    note = next(n for n in state.notes if n.startswith("greedy decoding: 'prev_token' holds the argmax"))
    assert "the data's decision part is split by decode (" in note
    known = (50 + 151 if zero else 50) * 4
    assert np.array_equal(groups[:known], true[:known])
    runs = groups[known:].reshape(-1, 4)[:, 0]
    assert np.array_equal(np.unique(runs, return_counts=True)[1][1:-1], np.full(len(np.unique(runs)) - 2, 56))
    if zero:
        assert "the 151 calls past the 50 read were not run: a stream starts where 'h' is empty or all zeros, " \
               "as at the start of each of the 4 streams of calls read; the 359 calls past the 201 read in the time " \
               "(of 560) were not decoded: they go to a side in runs of 56 consecutive calls (4 streams of 14 calls, " \
               "the median of the streams read, counted from the last stream's start), so a decode there has calls " \
               "on both sides only where the streams are not of that length" in note
    else:
        assert "; the 510 calls past the 50 read in the time (of 560) were not decoded: they go to a side in runs of " \
               "56 consecutive calls (4 streams of 14 calls" in note
    # runs 4 streams long counted from the last start read fall on the streams' starts: runs one stream long (50 / 4
    # = 12 calls) had drifted against them, and counted from the first unread call they would cut every stream
    assert all(len(np.unique(groups[true == d] // 4)) == 1 for d in np.unique(true))


def test_a_kv_decoders_feeds_used_as_they_are_grow_their_deciding_part_by_their_rows(tmp_path):
    """A KV-cache decoder recorded a prompt at a time (feeds of one row, used as they are): 150 decodes of 16 calls,
    'logits' at 1 / 16 pp a call, which 1,599 deciding rows certify. The small-data split of 2,400 feeds decided on
    every other stream, 1,200 rows, and the deciding part was not grown (decoders 55b's L3: its count was of feeds);
    now it is, by the rows of the streams: every 3rd stream trains, 1,600 rows decide."""
    model = tb.greedy_cache_decoder()
    rng, dense, feeds = np.random.default_rng(0), make_session(model), []
    for _ in range(150):
        _cache_calls(dense, rng.integers(0, 12, (1, 3)).astype(np.int64), 16, feeds)
    state = _data_step(tmp_path, model, feeds)
    assert state.decoded_budget["length"] == 16.0
    note = next(n for n in state.notes if n.startswith("greedy decoding: 'input_ids' holds the argmax"))
    assert "the data's decision part is split by stream (150 streams, each on one side), every 3rd stream training " \
           "so that 1,600 calls' rows decide where --validation's share held fewer than the 1,599 the budget " \
           "needs" in note
    part = state.data.reader(part="validation")
    assert part.per_feed and part.num_samples == 1600 and sum(f["input_ids"].shape[0] for f in part) == 1600


def _forced_calls(sess, prompt: np.ndarray, steps: int, record, rng) -> None:
    """greedy_cache_decoder fed `prompt` [N, S] with an empty past, then `steps - 1` calls each fed a random token,
    not its pick (a decoder scored on given text, every position read): its calls appended to `record`."""
    ids, past = prompt, np.zeros((len(prompt), 0, 8), np.float32)
    for _ in range(steps):
        record.append({"input_ids": ids, "past": past})
        past = sess.run(["present"], record[-1])[0]
        ids = rng.integers(0, 12, (len(prompt), 1)).astype(np.int64)


def _changed(written, dense, feeds, last: bool) -> np.ndarray:
    """Each row's share of changed picks (argmax of 'logits') in onnxruntime by hand: at the last position (`last`),
    else over every position, as seq_agreement counts them."""
    shares = []
    for f in feeds:
        a, b = written.run(["logits"], f)[0].argmax(-1), dense.run(["logits"], f)[0].argmax(-1)
        shares.append((a[:, -1:] != b[:, -1:]) if last else (a != b))
    return np.concatenate([s.mean(axis=1) for s in shares])


def test_a_kv_decoders_prompt_call_is_judged_by_its_pick_alone_and_given_text_by_every_position(tmp_path):
    """A KV decoder's first call takes its prompt whole (input_ids [4, 6]) and gives 'logits' [4, 6, V]: only the last
    position is a pick a decode keeps; the others read the prompt. Scored on every position (decoders 57's L2), a
    prompt call's changed pick counted 1/6 and its prompt positions' changes counted though no decode keeps them.
    Now 'logits' is judged on its last position: a candidate's loss is exactly the share of deciding calls whose
    pick changes, by hand in onnxruntime. The control, the same decoder fed given text (tokens not its picks: no
    decode, every position read), is scored on every position as before."""
    model = tb.greedy_cache_decoder()
    rng, dense, feeds = np.random.default_rng(0), make_session(model), []
    for _ in range(60):
        _cache_calls(dense, rng.integers(0, 12, (4, 6)).astype(np.int64), 8, feeds)
    for folder in ("decodes", "given"):
        (tmp_path / folder).mkdir()
    state = _data_step(tmp_path / "decodes", model, feeds)
    assert state.data.output_budgets == {"logits": 0.125} and state.data.last_positions == {"logits"}
    note = next(n for n in state.notes if n.startswith("greedy decoding: 'input_ids' holds the argmax"))
    assert "'logits' is scored on its last position only, the pick the next call is fed (a call fed several " \
           "tokens, a prompt's, gives one position a token" in note
    noised = with_initializers(model, lambda name: name == "fc2.weight",
                               lambda w: w + 0.3 * np.random.default_rng(1).standard_normal(w.shape).astype(w.dtype))
    written = make_session(noised)
    evaluator = state.data.calibration
    evaluator.evaluate(noised)
    part = list(state.data.reader(part="validation"))
    assert len(part) == 45 * 8 and part[0]["input_ids"].shape == (4, 6)
    picks = _changed(written, dense, part, last=True)
    assert evaluator.last["logits"]["loss_pp"] == pytest.approx(100.0 * picks.mean(), abs=1e-9)
    assert _changed(written, dense, part, last=False).mean() != pytest.approx(picks.mean())  # every position's
    # the control: given text, not decoded, read position by position as the data holds it
    forced: list = []
    for _ in range(60):
        _forced_calls(dense, rng.integers(0, 12, (4, 6)).astype(np.int64), 8, forced, rng)
    control = _data_step(tmp_path / "given", model, forced)
    assert control.decoded_budget is None and control.data.last_positions == frozenset()
    evaluator = control.data.calibration
    evaluator.evaluate(noised)
    every = _changed(written, dense, list(control.data.reader(part="validation")), last=False)
    assert evaluator.last["logits"]["loss_pp"] == pytest.approx(100.0 * every.mean(), abs=1e-9)


def test_a_stacked_decoders_final_exam_takes_whole_decodes(tmp_path):
    """Files of 4 stacked rows a call, 320 decodes of 14 calls, split by decode. The deciding part's rows were cut
    into batch parts of 16 rows and the exam took every 3rd part (decoders 57's L3): a decode's rows on both sides,
    judged partly by the exam and partly by the search. Now the parts end where no decode goes on, so the exam takes
    whole decodes, about a third of them, and every row is scored as before (a candidate's loss by hand)."""
    from onnxprune.converter.auto.exam import exam_batches

    model = tb.greedy_rnn_step()
    dense, feeds = make_session(model), []
    for seed in range(8):
        for h0, prompt in _prompts(dense, 100 + seed, 3):
            _rnn_calls(dense, h0, prompt, 14, feeds)
    state = _data_step(tmp_path, model, feeds)
    data, true = state.data, _true_decodes(dense, feeds, 4)
    assert np.array_equal(data.groups, true)
    deciding = true[(true % data.every == 0) != data.trains_on_every]  # the deciding part's rows' decodes, in order
    evaluator = data.calibration
    rows = [len(f["prev_token"]) for f, _ in evaluator.batches()]
    assert sum(rows) == len(deciding) and len(rows) > 3 * EXAM_MIN_PARTS
    at = np.concatenate([[0], np.cumsum(rows)])
    batch = [set(deciding[at[b]:at[b + 1]].tolist()) for b in range(len(rows))]
    exam, rest = exam_batches(evaluator, len(rows))
    on_exam = set().union(*(batch[b] for b in exam))
    assert on_exam and not on_exam & set().union(*(batch[b] for b in rest))
    assert abs(len(on_exam) - len(set(deciding.tolist())) / 3) <= 2
    noised = with_initializers(model, lambda name: name == "out.weight",
                               lambda w: w + 0.5 * np.random.default_rng(1).standard_normal(w.shape).astype(w.dtype))
    evaluator.evaluate(noised)
    written, part = make_session(noised), list(data.reader(part="validation"))
    changed = np.concatenate([written.run(["logits"], f)[0].argmax(-1) != dense.run(["logits"], f)[0].argmax(-1)
                              for f in part])
    assert len(changed) == len(deciding) and changed.any()
    assert evaluator.last["logits"]["loss_pp"] == pytest.approx(100.0 * changed.mean(), abs=1e-9)


EXAM_MIN_PARTS = 4  # the exam's runs of batches the test asks for at least
