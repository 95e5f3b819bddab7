"""A corpus scan's progress, shown from its first second: a bar on the console it is given (`run.py
exemplars`), else a bar on standard error when that is a terminal, else (a search's log, a notebook, a
sweep's worker) a line on standard error when it starts and about every 10%, with the time it expects
to need still."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ScanProgress:
    """A scan's progress: a bar on `console` (or on standard error when that is a terminal), else
    plain lines on standard error, one when the scan starts and one about every 10% with an
    estimate of the time left. Used as a context manager around the scan: `start(total)` once the
    snippets are cut (before it, the bar or the first line says the corpus is being cut), then
    `advance(n)` per batch."""

    def __init__(self, description: str, console: Console | None = None, stream=None) -> None:
        self.description = description
        self.stream = stream if stream is not None else sys.stderr
        if console is None and _is_terminal(self.stream):
            console = Console(file=self.stream)
        self._bar = _progress(console) if console is not None else None
        self._task = None
        self.total = 0
        self.done = 0
        self._started = 0.0
        self._decile = 0

    def __enter__(self) -> ScanProgress:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(f"{self.description}: cutting the corpus into snippets", total=None)
        else:
            self._line(f"{self.description}: cutting the corpus into snippets (a layer's first scan; cached for its other neurons)")
        return self

    def start(self, total: int) -> None:
        self.total, self.done, self._started = total, 0, time.monotonic()
        if self._bar is not None:
            self._bar.update(self._task, description=self.description, total=total, completed=0)
        else:
            self._line(f"{self.description}: 0/{total:,} snippets (0%)")

    def advance(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.advance(self._task, count)
            return
        decile = self.done * 10 // self.total if self.total else 10
        if decile <= self._decile:
            return
        self._decile = decile
        elapsed = time.monotonic() - self._started
        left = elapsed * (self.total - self.done) / self.done if self.done else 0.0
        tail = "done" if self.done >= self.total else f"about {_duration(left)} left"
        self._line(
            f"{self.description}: {self.done:,}/{self.total:,} snippets ({100 * self.done // self.total}%), "
            f"{_duration(elapsed)} so far, {tail}"
        )

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def _line(self, text: str) -> None:
        try:
            print(text, file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed or broken standard error must not end the scan
            pass


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def _duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("snippets"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
