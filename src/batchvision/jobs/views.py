"""What every surface's job view shares: ISO times, the job's error, and links to its outputs.

Every view carries `outputs: [{index, url}]` once the job has ended: links to the result files
served by batchvision itself, signed (see jobs/signing.py) and valid until the earlier of the
results' expiry
and `output_url_ttl_s` from now, so a link handed out never outlives the file.
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


def job_error(job: JobView) -> dict[str, str] | None:
    """How a job ended badly, `{code, message}`, or None (also while a decided end is still
    being carried out: the error shows with the final state, not before)."""
    if job.error_code is None or job.state not in FINAL_STATES:
        return None
    return {"code": job.error_code, "message": job.error_message or job.error_code}
