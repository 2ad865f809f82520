"""Thread counts for torch and onnxruntime on shared machines.

torch: 1 thread on a machine with 2 usable cores or fewer, else half the usable cores, at most 4. Measured on the
shared 2-core box (README): retraining with the libraries' defaults was several times slower than with one thread,
because their pools spin and oversubscribe the cores other processes use.
onnxruntime: the same, but never fewer than min(2, usable cores), with its pool's spinning off (runtime.make_session)
so idle threads yield the cores. Measured (tests/benchmarks/bench_speed.py, a 22.6M-parameter encoder, one-shot,
240 samples, idle 2-core box): 1 thread 329 s wall / 329 s CPU, 2 threads 180 s / 341 s: the scan's sessions scale.
`--threads N` sets both.
numpy's BLAS (the OpenBLAS its wheel bundles, which the layer-wise refit's Grams and solves run on): torch's count
too. Its default is a thread per core, and on the shared 2-core box its LAPACK then ran several times slower than on
one thread (np.linalg.solve of 32 systems of 600: 1.14 s with 2 threads, 0.21 s with 1; magika's refit at LAMP 0.9
and 0.54: 14.5 s and 40.3 s, with OMP_NUM_THREADS=1 9.9 s and 12.7 s). bench_corpus sets OMP_NUM_THREADS=1, so its
figures never showed it; the command line did not.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    cpus = usable_cpus()
    return 1 if cpus <= 2 else min(4, cpus // 2)


def default_ort_threads() -> int:
    return max(default_threads(), min(2, usable_cpus()))


_TORCH_THREADS: int | None = None


def torch_threads() -> int | None:
    """The run's torch thread count (set by apply_threads), or None before any run."""
    return _TORCH_THREADS


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (when torch is installed) and onnxruntime's default; returns torch's count."""
    global _TORCH_THREADS
    from onnxprune.calibration import runtime
    from onnxprune.errors import ConfigError

    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads} must be >= 1.")
    n = threads or default_threads()
    runtime.set_default_threads(threads or default_ort_threads())
    _TORCH_THREADS = n
    torch = sys.modules.get("torch")  # not imported here: a one-shot run never needs it (finetune applies n later)
    if torch is not None:
        set_torch_threads(torch, n)
    set_blas_threads(n)
    return n


_BLAS_HOST: list[dict] = []  # {library prefix: thread count} of every BLAS before the run first set them


def set_blas_threads(n: int) -> None:
    """numpy's BLAS (every BLAS threadpoolctl finds loaded) on `n` threads, remembering the host's counts the first
    time (restore_threads). threadpoolctl is the maintained way to drive them (an earlier version here found
    OpenBLAS's symbols through /proc/self/maps with ctypes). Its limiter's own restore puts back every library it saw,
    OpenMP too, which set torch's threads back to the run's count after restore_threads had given the caller theirs:
    the host's BLAS counts are set again by prefix instead."""
    try:
        from threadpoolctl import threadpool_limits

        if not _BLAS_HOST:
            _BLAS_HOST.append(_blas_counts())
        threadpool_limits(limits=int(n), user_api="blas")
    except Exception as exc:  # a nicety: a library we cannot drive keeps its own count
        log.debug("BLAS threads left as they are: %s", exc)


def _blas_counts() -> dict[str, int]:
    """{library prefix: thread count} of every BLAS loaded (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    return {d["prefix"]: d["num_threads"] for d in threadpool_info() if d.get("user_api") == "blas"}


def blas_threads() -> int | None:
    """The thread count of the first BLAS loaded, or None when there is none."""
    return next(iter(_blas_counts().values()), None)


_HOST: list[int] = []  # torch's thread count before the run first set it (restore_threads puts it back)


def set_torch_threads(torch, n: int) -> None:
    """torch.set_num_threads(n), remembering the host's count the first time (sweep 16: a Python caller's
    torch.set_num_threads(2) was 1 after prune(), even after a run that never used torch)."""
    if not _HOST:
        _HOST.append(torch.get_num_threads())
    torch.set_num_threads(n)


def restore_threads() -> None:
    """Torch's and numpy's BLAS thread counts as the host had them before the run (pipeline.run, at its end)."""
    torch = sys.modules.get("torch")
    if _HOST and torch is not None:
        torch.set_num_threads(_HOST.pop())
    _HOST.clear()
    while _BLAS_HOST:
        host = _BLAS_HOST.pop()
        if host:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=host)
