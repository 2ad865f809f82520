"""Streamed training data (a folder of one-feed files, or data too large for memory) gets the learning-rate probe too.

Sweep 7's audio CNN (batch fixed at 1, a scalar sample rate: a folder of one-feed .npz files) retrained at a fixed
0.01 with no probe, and every round's objective rose to chance: the search ended at its one-shot model (1.4x). With
the probe on slices of the stream it chose 0.001 and kept 3.8x (600 held-out feeds: 0.67 pp, SE 0.47)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.calibration.readers import open_data
from onnxprune.converter.auto import hyper
from onnxprune.converter.pipeline import configure, run
from onnxprune.models import third_party_builders as tb
from tests.oracle import assert_same_outputs


def vad_folder(folder, n, seed=0):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        np.savez(folder / f"f{i:03d}.npz", audio=rng.standard_normal((1, 16)).astype(np.float32), sr=np.array(16000),
                 state=rng.standard_normal((2, 1, 8)).astype(np.float32))
    return folder


def test_the_probe_slices_of_a_stream_are_disjoint_and_capped(tmp_path):
    reader = open_data(vad_folder(tmp_path / "vad", 23), tb.streaming_vad())
    assert reader.per_feed
    train, held = hyper.stream_slices(reader)
    every = [f["audio"].tobytes() for f, _ in reader.batches()]
    seen_train = [f["audio"].tobytes() for f, _ in train.batches()]
    seen_held = [f["audio"].tobytes() for f, _ in held.batches()]
    assert seen_held == every[::5] and seen_train == [a for i, a in enumerate(every) if i % 5]
    assert (train.num_samples, held.num_samples) == (len(seen_train), len(seen_held)) == (18, 5)
    capped = hyper.StreamPart(reader, 5, False, 4)
    assert capped.num_samples == 4 and len(list(capped.batches())) == 4


def test_retraining_on_a_folder_of_feeds_probes_its_rate_one_feed_a_step(tmp_path):
    model = tb.streaming_vad()
    folder = vad_folder(tmp_path / "vad", 160)
    result = run(model, configure(max_loss=1.0, data=str(folder), recovery="sgd", time_budget=25, seed=0))
    choices = result.report["auto"]["choices"]
    assert choices["batch_size"]["value"] == 1 and "feed by feed" in choices["batch_size"]["rule"]
    assert choices["lr"]["rule"].startswith("probe:"), choices["lr"]
    assert choices["lr"]["value"] in hyper.PROBE_RATES + hyper.LOWER_RATES
    probe = [h for h in result.report["history"] if h["phase"] == "probe"]
    assert len(probe) == 1 and probe[0]["lr"] == choices["lr"]["value"]
    feeds = [f for f, _ in open_data(str(folder), model).batches()][:8]
    for feed in feeds:
        assert_same_outputs(result.model, result.dense_model, feeds=[feed])
