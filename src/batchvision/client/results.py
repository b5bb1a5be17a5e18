"""Typed views of the native API's replies. Fields every skill shares are typed; a skill's own
output stays the dict the server sent (`ImageResult.outputs["detect"]["objects"]`, ...), as the
README's output tables describe it. Each view keeps the server's JSON in `raw`, so nothing the
server adds later is lost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FINAL_STATES = frozenset({"completed", "failed", "cancelled", "expired"})


def _int(value: Any) -> int:
    return int(value or 0)


@dataclass(frozen=True)
class ErrorInfo:
    code: str
    message: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ErrorInfo:
        return cls(str(body.get("code")), str(body.get("message")))

    @classmethod
    def maybe(cls, body: Any) -> ErrorInfo | None:
        return cls.from_json(body) if isinstance(body, dict) else None


@dataclass(frozen=True)
class ImageResult:
    """One image of an analyze request, in request order. `status` is ok, partial (some
    tasks failed) or error; `outputs` maps each skill that ran to its output."""

    index: int
    id: str | None
    filename: str | None
    status: str
    image: dict[str, Any] | None
    outputs: dict[str, Any]
    errors: list[ErrorInfo]
    timings_ms: dict[str, float]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ImageResult:
        return cls(
            index=_int(body.get("index")),
            id=body.get("id"),
            filename=body.get("filename"),
            status=str(body.get("status")),
            image=body.get("image"),
            outputs=dict(body.get("outputs") or {}),
            errors=[ErrorInfo.from_json(e) for e in body.get("errors") or []],
            timings_ms=dict(body.get("timings_ms") or {}),
        )

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class VideoResult:
    """One video: its sampled frames (each `{number, time_s, outputs, errors}`) and summary."""

    index: int
    id: str | None
    filename: str | None
    status: str
    frames: list[dict[str, Any]]
    summary: dict[str, Any]
    errors: list[ErrorInfo]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> VideoResult:
        return cls(
            index=_int(body.get("index")),
            id=body.get("id"),
            filename=body.get("filename"),
            status=str(body.get("status")),
            frames=list(body.get("frames") or []),
            summary=dict(body.get("summary") or {}),
            errors=[ErrorInfo.from_json(e) for e in body.get("errors") or []],
        )


@dataclass(frozen=True)
class AnalyzeResponse:
    id: str
    tasks: list[dict[str, Any]]  # each {skill, params}, the params with their defaults filled
    results: list[ImageResult]
    videos: list[VideoResult]
    summary: dict[str, int]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> AnalyzeResponse:
        return cls(
            id=str(body.get("id")),
            tasks=list(body.get("tasks") or []),
            results=[ImageResult.from_json(r) for r in body.get("results") or []],
            videos=[VideoResult.from_json(v) for v in body.get("videos") or []],
            summary=dict(body.get("summary") or {}),
            raw=body,
        )


@dataclass(frozen=True)
class JobProgress:
    total: int
    completed: int
    failed: int

    @property
    def done(self) -> int:
        """Lines that need no more work: failed lines count, they are in the results too."""
        return self.completed + self.failed


@dataclass(frozen=True)
class JobOutput:
    """A result file: a signed link, so it downloads without the API key."""

    index: int
    url: str


@dataclass(frozen=True)
class Job:
    id: str
    status: str  # chunking, processing, then completed, failed, cancelled (expired once purged)
    progress: JobProgress
    usage: dict[str, Any]
    outputs: list[JobOutput]
    error: ErrorInfo | None
    created_at: str | None
    completed_at: str | None
    expires_at: str | None
    callback_secret: str | None  # only in the reply to a submit that asked for a callback
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Job:
        progress = body.get("progress") or {}
        outputs = [
            JobOutput(_int(o.get("index")), str(o.get("url"))) for o in body.get("outputs") or []
        ]
        return cls(
            id=str(body["id"]),
            status=str(body.get("status")),
            progress=JobProgress(
                _int(progress.get("total")),
                _int(progress.get("completed")),
                _int(progress.get("failed")),
            ),
            usage=dict(body.get("usage") or {}),
            outputs=sorted(outputs, key=lambda output: output.index),
            error=ErrorInfo.maybe(body.get("error")),
            created_at=body.get("created_at"),
            completed_at=body.get("completed_at"),
            expires_at=body.get("expires_at"),
            callback_secret=body.get("callback_secret"),
            raw=body,
        )

    @property
    def ended(self) -> bool:
        return self.status in FINAL_STATES


@dataclass(frozen=True)
class JobPage:
    """Jobs newest first; `next_cursor` fetches the next page (None on the last one)."""

    jobs: list[Job]
    next_cursor: str | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> JobPage:
        jobs = [Job.from_json(job) for job in body.get("jobs") or []]
        return cls(jobs, body.get("next_cursor") or None)


@dataclass(frozen=True)
class Usage:
    """The calling key's balance ("unlimited" or credits left) and its use by UTC day."""

    key: dict[str, Any]
    balance: int | str
    totals: dict[str, int]
    days: list[dict[str, Any]]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Usage:
        return cls(
            key=dict(body.get("key") or {}),
            balance=body.get("balance", 0),
            totals=dict(body.get("totals") or {}),
            days=list(body.get("days") or []),
            raw=body,
        )
