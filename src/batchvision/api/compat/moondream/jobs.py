"""The Moondream Batch surface's job hooks: which lines run (see `lines.py`), their result lines
in Moondream's form, its four per-line error codes, and its batch object.

- `check_id`: any JSON value is an id (the page types `id` "any"), echoed unchanged; the native
  string-or-integer rule does not apply here (see `lines.id_problem`).
- `plan_line`: the typed line (`lines.typed_line`), then detect / point on a COCO class run on
  the detector, everything else on the vision-language backend (`lines.plan_line`).
- `encode_line`: the result in Moondream's form with the line's `usage`: a VLM line's tokens as
  its backend reported them (absent when it reported none: never estimated), a detector line's
  zero. The batch's `usage` is the sum over its lines (`JobView.input_tokens`).
- `line_error`: our finer codes map onto Moondream's four (`LINE_CODES`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from batchvision.api.compat.moondream.lines import (
    MOONDREAM_SKILLS,
    DetectorPlan,
    VlmPlan,
    id_problem,
    moondream_result,
    needs_vlm_message,
    plan_line,
    vlm_result,
)
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import ItemError, ItemResult, Task
from batchvision.jobs.store import JobView
from batchvision.jobs.views import OutputLinks, iso, job_error
from batchvision.models.vlm.config import DEFAULT_VLM_CARD
from batchvision.pipeline import Pipeline
from batchvision.skills.detect import DEFAULT_DETECT_MODEL
from batchvision.work.lines import JobLine, LineError
from batchvision.work.surface import LinePlan

SURFACE = "moondream"

# Moondream promises four per-line codes; ours map onto the nearest of them.
LINE_CODES = {
    ErrorCode.INVALID_REQUEST: "invalid_request",
    ErrorCode.INVALID_PARAMETER: "invalid_request",
    ErrorCode.TOO_MANY_IMAGES: "invalid_request",
    ErrorCode.UNKNOWN_SKILL: "unknown_skill",
    ErrorCode.IMAGE_DECODE_FAILED: "image_decode_failed",
    ErrorCode.UNSUPPORTED_FORMAT: "image_decode_failed",
    ErrorCode.IMAGE_TOO_LARGE: "image_decode_failed",
    ErrorCode.FETCH_FAILED: "image_decode_failed",
    ErrorCode.URL_NOT_ALLOWED: "image_decode_failed",
}


class MoondreamJobs:
    """`JobSurface` of `/v1/batch`."""

    name = SURFACE
    all_invalid_is_empty_batch = True  # the page: empty_batch, "No valid lines in file"

    def line_skills(self, pipeline: Pipeline) -> Collection[str]:
        return MOONDREAM_SKILLS

    def check_id(self, raw_id: Any) -> str | None:
        # The page's `id` is "any" (not the native string-or-integer rule); see `id_problem`.
        return id_problem(raw_id)

    def plan_line(self, line: JobLine, pipeline: Pipeline) -> LinePlan | ItemError:
        names = pipeline.registry.card(DEFAULT_DETECT_MODEL).class_names()
        plan = plan_line(line, names, DEFAULT_VLM_CARD)
        if isinstance(plan, ItemError):
            return plan
        if isinstance(plan, DetectorPlan):
            params = {"model": DEFAULT_DETECT_MODEL, "classes": [plan.class_name]}
            tasks = pipeline.prepare_tasks([Task("detect", params)])
            return LinePlan(tasks=tasks, images=line.images, detail=plan)
        try:
            tasks = pipeline.prepare_tasks([plan.task])
        except BatchVisionError as exc:
            return ItemError(exc.code, needs_vlm_message(plan, exc.message), plan.task.skill)
        return LinePlan(tasks=tasks, images=line.images, detail=plan, together=plan.together)

    def encode_line(self, plan: LinePlan, results: Sequence[ItemResult]) -> dict[str, Any]:
        detail: DetectorPlan | VlmPlan = plan.detail
        image = results[0].image or {}
        width, height = image.get("width", 1), image.get("height", 1)
        if isinstance(detail, DetectorPlan):
            output = results[0].outputs["detect"]
            result = moondream_result(detail, output, width, height)
            # The page's successful line carries usage; a detector line uses no tokens.
            return {"result": result, "usage": {"input_tokens": 0, "output_tokens": 0}}
        output = results[0].outputs[detail.task.skill]
        fields: dict[str, Any] = {"result": vlm_result(detail, output, width, height)}
        if "usage" in output:
            fields["usage"] = dict(output["usage"])
        return fields

    def line_error(self, error: ItemError) -> dict[str, Any]:
        if isinstance(error, LineError) and error.bad_image_data:
            # Moondream reports undecodable image data, base64 included, as image_decode_failed.
            return {"code": "image_decode_failed", "message": error.message}
        return {"code": LINE_CODES.get(error.code, "processing_error"), "message": error.message}

    def job_view(self, job: JobView, links: OutputLinks) -> dict[str, Any]:
        return moondream_view(job, links, DEFAULT_DETECT_MODEL)


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
        "usage": {"input_tokens": job.input_tokens, "output_tokens": job.output_tokens},
        "outputs": links.of(job),
        "created_at": iso(job.created_at),
        "completed_at": iso(job.completed_at),
        "expires_at": iso(job.expires_at),
    }
    error = job_error(job)
    if error is not None:
        view["error"] = error
    return view
