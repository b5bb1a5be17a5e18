"""The progress helper's plain lines (stderr not a terminal): when they are printed and what
they say."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from batchvision.client.progress import (
    EVERY_ENV,
    BarProgress,
    LineProgress,
    QuietProgress,
    stderr_progress,
)


def test_lines_come_at_most_once_per_interval_plus_the_start_and_the_end() -> None:
    out = io.StringIO()
    with LineProgress("processing", 100, "lines", out, every_s=3600) as bar:
        for done in range(1, 101):
            bar.update(completed=done)
    first, last = out.getvalue().splitlines()
    assert first.startswith("processing: 0/100 lines (0%)")
    assert last.startswith("processing: 100/100 lines (100%)")


def test_every_step_prints_when_the_interval_has_passed() -> None:
    out = io.StringIO()
    with LineProgress("images", 100, "images", out, every_s=0, completed=20) as bar:
        time.sleep(0.01)
        bar.advance(20)
        bar.update(description="images", total=100)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("images: 20/100 images (20%), 0:00:00 elapsed")
    assert lines[1].startswith("images: 40/100 images (40%), ")
    # The rate counts only this run's 20 images, not the 20 a resumed run had already.
    rate = float(lines[1].split(", ")[1].split()[0])
    assert 0 < rate <= 20 / 0.01
    assert " eta " in lines[1]
    assert len(lines) == 3  # the update changed nothing new but the interval is 0


def test_bytes_are_shown_in_KiB_or_MiB_by_size_and_unknown_totals_as_counts() -> None:
    out = io.StringIO()
    with LineProgress("upload big.jsonl", 3 * 1024 * 1024, "bytes", out, every_s=0) as bar:
        bar.advance(1024 * 1024)
    with LineProgress("upload", None, "bytes", out, every_s=0) as bar:
        bar.advance(2048)
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("upload big.jsonl: 1.0/3.0 MiB (33%), ")
    assert "MiB/s" in lines[1]
    assert lines[-1].startswith("upload: 2.0 KiB, ")


def test_stderr_that_is_not_a_terminal_gets_lines_and_disabled_gets_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(EVERY_ENV, "0")
    with stderr_progress("processing", 4, unit="lines") as bar:
        assert isinstance(bar, LineProgress)
        bar.update(completed=2)
    with stderr_progress("hidden", 4, enabled=False) as quiet:
        assert isinstance(quiet, QuietProgress)
        quiet.update(completed=4)
    err = capsys.readouterr().err
    assert "processing: 2/4 lines (50%)" in err
    assert "hidden" not in err
    assert "\r" not in err and "\x1b" not in err


def test_a_bad_interval_in_the_environment_keeps_the_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(EVERY_ENV, "soon")
    with stderr_progress("processing", 10, unit="lines") as bar:
        for done in range(10):
            bar.update(completed=done)  # within the default 5 s: no line until the end
    assert len(capsys.readouterr().err.splitlines()) == 2


def test_a_terminal_gets_a_live_bar_in_bytes_for_uploads() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    with BarProgress("upload big.jsonl", 4 * 1024 * 1024, "bytes", console) as bar:
        bar.advance(1024 * 1024)
        bar.update(completed=4 * 1024 * 1024)
    drawn = screen.getvalue()
    assert "\x1b[" in drawn  # redrawn in place, not printed line after line
    assert "upload big.jsonl" in drawn
    assert "4.0/4.0 MiB" in drawn
    assert "upload big.jsonl:" not in drawn  # the plain line's form


def test_a_terminal_bar_counts_lines_and_changes_its_description() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    with BarProgress("chunking", None, "lines", console) as bar:
        bar.update(completed=3, total=10, description="processing")
        bar.update(completed=10, description="completed")
    drawn = screen.getvalue()
    assert "completed" in drawn and "10/10" in drawn
