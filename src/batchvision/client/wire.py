"""What the sync and async clients share: how images, tasks and job lines become requests.

`analyze` sends multipart when every image is local (files are streamed from disk, never read
whole), and JSON when any image is a URL (the server fetches URLs; local images then travel as
base64 in the same body). A job file goes up through the multipart upload routes in parts of
`part_bytes`; job lines given as Python objects are streamed to `POST /v1/jobs` as JSONL.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import mimetypes
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from batchvision import __version__
from batchvision.client.errors import BatchVisionClientError
from batchvision.client.results import Job

DEFAULT_URL = "http://127.0.0.1:8080"
API_KEY_ENV = "BATCHVISION_API_KEY"
# Completing a large upload concatenates its parts before the server answers: allow time for it.
TIMEOUT = httpx.Timeout(120.0, connect=10.0)
# Stops waiting for the server's answer to a delete that only frees space early.
ABORT_TIMEOUT_S = 10.0


def client_headers(api_key: str | None) -> dict[str, str]:
    """The key from the argument, else from BATCHVISION_API_KEY; none means no header (a server
    with auth disabled)."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    headers = {"User-Agent": f"batchvision-client/{__version__}"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def job_id_of(job: Job | str) -> str:
    return job.id if isinstance(job, Job) else job


def refuse_unended(job: Job) -> None:
    if not job.ended:
        raise BatchVisionClientError(
            f"job {job.id} is still {job.status}; download once it has ended"
        )
    if not job.outputs:
        raise BatchVisionClientError(f"job {job.id} ({job.status}) has no result files")


def waited_too_long(job: Job, timeout_s: float) -> BatchVisionClientError:
    return BatchVisionClientError(
        f"job {job.id} did not end within {timeout_s:g} s (it is {job.status})"
    )


# An image: a local path, raw bytes, or an http(s) URL (or a data: URI) for the server to read.
ImageSource = str | os.PathLike[str] | bytes
# A task: a skill name, or {"skill": name, "params": {...}}.
TaskSpec = str | Mapping[str, Any]
# Job lines: each a JSON object (dict) or its text.
JobLine = Mapping[str, Any] | str

MIB = 1024 * 1024
BLOCK = MIB  # read/write granularity while streaming a part or a result file
MAX_PARTS = 10_000  # the server's (and S3's) highest part number
DEFAULT_PART_BYTES = 50 * MIB


def quoted(job_id: str) -> str:
    """A path segment: an id can never reach another route (`../`, `?`, `#`)."""
    return quote(job_id, safe="")


def task_list(tasks: str | TaskSpec | Sequence[TaskSpec] | None) -> list[dict[str, Any]]:
    """`"detect"`, `["detect", "ocr"]`, `{"skill": ..., "params": ...}` or a list of them."""
    if tasks is None:
        return [{"skill": "detect"}]
    if isinstance(tasks, str | Mapping):
        tasks = [tasks]
    return [{"skill": t} if isinstance(t, str) else dict(t) for t in tasks]


@dataclass(frozen=True)
class VideoSampling:
    """Which frames of the request's videos are analysed; None keeps the server's default
    (1 frame a second, from the start to the end, at most 300 frames a video)."""

    fps: float | None = None
    start_time: float | None = None
    end_time: float | None = None
    max_frames: int | None = None

    def fields(self) -> dict[str, float | int]:
        return {name: value for name, value in asdict(self).items() if value is not None}


Media = ImageSource | Sequence[ImageSource]


def _listed(media: Media) -> list[ImageSource]:
    return [media] if isinstance(media, str | bytes | os.PathLike) else list(media)


def _is_remote(item: ImageSource) -> bool:
    return isinstance(item, str) and item.startswith(("http://", "https://", "data:"))


def _inline(item: ImageSource) -> tuple[str, dict[str, Any]]:
    """A URL or data: URI as given, else base64 of the bytes (and the file's name)."""
    if isinstance(item, str) and _is_remote(item):
        return item, {}
    if isinstance(item, bytes):
        return base64.b64encode(item).decode("ascii"), {}
    path = Path(item)
    return base64.b64encode(path.read_bytes()).decode("ascii"), {"filename": path.name}


def _json_image(image: ImageSource) -> dict[str, Any]:
    text, named = _inline(image)
    field = "url" if text.startswith(("http://", "https://")) else "data"
    return {field: text, **named}


def _json_video(video: ImageSource) -> dict[str, Any]:
    text, named = _inline(video)
    return {"video": text, **named}


def _part(field: str, index: int, item: ImageSource, files: contextlib.ExitStack) -> Any:
    if isinstance(item, bytes):
        return (field, (f"{field[:-1]}{index}", item, "application/octet-stream"))
    path = Path(item)
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return (field, (path.name, files.enter_context(path.open("rb")), mime))


@contextlib.contextmanager
def analyze_body(
    images: Media,
    tasks: str | TaskSpec | Sequence[TaskSpec] | None,
    videos: Media = (),
    sampling: VideoSampling | None = None,
) -> Iterator[dict[str, Any]]:
    """httpx keyword arguments for `POST /v1/analyze`; files opened for it close at the end."""
    image_list, video_list = _listed(images), _listed(videos)
    fields: dict[str, Any] = {"tasks": task_list(tasks), **(sampling or VideoSampling()).fields()}
    if any(_is_remote(item) for item in [*image_list, *video_list]):
        fields["images"] = [_json_image(image) for image in image_list]
        fields["videos"] = [_json_video(video) for video in video_list]
        yield {"json": fields}
        return
    fields["tasks"] = json.dumps(fields["tasks"])
    with contextlib.ExitStack() as files:
        parts = [_part("images", i, image, files) for i, image in enumerate(image_list)]
        parts += [_part("videos", i, video, files) for i, video in enumerate(video_list)]
        yield {"files": parts, "data": {name: str(value) for name, value in fields.items()}}


def jsonl_blocks(lines: Iterable[JobLine]) -> Iterator[bytes]:
    """Job lines as JSONL, about a block at a time (a generator, so lines are never all held)."""
    pending: list[bytes] = []
    size = 0
    for line in lines:
        text = line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)
        encoded = text.rstrip("\n").encode() + b"\n"
        pending.append(encoded)
        size += len(encoded)
        if size >= BLOCK:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def part_count(size: int, part_bytes: int) -> int:
    """Parts a file of `size` bytes is sent in; an empty file still sends one (empty) part, so
    the server judges it (`empty_batch`)."""
    count = max(1, math.ceil(size / part_bytes))
    if count > MAX_PARTS:
        raise BatchVisionClientError(
            f"the file needs {count} parts (at most {MAX_PARTS}); use a larger part size"
        )
    return count


def part_lengths(size: int, part_bytes: int) -> list[int]:
    count = part_count(size, part_bytes)
    return [min(part_bytes, size - n * part_bytes) for n in range(count)]


def read_block(file: IO[bytes], left: int) -> bytes:
    block = file.read(min(BLOCK, left))
    if not block:
        raise BatchVisionClientError("the file got shorter while it was being uploaded")
    return block


def submit_options(
    callback_url: str | None, retention_days: int | None, callback_secret: str | None
) -> dict[str, Any]:
    given = {
        "callback_url": callback_url,
        "retention_days": retention_days,
        "callback_secret": callback_secret,
    }
    return {name: value for name, value in given.items() if value is not None}


def output_name(index: int) -> str:
    return f"results_{index}.jsonl"


def result_line(line: str) -> dict[str, Any]:
    parsed = json.loads(line)
    if not isinstance(parsed, dict):
        raise BatchVisionClientError("a result line is not a JSON object")
    return parsed
