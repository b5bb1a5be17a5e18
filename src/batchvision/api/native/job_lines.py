"""The native job surface's hooks: a line is `{id?, skill, image | images | image_url, ...params}`
run on that one skill; its result is the skill's output (`{"images": [...]}` for several).

A video line (`video` instead of the image fields, with `fps`, `start_time`, `end_time`,
`max_frames`: work/lines.py) runs the skill on each sampled frame; its result is
`{"video": {container, codec, width, height, fps, duration_s, ...}, "frames": [{number, time_s,
result | error}], "summary": ...}`, the frames in time order and the summary the sync API's
(core/video_summary.py)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from batchvision.api.native.outputs import native_outputs
from batchvision.core.types import FrameResult, ItemError, ItemResult, Task, VideoResult
from batchvision.jobs.store import JobView
from batchvision.jobs.views import OutputLinks, iso, job_error
from batchvision.pipeline import Pipeline
from batchvision.work.lines import JobLine, string_or_integer_id
from batchvision.work.surface import LinePlan

SURFACE = "native"


class NativeJobs:
    """`JobSurface` of `/v1/jobs` and `/v1/uploads`."""

    name = SURFACE
    # Every line refused: the job still completes, each result line saying why.
    all_invalid_is_empty_batch = False

    def line_skills(self, pipeline: Pipeline) -> Collection[str]:
        return pipeline.skills.keys()

    def check_id(self, raw_id: Any) -> str | None:
        return string_or_integer_id(raw_id)

    def plan_line(self, line: JobLine, pipeline: Pipeline) -> LinePlan | ItemError:
        tasks = pipeline.prepare_tasks([Task(line.skill, line.params)])
        return LinePlan(tasks=tasks, images=line.images, detail=line.skill)

    def encode_line(self, plan: LinePlan, results: Sequence[ItemResult]) -> dict[str, Any]:
        outputs = [native_outputs(result)[plan.detail] for result in results]
        return {"result": outputs[0] if len(outputs) == 1 else {"images": outputs}}

    def encode_video_line(self, plan: LinePlan, result: VideoResult) -> dict[str, Any]:
        frames = [_frame_entry(frame, plan.detail) for frame in result.frames]
        return {"result": {"video": result.video, "frames": frames, "summary": result.summary}}

    def line_error(self, error: ItemError) -> dict[str, Any]:
        return {"code": error.code.value, "message": error.message}

    def job_view(self, job: JobView, links: OutputLinks) -> dict[str, Any]:
        return native_view(job, links)


def _frame_entry(frame: FrameResult, skill: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"number": frame.number, "time_s": frame.time_s}
    if frame.errors:
        error = frame.errors[0]
        entry["error"] = {"code": error.code.value, "message": error.message}
    else:
        entry["result"] = native_outputs(frame)[skill]
    return entry


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
        "usage": {
            "images": job.images,
            "videos": job.videos,
            "uncharged_credits": job.uncharged_credits,
            "input_tokens": job.input_tokens,
            "output_tokens": job.output_tokens,
        },
        "outputs": links.of(job),
        "error": job_error(job),
        "cancel_requested": job.cancel_requested,
        "callback_url": job.callback_url,
        "retention_days": job.retention_days,
        "created_at": iso(job.created_at),
        "completed_at": iso(job.completed_at),
        "expires_at": iso(job.expires_at),
    }
