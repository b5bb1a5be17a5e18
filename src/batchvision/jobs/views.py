"""How a job looks to clients: the native job object and Moondream's batch object.

Both carry `outputs: [{index, url}]` once the job has ended: links to the result files served
by batchvision itself, signed (see jobs/signing.py) and valid until the earlier of the results'
expiry and `output_url_ttl_s` from now, so a link handed out never outlives the file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from batchvision.core.db import utcnow
from batchvision.jobs.signing import UrlSigner
from batchvision.jobs.store import FINAL_STATES, JobView


def iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def output_path(job_id: str, index: int) -> str:
    return f"/v1/jobs/{job_id}/outputs/{index}"


@dataclass(frozen=True)
class OutputLinks:
    base_url: str  # scheme://host[:port], no trailing slash
    signer: UrlSigner
    ttl_s: int

    def of(self, job: JobView) -> list[dict[str, Any]]:
        if job.state not in FINAL_STATES or job.expires_at is None:
            return []
        expires = min(job.expires_at, utcnow() + dt.timedelta(seconds=self.ttl_s))
        links = []
        for index in range(job.output_files):
            path = output_path(job.id, index)
            query = self.signer.sign(path, expires_at=int(expires.timestamp()))
            links.append({"index": index, "url": f"{self.base_url}{path}?{query}"})
        return links


def _error(job: JobView) -> dict[str, str] | None:
    if job.error_code is None:
        return None
    return {"code": job.error_code, "message": job.error_message or job.error_code}


def native_view(job: JobView, links: OutputLinks) -> dict[str, Any]:
    return {
        "id": job.id,
        "object": "job",
        "status": job.state,
        "progress": {
            "total": job.total_lines,
            "completed": job.completed_lines,
            "failed": job.failed_lines,
        },
        "usage": {"images": job.images, "input_tokens": job.tokens, "output_tokens": 0},
        "outputs": links.of(job),
        "error": _error(job),
        "cancel_requested": job.cancel_requested,
        "callback_url": job.callback_url,
        "retention_days": job.retention_days,
        "created_at": iso(job.created_at),
        "completed_at": iso(job.completed_at),
        "expires_at": iso(job.expires_at),
    }


def moondream_status(job: JobView) -> str:
    """Moondream knows four states; a purged job still reports how it ended."""
    if job.state in ("chunking", "processing", "completed", "failed"):
        return job.state
    return "failed" if job.error_code else "completed"


def moondream_view(job: JobView, links: OutputLinks, model: str) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": job.id,
        "status": moondream_status(job),
        "model": model,
        "progress": {
            "total": job.total_lines,
            "completed": job.completed_lines,
            "failed": job.failed_lines,
        },
        "usage": {"input_tokens": job.tokens, "output_tokens": 0},
        "outputs": links.of(job),
        "created_at": iso(job.created_at),
        "completed_at": iso(job.completed_at),
        "expires_at": iso(job.expires_at),
    }
    error = _error(job)
    if error is not None:
        view["error"] = error
    return view
