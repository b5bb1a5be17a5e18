"""Progress of long calls, on stderr: a live bar on a terminal, plain lines elsewhere.

Under nohup, cron, CI or systemd stderr is a file or a pipe, where a live bar is either lost or
thousands of carriage-return redraws in the log. There the same progress is one plain line
every few seconds ("running: 40/100 lines (40%), 2.1 lines/s, 0:00:19 elapsed, eta 0:00:28"),
plus one at the end; the interval is `BATCHVISION_PROGRESS_EVERY_S` (default 5 s), e.g. 60 for
a week-long cron log. Used by the client (`progress=True`) and by the CLI's `run` and `jobs`.
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import IO, Protocol, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress
from rich.progress import Task as RichTask
from rich.text import Text

EVERY_ENV = "BATCHVISION_PROGRESS_EVERY_S"
DEFAULT_EVERY_S = 5.0
BYTES = "bytes"
MIB = 1024 * 1024


class Progress(Protocol):
    """What a long call reports: how much is done of how much (total None: not known yet)."""

    def update(
        self, *, completed: int | None = None, total: int | None = None, description: str = ""
    ) -> None: ...

    def advance(self, amount: int) -> None: ...

    def close(self) -> None: ...


class _Closing:
    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class QuietProgress(_Closing):
    """progress=False: reports nothing."""

    def update(
        self, *, completed: int | None = None, total: int | None = None, description: str = ""
    ) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _scale(unit: str, size: int) -> tuple[str, int]:
    """The unit shown and its size in counted units: bytes as KiB or MiB by the file's size."""
    if unit != BYTES:
        return unit, 1
    return ("MiB", MIB) if size >= MIB else ("KiB", 1024)


class LineProgress(_Closing):
    """One plain line at the start, then at most one every `every_s` as work advances, and
    one at the end."""

    def __init__(
        self,
        description: str,
        total: int | None,
        unit: str,
        stream: IO[str],
        every_s: float,
        completed: int = 0,
    ) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.stream, self.every_s = stream, every_s
        self.completed = self.initial = completed  # a resumed run's rate counts only new work
        self.started = time.monotonic()
        self._printed_at = self.started
        self._printed: tuple[str, int, int | None] | None = None  # the state last printed
        self._print()  # a log shows the work started (and its size) before the first step

    def update(
        self, *, completed: int | None = None, total: int | None = None, description: str = ""
    ) -> None:
        self.completed = self.completed if completed is None else completed
        self.total = self.total if total is None else total
        self.description = description or self.description
        self._tick()

    def advance(self, amount: int) -> None:
        self.completed += amount
        self._tick()

    def close(self) -> None:
        if self._state() != self._printed:
            self._print()

    def _tick(self) -> None:
        # Unchanged work still gets its line each interval: a log shows the job is alive.
        if time.monotonic() - self._printed_at >= self.every_s:
            self._print()

    def _state(self) -> tuple[str, int, int | None]:
        return self.description, self.completed, self.total

    def _print(self) -> None:
        self._printed, self._printed_at = self._state(), time.monotonic()
        print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        """e.g. "processing: 40/100 lines (40%), 2.1 lines/s, 0:00:19 elapsed, eta 0:00:28"."""
        unit, size = _scale(self.unit, self.total or self.completed)
        elapsed = time.monotonic() - self.started
        text = f"{self.description}: {self._shown(self.completed, size)}"
        if self.total:
            percent = 100 * self.completed // self.total
            text += f"/{self._shown(self.total, size)} {unit} ({percent}%)"
        else:
            text += f" {unit}"
        rate = (self.completed - self.initial) / elapsed if elapsed > 0 else 0.0
        if rate:
            text += f", {rate / size:.1f} {unit}/s"
        text += f", {_clock(elapsed)} elapsed"
        if rate and self.total and self.completed < self.total:
            text += f", eta {_clock((self.total - self.completed) / rate)}"
        return text

    def _shown(self, value: int, size: int) -> str:
        return str(value) if size == 1 else f"{value / size:.1f}"


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: RichTask) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s")


def _columns(unit: str) -> list[ProgressColumn]:
    if unit == BYTES:
        counted: list[ProgressColumn] = [DownloadColumn(binary_units=True), TransferSpeedColumn()]
    else:
        counted = [MofNCompleteColumn(), _RateColumn(unit)]
    tail = [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    return [TextColumn("{task.description}"), BarColumn(), *counted, *tail]


class BarProgress(_Closing):
    """A live bar (rich) on a terminal."""

    def __init__(
        self, description: str, total: int | None, unit: str, console: Console, completed: int = 0
    ) -> None:
        self._bar = RichProgress(*_columns(unit), console=console)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total or None, completed=completed)

    def update(
        self, *, completed: int | None = None, total: int | None = None, description: str = ""
    ) -> None:
        # None leaves a field as it was (rich's convention too).
        self._bar.update(
            self._task, completed=completed, total=total or None, description=description or None
        )

    def advance(self, amount: int) -> None:
        self._bar.advance(self._task, amount)

    def close(self) -> None:
        self._bar.stop()


def every_s_from_env() -> float:
    """The plain-line interval; a value that is not a positive number keeps the default."""
    try:
        value = float(os.environ.get(EVERY_ENV, DEFAULT_EVERY_S))
    except ValueError:
        return DEFAULT_EVERY_S
    return value if value >= 0 else DEFAULT_EVERY_S


def stderr_progress(
    description: str,
    total: int | None = None,
    *,
    unit: str = "items",
    completed: int = 0,
    enabled: bool = True,
) -> QuietProgress | LineProgress | BarProgress:
    """A bar when stderr is a terminal, plain lines when it is not, nothing when disabled.
    `completed`: work done before (a resumed run). Use it as a context manager (or call
    `close()`): the end prints the final state."""
    if not enabled:
        return QuietProgress()
    console = Console(file=sys.stderr)
    if console.is_terminal:
        return BarProgress(description, total, unit, console, completed)
    return LineProgress(description, total, unit, sys.stderr, every_s_from_env(), completed)
