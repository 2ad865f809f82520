"""Feeds held in memory narrower (calibration.held): lists 57's L2, 400 requests of 1,004 int32 multi-hot rows (5.6
GB as read) streamed and decompressed again every judging pass."""

import numpy as np
import pytest
from onnxprune.calibration.held import HELD_MIN_BYTES, HeldArray, given_back, held_batches, hold
from onnxprune.calibration.metrics import Evaluator, inferred_padding
from onnxprune.calibration.readers import requests_reader
from onnxprune.models import third_party_builders as tb
from tests.oracle import first_output, with_initializer


def test_hold_gives_every_array_back_bit_for_bit_and_narrower_where_it_can():
    rng = np.random.default_rng(0)
    n = HELD_MIN_BYTES  # every array below is at least that many bytes
    cases = [  # (array, held narrower by at least this factor; 1: as it is)
        ((rng.random((64, n // 64)) < 0.3).astype(np.int32), 32),  # a multi-hot row scorer's input
        (rng.random((64, n // 64)) < 0.3, 8),
        ((rng.random((64, n // 64)) < 0.3).astype(np.float32), 32),
        (rng.integers(0, 30000, (32, n // 32)).astype(np.int64), 4),  # token ids
        (rng.integers(-100, 100, (32, n // 32)).astype(np.int32), 4),
        (rng.integers(-(2**40), 2**40, (32, n // 32)), 1),
        (rng.standard_normal((32, n // 32)).astype(np.float32), 1),
        (np.where(rng.random((32, n // 32)) < 0.5, -0.0, 1.0).astype(np.float32), 1),  # -0.0 is not 0.0's bits
        (np.zeros(10, np.int64), 1),  # small: as it is
    ]
    for array, factor in cases:
        held = hold(array)
        back = given_back(held)
        assert back.dtype == array.dtype and back.shape == array.shape, array.dtype
        assert back.tobytes() == array.tobytes(), array.dtype
        assert isinstance(held, HeldArray) == (factor > 1) and held.nbytes * factor <= array.nbytes + 8, array.dtype
    batches = [({"x": a}, None) for a, _ in cases[:2]]
    assert held_batches(batches, 1 << 20) is not None and held_batches(batches, 1000) is None


def test_requests_past_the_cache_are_held_and_judged_as_streamed(tmp_path):
    """20 requests of 400 candidate rows (0/1 float32 features, 13 MB as read) under a 2 MB cache: held (as bits), not
    streamed, and a thinned candidate's top 5 changed on the same requests as streamed and as counted by hand in
    onnxruntime."""
    model = tb.row_scorer(candidates=400)
    feeds = tb.row_scorer_requests(20, candidates=400, seed=5)
    folder = tmp_path / "requests"
    folder.mkdir()
    for i, feed in enumerate(feeds):
        np.savez_compressed(folder / f"r{i:02d}.npz", **feed)
    assert sum(f["input"].nbytes for f in feeds) > 12 << 20
    candidate = with_initializer(model, "fc1.weight",
                                 lambda w: np.where(np.abs(w) < np.quantile(np.abs(w), 0.3), 0, w))
    held = Evaluator(requests_reader(folder, model, "test"), "score=top@5", reference_model=model, cache_bytes=2 << 20)
    streamed = Evaluator(requests_reader(folder, model, "test"), "score=top@5", reference_model=model, cache_bytes=0)
    assert held.cached and not streamed.cached
    for (a, _), feed in zip(held.batches(), feeds):
        assert a["input"].dtype == np.float32 and np.array_equal(a["input"], feed["input"])
    top = [(np.argsort(-first_output(model, f)[:, 0], kind="stable")[:5],
            np.argsort(-first_output(candidate, f)[:, 0], kind="stable")[:5]) for f in feeds]
    want = 100.0 * np.mean([not np.array_equal(a, b) for a, b in top])
    assert 0 < want < 100
    assert held.loss_pp(held.evaluate(candidate)) == pytest.approx(want, abs=1e-9)
    assert streamed.loss_pp(streamed.evaluate(candidate)) == pytest.approx(want, abs=1e-9)


def test_padding_is_read_from_held_token_ids():
    """Token ids held narrower (the reference pass holds an integer [N, S] input so) give the same padding."""
    rng = np.random.default_rng(1)
    batches = []
    for _ in range(3):
        ids = rng.integers(1, 30000, (64, 300)).astype(np.int64)
        for row, length in enumerate(rng.integers(5, 300, 64)):
            ids[row, length:] = 0
        batches.append({"ids": ids})
    plain = inferred_padding(batches, ("ids",))
    held = [{"ids": hold(b["ids"])} for b in batches]
    assert isinstance(held[0]["ids"], HeldArray)
    found = inferred_padding(held, ("ids",))
    assert plain is not None and found[1] == plain[1] == "ids is 0 at the end of the rows"
    assert all(np.array_equal(a, b) for a, b in zip(found[0], plain[0]))
