"""LiveProgress: running chunks' finished lines added to a job's ledger counts, never twice."""

from __future__ import annotations

import dataclasses

import pytest

from batchvision.jobs.progress import LiveProgress
from batchvision.jobs.store import JobView
from job_views import job_view


def job(completed: int = 0, failed: int = 0) -> JobView:
    return job_view(completed_lines=completed, failed_lines=failed)


def test_running_lines_are_added_and_a_commit_moves_them_to_the_ledger() -> None:
    progress = LiveProgress()
    ledger = job()
    for ok in (True, True, False):
        progress.line_done("j1", 0, ok)
    progress.line_done("j1", 1, True)
    seen = progress.read(lambda: ledger)
    assert (seen.completed_lines, seen.failed_lines) == (3, 1)

    def commit_chunk_0() -> str:
        nonlocal ledger
        ledger = dataclasses.replace(ledger, completed_lines=2, failed_lines=1)
        return "recorded"

    assert progress.commit("j1", 0, commit_chunk_0) == "recorded"
    after = progress.read(lambda: ledger)
    assert (after.completed_lines, after.failed_lines) == (3, 1)  # same total, not 5/2


def test_a_failed_commit_still_drops_the_chunk_and_forget_clears_the_job() -> None:
    progress = LiveProgress()
    progress.line_done("j1", 0, True)
    progress.line_done("j1", 1, True)

    def broken() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        progress.commit("j1", 0, broken)
    assert progress.read(job).completed_lines == 1  # only chunk 1 is still counted
    progress.forget("j1", 1)
    assert progress.read(job).completed_lines == 0
    progress.line_done("j1", 2, False)
    progress.forget("j1")
    assert progress.read(job).failed_lines == 0


def test_pages_get_the_same_adjustment() -> None:
    progress = LiveProgress()
    progress.line_done("j1", 3, True)
    jobs, cursor = progress.read_page(lambda: ([job(5)], "next"))
    assert [j.completed_lines for j in jobs] == [6]
    assert cursor == "next"
