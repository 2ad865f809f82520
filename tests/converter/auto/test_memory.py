"""The search's memory is bounded: the refit's dense-output cache by bytes, its sessions without the arena."""

from __future__ import annotations

import numpy as np

from onnxprune.calibration.runtime import make_session, no_arena
from onnxprune.converter.reconstruct import DENSE_CACHE_BYTES, DenseSessions
from onnxprune.models import builders


def _feeds(seed: int, n: int = 8) -> dict:
    return {"input": np.random.default_rng(seed).standard_normal((n, 1, 28, 28)).astype(np.float32)}


def test_the_dense_cache_keeps_at_most_its_bytes_and_serves_repeats():
    model = builders.lenet300_like(hidden=(16, 8), seed=0)
    targets = [n.output[0] for n in model.graph.node if n.op_type == "Gemm"][:1]  # [8, 16] float32: 512 bytes
    dense = DenseSessions(model, cache_bytes=1200)  # room for two batches' outputs, not three
    first = [dense.run(targets, _feeds(s)) for s in range(4)]
    cached = sum(v.nbytes for vs in dense.cache.values() for v in vs)
    assert len(dense.cache) == 2 and cached <= 1200
    again = dense.run(targets, _feeds(0))  # a hit: the same arrays, not a new run
    assert all(a is b for a, b in zip(again, first[0]))
    recomputed = dense.run(targets, _feeds(3))  # not cached (no room): computed again, the same values
    np.testing.assert_array_equal(recomputed[0], first[3][0])
    assert DENSE_CACHE_BYTES == 512 << 20  # the documented bound of a search's cache


def test_sessions_inside_no_arena_do_without_it_and_compute_the_same():
    model = builders.lenet300_like(hidden=(16, 8), seed=0)
    with no_arena():
        inner = make_session(model, optimize=False)
    outer = make_session(model, optimize=False)
    assert not inner.get_session_options().enable_cpu_mem_arena
    assert outer.get_session_options().enable_cpu_mem_arena  # restored after the block
    feeds = _feeds(1)
    np.testing.assert_allclose(inner.run(None, feeds)[0], outer.run(None, feeds)[0], rtol=0, atol=0)
