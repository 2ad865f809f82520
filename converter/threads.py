"""Thread counts for torch and onnxruntime on shared machines.

Default: 1 thread on a machine with 2 usable cores or fewer, else half the usable cores, at most 4. Measured on
the shared 2-core box (README): retraining with the libraries' defaults was several times slower than with one
thread, because their pools spin and oversubscribe the cores other processes use.
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


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (when torch is installed) and onnxruntime's default; returns the count."""
    from onnxprune.calibration import runtime
    from onnxprune.errors import ConfigError

    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads} must be >= 1.")
    n = threads or default_threads()
    runtime.set_default_threads(n)
    torch = sys.modules.get("torch")  # not imported here: a one-shot run never needs it (finetune applies n later)
    if torch is not None:
        torch.set_num_threads(n)
    return n
