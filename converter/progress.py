"""Progress for long steps: a rich bar with ETA on a terminal, plain periodic log lines otherwise (CI logs).

Every long step calls `progress(task, done, total, info="")`; nothing else knows how it is shown.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("onnxprune")


class Progress:
    """Callable progress sink. `quiet` shows nothing; a non-terminal gets a line every `every` seconds."""

    def __init__(self, *, quiet: bool = False, stream=None, every: float = 10.0):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.every = every
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        self._tasks: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self._last_line: dict[str, float] = {}
        self._done: dict[str, int] = {}

    def __call__(self, task: str, done: int, total: int, info: str = "") -> None:
        if self.quiet:
            return
        if self.tty:
            self._rich(task, done, total, info)
        else:
            self._plain(task, done, total, info)

    def _rich(self, task, done, total, info):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        if self._bar is None:
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self._bar.start()
        if task not in self._tasks:
            self._tasks[task] = self._bar.add_task(task, total=total, info=info)
        self._bar.update(self._tasks[task], completed=done, total=total, info=info)

    def _plain(self, task, done, total, info):
        now = time.monotonic()
        if done < self._done.get(task, 0):  # the task started over (a new epoch): its ETA starts over too
            self._started[task] = now
        self._done[task] = done
        start = self._started.setdefault(task, now)
        last = self._last_line.get(task)
        finished = total and done >= total
        # a line every `every` seconds per task, its first at once; an epoch's end only when the last line is older
        # than half of that (a labelled 3-minute run printed 750 lines, every round's every epoch end)
        if last is not None and now - last < (self.every / 2 if finished else self.every):
            return
        self._last_line[task] = now
        pct = f"{100 * done / total:.0f}%" if total else "?"
        eta = ""
        if total and 0 < done < total and now > start:  # a task's first line has no pace yet: no "eta 0s"
            eta = f", eta {(now - start) * (total - done) / done:.0f}s"
        print(f"onnxprune: {task}: {done}/{total} ({pct}{eta}){' ' + info if info else ''}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def silent(task: str, done: int, total: int, info: str = "") -> None:
    """The default for library calls: no output."""
