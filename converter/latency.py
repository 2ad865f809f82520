"""How fast do the input and the output model run? onnxruntime on the CPU, both in this process, interleaved.

Timing two models one after the other measures the machine as much as the models (turbo clocks, other jobs, the
page cache). So both sessions are built up front with the same settings (default graph optimisations on, a fixed
number of intra-op threads, sequential execution) and run alternately on the same inputs, each timed pair's order
reversed from the one before (a, b, b, a, a, b, …); the first `warmup` pairs are thrown away. A run whose time
depends on the parity of the calls before it would otherwise land on one model only: the Persian-digit reader of
real models 55 (quantize_dynamic's ConvInteger) ran 1.7 ms and 14 ms on alternate calls of one session, and a strict
a, b, a, b order timed the same file as 0.3x itself at batch 1 (the pruned model, whose graph is the input's, was
said to run "0.03x"). Per model we keep the median and the interquartile range of the wall time of
one `session.run`, and the ratio of the medians:

    ratio = median(b) / median(a)        (< 1: b is faster)        speedup = median(a) / median(b)

A time budget bounds the whole measurement: after at least `min_repeats` pairs, a batch size stops when its share
of the budget is spent. A model so slow that its warm-up and floor of pairs alone would take more than twice a batch
size's share is measured with one warm-up pair and SLOW_FLOOR timed pairs (or as many as the share holds, up to
`min_repeats`), said in a note: the 22.6M-parameter encoder runs a batch of 64 in 2.4 s, and 5 + 10 pairs of it took
72 s of a 6 s budget. Batch sizes are measured smallest first, and a larger one whose floor, at the pace the last one
ran, would take more than SLOW_CAP times its share is measured at the largest power of two that fits, or not at all,
said in a note (a VGG16's batch of 64 took 14-36 s a run). Inputs are `calibration.runtime.random_feeds` with the
symbolic (batch) dimension set; a model whose inputs have no symbolic dimension is only measured at the batch size it
declares.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

import numpy as np
import onnx

log = logging.getLogger(__name__)

SessionFactory = Callable[[Any, int], Any]  # (model, threads) -> object with run(output_names, feed)
SLOW_FLOOR = 3  # timed pairs at least, for a model whose floor of pairs would overrun its share of the budget
# a larger batch whose slow floor (one warm-up and SLOW_FLOOR timed pairs), estimated from the smaller batch's pace,
# would take more than this many times its share of the budget is measured at the largest power of two that fits
# (session 48: a VGG16 of 17.6 GMACs a sample ran a batch of 64 in 14-36 s, so 4 pairs of it took 2-4.5 minutes
# of a 6 s measurement, the longest step of its 15-minute one-shot run)
SLOW_CAP = 10.0


def measure_latency(
    model_a,
    model_b,
    feeds_by_batch: dict[int, dict[str, np.ndarray]] | None = None,
    *,
    batches: tuple[int, ...] = (1, 64),
    repeats: int = 200,
    warmup: int = 5,
    min_repeats: int = 10,
    budget_s: float = 6.0,
    threads: int = 1,
    seed: int = 0,
    session_factory: SessionFactory | None = None,
) -> dict:
    """Median and IQR of one onnxruntime run of `model_a` and `model_b` (ModelProto, bytes or path), interleaved.

    `feeds_by_batch` maps a batch size to the feed dict to use for it (both models get the same feed); by default
    seeded random inputs. Returns a JSON-ready dict:
    {"provider", "threads", "graph_optimization", "budget_s", "onnxruntime", "batches": [{"batch", "runs",
     "a": {"median_ms", "q1_ms", "q3_ms", "iqr_ms", "min_ms"}, "b": {...}, "ratio", "speedup"}], "notes": [...]}.
    """
    if repeats < 1 or warmup < 0 or min_repeats < 1:
        raise ValueError("repeats and min_repeats must be >= 1, warmup >= 0.")
    factory = session_factory or _ort_session
    notes: list[str] = []
    if feeds_by_batch is None:
        proto = _graph_only(model_a)
        batches, note = _usable_batches(proto, tuple(batches))
        if note:
            notes.append(note)
        feeds_by_batch = {b: _random_feeds(proto, b, seed) for b in batches}
    t_start = time.perf_counter()
    sess_a, sess_b = factory(model_a, threads), factory(model_b, threads)
    share = budget_s / max(len(feeds_by_batch), 1)
    results = []
    pace = None  # seconds a sample of the slower model, from the last batch measured
    for batch, feed in sorted(feeds_by_batch.items()):
        if pace is not None:
            smaller = _affordable(batch, pace, SLOW_CAP * share, results[-1]["batch"])
            if smaller != batch:
                said = (f"latency at batch {batch}: a pair of runs would take about {2 * pace * batch:.3g} s at the "
                        f"pace of batch {results[-1]['batch']} ({1e3 * pace:.3g} ms a sample), and its "
                        f"{1 + SLOW_FLOOR} pairs at least more than {SLOW_CAP:g}x its {share:.3g} s share of the "
                        "measurement's budget")
                cut = None if smaller is None else _cut(feed, batch, smaller)
                if cut is None:
                    notes.append(said + "; not measured")
                    continue
                notes.append(said + f"; measured at batch {smaller} instead")
                batch, feed = smaller, cut
        try:
            times_a, times_b, warm = _interleave(sess_a, sess_b, feed, repeats=repeats, warmup=warmup,
                                                 min_repeats=min_repeats, budget_s=share)
        except Exception as exc:  # onnxruntime refuses these inputs (a fixed length inside a Reshape, ...)
            from onnxprune.calibration.runtime import ort_reason

            shapes = ", ".join(f"'{k}' {list(np.shape(v))}" for k, v in feed.items())
            notes.append(f"latency at batch {batch} not measured: onnxruntime cannot run the model on inputs "
                         f"{shapes} ({ort_reason(exc)[:200]}); pass --data or --input-shape with shapes it takes")
            log.warning(notes[-1])
            continue
        if warm < warmup:
            notes.append(f"latency at batch {batch}: a pair of runs took longer than the measurement's share of the "
                         f"budget allows for {warmup} warm-up and {min_repeats} timed pairs; measured with {warm} "
                         f"warm-up and {len(times_a)} timed pairs")
        a, b = _stats(times_a), _stats(times_b)
        pace = max(a["median_ms"], b["median_ms"]) / 1e3 / max(int(batch), 1)
        results.append({
            "batch": int(batch),
            "runs": len(times_a),
            "warmup": warm,
            "a": a,
            "b": b,
            "ratio": b["median_ms"] / a["median_ms"] if a["median_ms"] > 0 else None,
            "speedup": a["median_ms"] / b["median_ms"] if b["median_ms"] > 0 else None,
        })
        if len(times_a) < repeats:
            log.debug("latency at batch %d: budget spent after %d of %d runs", batch, len(times_a), repeats)
    return {
        "provider": "CPUExecutionProvider",
        "threads": threads,
        "graph_optimization": "ORT_ENABLE_ALL",
        "order": "interleaved a, b, b, a, a, b, ... (each pair's order reversed from the last); warm-up excluded",
        "warmup": warmup,
        "budget_s": budget_s,
        "seconds": round(time.perf_counter() - t_start, 3),
        "onnxruntime": _ort_version(),
        "batches": results,
        "notes": notes,
    }


def _affordable(batch: int, pace: float, cap_s: float, measured: int) -> int | None:
    """`batch` when its slow floor of pairs at `pace` seconds a sample fits `cap_s`, else the largest power of two
    above the batch already `measured` that does, or None."""
    floor = lambda b: (1 + SLOW_FLOOR) * 2 * pace * b  # noqa: E731
    if floor(batch) <= cap_s:
        return batch
    b = 1
    while 2 * b < batch and floor(2 * b) <= cap_s:
        b *= 2
    return b if b > measured and floor(b) <= cap_s else None


def _cut(feed: dict, batch: int, smaller: int) -> dict | None:
    """The feed's first `smaller` samples: every array whose first axis is `batch` cut there (None when none is)."""
    sampled = {k for k, v in feed.items() if np.ndim(v) and np.shape(v)[0] == batch}
    return {k: v[:smaller] if k in sampled else v for k, v in feed.items()} if sampled else None


def _interleave(sess_a, sess_b, feed, *, repeats, warmup, min_repeats,
                budget_s) -> tuple[list[float], list[float], int]:
    """a, b, then b, a, …: warm-up pairs first (not kept), then timed pairs, each pair's order reversed from the
    last (the module's docstring says why), until `repeats` or the budget; also the warm-up pairs run. When the
    first warm-up pair shows that the warm-up and `min_repeats` pairs would take more than twice `budget_s`, one
    warm-up pair and SLOW_FLOOR timed pairs (more when they fit) do."""
    done = 0
    while done < warmup:
        t0 = time.perf_counter()
        sess_a.run(None, feed)
        sess_b.run(None, feed)
        done += 1
        pair = time.perf_counter() - t0
        if done == 1 and (warmup + min_repeats) * pair > 2 * budget_s:
            warmup, min_repeats = 1, min(min_repeats, max(SLOW_FLOOR, int(budget_s / pair)))
    times_a, times_b = [], []
    deadline = time.perf_counter() + budget_s
    for i in range(repeats):
        if i % 2 == 0:
            times_a.append(_time_one(sess_a, feed))
            times_b.append(_time_one(sess_b, feed))
        else:
            times_b.append(_time_one(sess_b, feed))
            times_a.append(_time_one(sess_a, feed))
        if i + 1 >= min_repeats and time.perf_counter() > deadline:
            break
    return times_a, times_b, warmup


def _time_one(session, feed) -> float:
    t0 = time.perf_counter_ns()
    session.run(None, feed)
    return (time.perf_counter_ns() - t0) / 1e6


def _stats(ms: list[float]) -> dict:
    q1, median, q3 = np.percentile(np.asarray(ms, dtype=np.float64), [25, 50, 75])
    return {
        "median_ms": float(median),
        "q1_ms": float(q1),
        "q3_ms": float(q3),
        "iqr_ms": float(q3 - q1),
        "min_ms": float(min(ms)),
    }


def _ort_session(model, threads: int):
    """Default optimisations on (what a deployment gets), fixed threads, sequential: the same for both models."""
    from onnxprune.calibration.runtime import make_session

    # make_session fixes the intra-op threads; execution is sequential by default, so inter-op threads are unused.
    return make_session(model, optimize=True, threads=threads)


def _graph_only(model) -> onnx.ModelProto:
    """Enough of the model to invent inputs: the graph's inputs (weights not needed)."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        return onnx.load_model_from_string(model)
    return onnx.load(os.fspath(model), load_external_data=False)


def _usable_batches(model: onnx.ModelProto, batches: tuple[int, ...]) -> tuple[tuple[int, ...], str | None]:
    """Batch sizes we can feed: all of them when an input has a symbolic dim, else the declared one only."""
    from onnxprune.calibration.runtime import input_specs

    specs = input_specs(model)
    if not specs or any(None in s.shape for s in specs):
        return batches, None
    declared = specs[0].shape[0] if specs[0].shape else 1
    return (int(declared),), (
        f"the model's inputs have fixed shapes (batch {declared}); latency measured at that batch size only."
    )


def feeds_from_data(model: onnx.ModelProto, source, *, labels=None, shapes=None, seed: int = 0,
                    batches: tuple[int, ...] = (1, 64)) -> dict[int, dict[str, np.ndarray]] | None:
    """Latency inputs of the shapes the user's data has: its first batch cut to each batch size (a feed read as is
    is used whole); random data at --input-shape when there is no data; None for the default random inputs."""
    from onnxprune.calibration.readers import open_data

    if source is None and not shapes:
        return None
    reader = open_data(source if source is not None else "random", model, labels=labels, batch_size=max(batches),
                       seed=seed, shapes=shapes, warn=False)
    first = next(iter(reader.batches()), None)
    if first is None:
        return None
    feed = first[0]
    if reader.per_feed:
        return {1: feed}
    n = len(next(iter(feed.values())))
    return {b: {k: v[:b] for k, v in feed.items()} for b in sorted({min(b, n) for b in batches})}


def _random_feeds(model: onnx.ModelProto, batch: int, seed: int) -> dict[str, np.ndarray]:
    from onnxprune.calibration.runtime import random_feeds

    return random_feeds(model, batch=batch, seed=seed)


def _ort_version() -> str:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:  # pragma: no cover - a fake session factory in tests
        return "unknown"
