"""What a surface that runs batch jobs tells the job machinery: its job hooks.

The runner and chunk processing never name a surface. Each job records the surface it was
submitted through (`JobView.surface`); the app hands the job service one `JobSurface` per name
(the native API's and each compat surface's, from `api/`), and every surface-specific decision
goes through these hooks:

- `line_skills` — the skill names its lines may ask for;
- `check_id` — which client ids a line may carry (echoed back unchanged in its result line);
- `plan_line` — a parsed line → the core tasks to run on its images, or that line's error;
- `encode_line` — the pipeline's results for a planned line → the fields of its ok result line;
- `line_error` — a per-line `ItemError` → that surface's `{code, message}`;
- `job_view` — a job → that surface's status object (also the callback body);
- `all_invalid_is_empty_batch` — whether a job whose every line was invalid (refused for what it
  says, before any inference: see `work/chunks.py`) ends `failed` with `empty_batch` rather than
  `completed` with every line failed. A surface whose page promises the former ("No valid
  lines in file") sets it; the native surface keeps the latter, since each result line already
  says what was wrong and a client of `/v1/jobs` reads them either way. Only a job that ran to
  its end is judged so: a cancelled, timed-out or failed job keeps its own ending.

A surface that also takes video lines (a `video` instead of images: `work/lines.py`) is a
`VideoJobSurface`: one more hook, `encode_video_line`, shapes a video's sampled frames and
summary; the lines of any other surface keep `video` as a plain param.

The line envelope `{line_index, id, status, result | error}` is shared by every surface.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from batchvision.core.types import ImageInput, ItemError, ItemResult, VideoResult
from batchvision.jobs.store import JobView
from batchvision.jobs.views import OutputLinks
from batchvision.pipeline import Pipeline, PreparedTask
from batchvision.work.lines import JobLine


@dataclass(frozen=True)
class LinePlan:
    """How one valid line runs: prepared tasks over its images, plus whatever the surface's
    `encode_line` needs to shape the result (`detail`, opaque to the job machinery).
    `together`: its one task runs once over all its images (a question about several images,
    `Pipeline.analyze_together`), its output carried by the first result."""

    tasks: list[PreparedTask]
    images: list[ImageInput]
    detail: Any = None
    together: bool = False


class JobSurface(Protocol):
    """The job hooks of one surface; see the module docstring."""

    # Surface names are plain strings, each owned by its surface's folder (`SURFACE = "..."`):
    # a core enum of surfaces would have to name every surface, which the layers forbid.
    name: str
    all_invalid_is_empty_batch: bool

    def line_skills(self, pipeline: Pipeline) -> Collection[str]:
        """The skill names a line may ask for; any other is the line's `unknown_skill`."""
        ...

    def check_id(self, raw_id: Any) -> str | None:
        """Why `raw_id` (the line's `id` as parsed JSON, not None) is refused, or None."""
        ...

    def plan_line(self, line: JobLine, pipeline: Pipeline) -> LinePlan | ItemError: ...

    def encode_line(self, plan: LinePlan, results: Sequence[ItemResult]) -> dict[str, Any]:
        """The ok line's fields besides the envelope, e.g. `{"result": ...}`."""
        ...

    def line_error(self, error: ItemError) -> dict[str, Any]:
        """`{"code", "message"}` of a failed line in this surface's vocabulary."""
        ...

    def job_view(self, job: JobView, links: OutputLinks) -> dict[str, Any]: ...


@runtime_checkable
class VideoJobSurface(JobSurface, Protocol):
    """A surface whose lines may carry a video; see the module docstring."""

    def encode_video_line(self, plan: LinePlan, result: VideoResult) -> dict[str, Any]:
        """The ok video line's fields besides the envelope: its frames' outputs and summary."""
        ...


def takes_videos(surface: JobSurface) -> bool:
    return isinstance(surface, VideoJobSurface)
