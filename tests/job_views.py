"""Bare `JobView`s for tests of code that only reads them (no store behind them)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from batchvision.jobs.store import JobView
from batchvision.jobs.tables import JobState


def job_view(**fields: Any) -> JobView:
    """A processing native job of 100 lines in chunks of 10, with `fields` over that."""
    values: dict[str, Any] = {
        "id": "j1",
        "owner_key_id": None,
        "surface": "native",
        "state": JobState.PROCESSING,
        "error_code": None,
        "error_message": None,
        "input_key": None,
        "total_lines": 100,
        "completed_lines": 0,
        "failed_lines": 0,
        "images": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "chunk_lines": 10,
        "cancel_requested": False,
        "callback_url": None,
        "callback_secret": None,
        "callback_state": None,
        "output_files": 0,
        "retention_days": 7,
        "created_at": dt.datetime.now(dt.UTC),
        "completed_at": None,
        "expires_at": None,
    }
    return JobView(**{**values, **fields})
