"""A Ctrl-C (or SIGTERM on the command line) that lands inside an import waits until the import is done.

Raised as KeyboardInterrupt inside an import, it leaves the package half-imported: importlib forgets the module it
was running but keeps the submodules that had finished, so the package imported again lacks them (a library sweep:
Ctrl-C during the first prune()'s `import onnx`, and every later call in the process failed with "module 'onnx' has
no attribute 'external_data_helper'"); a C++ extension's initialisation that receives it can abort the process
(torch.distributed's, through pybind11: "terminate called after throwing an instance of
'pybind11::error_already_set'"). Inside an import the signal is sent again `RETRY_S` later instead, until none runs.
Light on purpose: `import onnxprune` imports this.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

RETRY_S = 0.05


def importing(frame) -> bool:
    """Whether `frame` (a signal handler's) runs inside an import."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def deferred(signum: int, frame) -> bool:
    """True, and `signum` sent to this process again `RETRY_S` later, when `frame` runs inside an import."""
    if not importing(frame):
        return False
    retry = threading.Timer(RETRY_S, os.kill, (os.getpid(), signum))
    retry.daemon = True
    retry.start()
    return True


@contextlib.contextmanager
def after_imports():
    """For the duration (a library call: its imports are lazy), a SIGINT inside an import waits for it; elsewhere
    the caller's handler runs as before. Only the main thread can swap handlers; a handler Python cannot call
    (SIG_IGN, SIG_DFL, one set outside Python) is left as it is."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return

    def handler(signum, frame):
        if not deferred(signum, frame):
            previous(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
