"""A model that feeds a state back (silero VAD's 'state' -> 'stateN') is measured as a stream runs it, on the feeds
of its data that follow one another (calibration/carried.py, converter/steps/verify.carried_check)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune import prune
from onnxprune.calibration.carried import (IN_WORDS, OUT_WORDS, carried_run, core, declared_pairs, follows, state_pairs,
                                          streams)
from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.converter.steps.verify import carried_note
from onnxprune.models import third_party_builders as tb
from tests.oracle import with_initializers


@pytest.mark.parametrize("given, gives", [("state", "stateN"), ("h0", "hn"), ("c0", "cN"), ("cache", "new_cache"),
                                           ("state_in", "state_out"), ("past_hidden", "hidden"), ("h", "h_1")])
def test_a_state_and_its_next_value_pair_by_name_shape_and_dtype(given, gives):
    x = np.zeros((2, 1, 4), np.float32)
    assert state_pairs({given: x, "audio": np.zeros((1, 4), np.float32)},
                       {gives: x + 1, "prob": np.zeros((1, 1), np.float32)}) == {given: gives}


def test_what_is_no_state_pairs_with_nothing():
    x = np.zeros((1, 16), np.float32)
    assert core("input", IN_WORDS) == () and core("output", OUT_WORDS) == ()
    assert state_pairs({"input": x}, {"output": x}) == {}  # a denoiser's input and output: the same shape, no state
    assert state_pairs({"x": x}, {"y": x}) == {}
    assert state_pairs({"state": x}, {"stateN": np.zeros((1, 17), np.float32)}) == {}  # a cache that grows
    assert state_pairs({"state": x}, {"stateN": x.astype(np.float64)}) == {}
    assert state_pairs({"h0": x}, {"hn": x, "h_out": x}) == {}  # two outputs could be it: no guess


def _stream_folder(folder, model, streams_of, *, seed=0, follow=True):
    """Folders of one feed a file: `streams_of` streams of that many calls each, every call's state the input model's
    output of the call before (recorded as a streaming application taps it); `follow=False` records each call's
    state from a call of another stream (every k-th chunk of a pool, as the corpus's silero set)."""
    folder.mkdir()
    sess, rng, k = make_session(model), np.random.default_rng(seed), 0
    state = None
    for calls in streams_of:
        state = np.zeros((2, 1, 8), np.float32) if follow or state is None else state
        for _ in range(calls):
            feed = {"audio": rng.standard_normal((1, 16)).astype(np.float32), "sr": np.array(16000),
                    "state": state}
            np.savez(folder / f"f{k:04d}.npz", **feed)
            k += 1
            nxt = sess.run(["stateN"], feed)[0]
            state = nxt if follow else (nxt + rng.standard_normal(nxt.shape).astype(np.float32))
    return folder


def _weights_scaled(model: onnx.ModelProto, factor: float) -> onnx.ModelProto:
    """A copy of `model` whose weights are `factor` times the input's (an error a stream carries)."""
    return with_initializers(model, lambda name: name.endswith("weight"), lambda w: w * factor)


def test_a_stream_runs_each_model_on_its_own_state_as_onnxruntime_does_by_hand(tmp_path):
    model = tb.streaming_vad()
    folder = _stream_folder(tmp_path / "s", model, [5, 1, 4])
    feeds = list(open_data(folder, model))
    dense = make_session(model)
    previous, after = None, []
    for feed in feeds:
        after.append(previous is not None and follows(previous, feed, {"state": "stateN"}))
        previous = dict(zip(["prob", "stateN"], dense.run(["prob", "stateN"], feed)))
    assert after == [False, True, True, True, True, False, False, True, True, True]
    assert streams(after) == [0, 1, 2, 3, 4, 6, 7, 8, 9]  # the call alone (5) is no stream
    sess = make_session(_weights_scaled(model, 0.9))
    got = carried_run(sess, feeds, {"state": "stateN"}, ["prob", "stateN"], after)
    state = None
    for k, feed in enumerate(feeds):  # by hand: the model's own state inside a stream, the recorded one at its start
        run = {**feed, "state": state} if after[k] else feed
        prob, state = sess.run(["prob", "stateN"], run)
        assert np.array_equal(got[k][0], prob) and np.array_equal(got[k][1], state)


def test_a_pruned_stream_is_measured_with_its_state_carried_and_said_over_the_budget(tmp_path):
    model = tb.streaming_vad()
    folder = _stream_folder(tmp_path / "s", model, [30, 30, 30, 30])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    # a hand recipe: every figure is measured
    result = prune(path, output=tmp_path / "out.onnx", data=folder, sparsity=0.5)
    carried = result.report["carried"]
    assert carried["pairs"] == {"state": "stateN"} and (carried["feeds"], carried["streams"]) == (120, 4)
    # the figures are the metric of the written model's stream in onnxruntime against the input model's
    feeds = list(open_data(folder, model))
    after = [k % 30 != 0 for k in range(120)]
    written = make_session(onnx.load(tmp_path / "out.onnx"))
    ev = Evaluator(open_data(feeds, model, batch_size=1), None, reference_model=model)
    streamed = ev.score(carried_run(written, feeds, {"state": "stateN"}, list(ev.plan), after))
    assert carried["loss_pp"] == pytest.approx((ev.dense - streamed) * 100.0)
    one = ev.score(carried_run(written, feeds, {"state": "stateN"}, list(ev.plan), [False] * 120))
    assert carried["one_call_loss_pp"] == pytest.approx((ev.dense - one) * 100.0)
    # stateN = state + fc1(audio) adds up the pruned fc1's error call by call: streamed it moves far more
    assert carried["outputs"]["stateN"]["loss_pp"] > 3 * carried["one_call"]["stateN"]
    note = next(n for n in result.report["notes"] if n.startswith("carried state:"))
    assert "'stateN' as 'state'" in note and "120 feeds" in note and "(4 stream(s))" in note
    assert carried["over"] == []  # no --max-loss: nothing is over it


def test_report_json_lists_the_outputs_a_stream_takes_over_the_budget(tmp_path):
    """With --max-loss, report.json's `carried.over` names the outputs over it streamed (the budget line says them
    beside "met"), as the note does: the budget, met one call at a time (--data's calls follow none: each was
    recorded from a state of another stream), is not met by the state streamed over --eval-data's streams."""
    import io

    from rich.console import Console

    from onnxprune.converter.inspect import print_prune_summary

    model = tb.streaming_vad()
    folder = _stream_folder(tmp_path / "s", model, [120], follow=False)
    held = _stream_folder(tmp_path / "e", model, [30, 30, 30, 30], seed=1)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = prune(path, output=tmp_path / "out.onnx", data=folder, eval_data=held, max_loss=1.0, time_budget=60)
    assert not any("are the calls of streams" in n for n in result.report["notes"])  # judged one call at a time
    carried, budget = result.report["carried"], result.report["budget"]
    over = carried["over"]
    assert budget["met"] and "stateN" in over
    assert over == [n for n, f in carried["outputs"].items() if f["loss_pp"] > 1.0]
    out = io.StringIO()
    print_prune_summary(result.report, Console(file=out, width=400, color_system=None))
    line = next(x for x in out.getvalue().splitlines() if x.startswith("budget:"))
    names = ", ".join(repr(n) for n in over)
    assert f": met one call at a time; streamed, {names} {'is' if len(over) == 1 else 'are'} over it (the carried-" \
           "state note)" in line
    from onnxprune.converter.report.document import build_document

    summary = build_document(result.report)["summary"]  # report.json's: what a build step reads
    assert summary["budget_met"] is True and summary["budget_streamed_over"] == over


def test_a_stream_in_the_data_is_judged_as_it_runs_so_the_budget_holds_streamed(tmp_path):
    """--data's feeds are the calls of 12 streams: every candidate is judged run as a stream, each model on its own
    state, the split keeping each stream on one side, so the budget "met" is met streamed. Judged one call at a time
    from each feed's recorded state (before), the same run kept 1.04x with 'stateN' 1.06 pp streamed, over 1 pp."""
    model = tb.streaming_vad()
    folder = _stream_folder(tmp_path / "s", model, [15] * 12)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = prune(path, output=tmp_path / "out.onnx", data=folder, max_loss=1.0, time_budget=60)
    note = next(n for n in result.report["notes"] if "are the calls of streams" in n)
    assert "feeding back 'stateN' as 'state' (180 of 180 feeds in 12 stream(s))" in note
    assert note.endswith("the data's decision part is split by stream (12 streams, each on one side)")
    carried, budget = result.report["carried"], result.report["budget"]
    assert budget["met"] and carried["over"] == [] and carried["streams"] == 12
    assert carried["outputs"]["stateN"]["loss_pp"] <= 1.0
    assert budget["measured_loss_pp"] >= carried["one_call"]["stateN"]  # the decision's figure is no call's alone


@pytest.mark.parametrize("rows", [1, 3])  # 3: a file steps three streams in lockstep
def test_a_folder_of_stacked_step_calls_is_read_a_file_a_call_and_judged_as_its_streams_run(tmp_path, rows):
    """An RNN step's calls, each file [1, F] and [1, H] with no scalar beside them, are stacked samples to the
    readers: batches of 64 rows from many files, no stream. Found to be streams, they are read one file a feed in
    the folder's order and judged streamed (a torch GRU step exported by the legacy exporter, 12 streams of 28 MNIST
    rows: 1.58x "met, 0.90 pp" one call at a time, its hn 1.43 pp streamed and 1.74% held out -> 1.14x, 0.38%)."""
    from onnxprune.calibration.readers import calls_reader

    model = tb.streaming_step(hidden=32)
    sess, rng, k = make_session(model), np.random.default_rng(0), 0
    folder = tmp_path / "calls"
    folder.mkdir()
    for _ in range(12):
        h = np.zeros((rows, 32), np.float32)
        for _ in range(15):
            feed = {"row": rng.standard_normal((rows, 16)).astype(np.float32), "h0": h}
            np.savez(folder / f"c{k:04d}.npz", **feed)
            k += 1
            h = sess.run(["hn"], feed)[0]
    assert not open_data(folder, model).per_feed  # stacked samples as read by default
    reader = calls_reader(folder, model)
    assert reader.per_feed and reader.num_samples == 180 and reader.call_rows == rows
    assert np.array_equal(next(iter(reader))["h0"], np.load(folder / "c0000.npz")["h0"])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = prune(path, output=tmp_path / "out.onnx", data=folder, max_loss=1.0, time_budget=60)
    note = next(n for n in result.report["notes"] if "are the calls of streams" in n)
    assert "feeding back 'hn' as 'h0' (180 of 180 feeds in 12 stream(s))" in note and "split by stream" in note
    assert not any("carried-state check" in n and "failed" in n for n in result.report["notes"])
    carried, budget = result.report["carried"], result.report["budget"]
    assert budget["met"] and carried["over"] == [] and carried["streams"] == 12
    assert carried["outputs"]["hn"]["loss_pp"] <= 1.0


def test_an_evaluator_runs_its_streams_on_the_state_the_judged_model_gives_as_carried_run_does(tmp_path):
    model = tb.streaming_vad()
    folder = _stream_folder(tmp_path / "s", model, [5, 1, 4])
    feeds = list(open_data(folder, model))
    pairs = {"state": "stateN"}
    ev = Evaluator(open_data(folder, model), None, reference_model=model, carried=pairs)
    after = [False, True, True, True, True, False, False, True, True, True]
    assert ev.chained == after
    dense = make_session(model)
    assert all(np.array_equal(a, b) for got, want in zip(ev.reference_all, carried_run(dense, feeds, pairs,
               list(ev.plan), after)) for a, b in zip(got, want))
    sess = make_session(_weights_scaled(model, 0.9))
    streamed = carried_run(sess, feeds, pairs, list(ev.plan), after)
    assert all(np.array_equal(a, b) for got, want in zip(ev.run_all(sess), streamed) for a, b in zip(got, want))
    one = carried_run(sess, feeds, pairs, list(ev.plan), [False] * 10)
    assert not np.array_equal(one[4][1], streamed[4][1])  # the state carried from call to call is another one's
    # batches asked apart (a sampled order) run each from its recorded state; consecutive ones chain
    got = list(ev.run_batches(sess, [2, 4, 7, 8]))  # 8 takes 7's state, 7 its recorded one
    want = carried_run(sess, [feeds[b] for b in (2, 4, 7, 8)], pairs, list(ev.plan), [False, False, False, True])
    assert all(np.array_equal(a, b) for g, w in zip(got, want) for a, b in zip(g, w))
    assert not np.array_equal(got[3][1], one[8][1]) and not np.array_equal(got[3][1], streamed[8][1])
    # without a stream in its feeds (each from another stream's state), the evaluator runs one call at a time
    other = _stream_folder(tmp_path / "o", model, [10], follow=False)
    apart = Evaluator(open_data(other, model), None, reference_model=model, carried=pairs)
    assert apart.carried == {} and apart.chained == []


def test_the_final_exam_takes_whole_streams():
    from onnxprune.converter.auto.exam import exam_batches

    class Streams:
        chained = [False, True, True, False, True, False, True, True, True, False, False, True]
    exam, rest = exam_batches(Streams(), 12)  # streams [0-2] [3-4] [5-8] [9] [10-11]: the 3rd is the exam's
    assert exam == [5, 6, 7, 8] and rest == [0, 1, 2, 3, 4, 9, 10, 11]
    assert exam_batches(object(), 7) == ([2, 5], [0, 1, 3, 4, 6])  # batches apart: every 3rd


def _carried(stream: dict, one: dict) -> dict:
    return {"pairs": {"state": "stateN"}, "feeds": 120, "streams": 4, "read": 120, "of": 120,
            "data": "folder 's/' (120 files): 120 feed(s) used as is", "loss_pp": max(stream.values()),
            "one_call_loss_pp": max(one.values()), "outputs": {n: {"loss_pp": v} for n, v in stream.items()},
            "one_call": one}


def test_the_note_names_the_outputs_a_stream_takes_over_the_budget_and_what_to_do():
    within = carried_note(_carried({"prob": 0.4, "stateN": 0.9}, {"prob": 0.3, "stateN": 0.5}), 1.0)
    assert within.endswith("within --max-loss 1 streamed too")
    assert "'prob' +0.40 pp (+0.30 one call at a time)" in within
    state = carried_note(_carried({"prob": 0.4, "stateN": 2.3}, {"prob": 0.3, "stateN": 0.75}), 1.0)
    assert "'stateN' streamed is over --max-loss 1" in state and "only the state is: 'prob' stays within" in state
    assert "`--max-loss stateN=L`" in state
    both = carried_note(_carried({"prob": 3.0, "stateN": 6.0}, {"prob": 0.5, "stateN": 1.0}), 2.0)
    assert "'prob', 'stateN' streamed are over --max-loss 2" in both
    assert both.endswith("adds up (6.0x here); if it runs streamed, a smaller --max-loss leaves room for that")
    assert "folder 's/' (120 files) that follow one another (4 stream(s))" in both  # the data named, not described
    assert carried_note(_carried({"prob": 3.0}, {"prob": 0.5}), None).endswith("'prob' +3.00 pp (+0.50 one call at a "
                                                                               "time)")  # no budget: figures only


def test_feeds_that_follow_no_other_are_judged_one_call_at_a_time_and_said(tmp_path):
    model = tb.streaming_vad()
    folder = _stream_folder(tmp_path / "s", model, [60], follow=False)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = prune(path, output=tmp_path / "out.onnx", data=folder, sparsity=0.5)
    assert "carried" not in result.report
    note = next(n for n in result.report["notes"] if n.startswith("carried state:"))
    assert "no feed of" in note and "holds the state the call before gave" in note


def test_stacked_samples_or_a_model_without_a_state_get_no_carried_check(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(tb.regressor(), path)
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    result = prune(path, output=tmp_path / "out.onnx", data={"input": x}, sparsity=0.5)
    assert "carried" not in result.report
    assert not any(n.startswith("carried state:") for n in result.report["notes"])


def test_a_check_out_of_time_says_so_rather_than_that_no_feed_follows_another(tmp_path, monkeypatch):
    """Session 50: at a 2-minute budget silero's 803 consecutive chunks were said to follow none, after one was read."""
    from onnxprune.converter.steps import verify

    model = tb.streaming_vad()
    folder = _stream_folder(tmp_path / "s", model, [30, 30])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    monkeypatch.setattr(verify, "CARRIED_SECONDS", 1e-9)
    result = prune(path, output=tmp_path / "out.onnx", data=folder, sparsity=0.5)
    assert "carried" not in result.report
    note = next(n for n in result.report["notes"] if "carried-state check" in n)
    assert note.startswith("time budget:") and "read 1 feed(s) in the time left, too few to find a stream" in note
    assert not any("no feed of" in n for n in result.report["notes"])


def test_inspect_says_which_output_is_fed_back_and_how_to_record_streams(tmp_path):
    from click.testing import CliRunner

    from onnxprune.converter.cli import cli

    assert declared_pairs(tb.streaming_vad()) == {"state": "stateN"}
    assert declared_pairs(tb.regressor()) == {} and declared_pairs(tb.flat_autoencoder()) == {}
    path = tmp_path / "vad.onnx"
    onnx.save(tb.streaming_vad(), path)
    text = " ".join(CliRunner().invoke(cli, ["inspect", str(path)]).output.split())
    assert ("the model feeds back 'stateN' as 'state' on its next call, a stream's state: to have the run judge "
            "every candidate streamed, each reading its own state") in text
    onnx.save(tb.regressor(), path)
    assert "feeds back" not in CliRunner().invoke(cli, ["inspect", str(path)]).output
