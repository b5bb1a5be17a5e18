"""`batchvision run FOLDER`: a whole folder through one skill into one results file, offline.

Camera-trap seasons are 100,000+ photos, so the run streams: it reads at most one batch of
image bytes at a time, keeps only the small per-image records, and every N images writes a
checkpoint atomically. A killed run resumed with `--resume` redoes at most N images.

Videos in the folder (MP4, MOV, AVI, MKV, WebM) are sampled (`--fps`, `--max-frames`) and each
sampled frame is one record named as MegaDetector's own video tool names them,
`clip.mp4/frame000123.jpg` (the frame's number in the stream), after the images; a video that
cannot be read is one error record under its own name. Each video's roll-up (which labels
appear, first and last time seen, frames, best score) goes to `OUT.videos.json`. Videos are
checkpointed whole, after each one.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from batchvision.api.native.outputs import native_outputs
from batchvision.cli.draw import drawing_path, write_drawing
from batchvision.cli.exits import CliError, ExitStatus, reported
from batchvision.cli.options import DrawDir, ModelDirs, build_settings, parse_params, write_utf8
from batchvision.cli.run_formats import (
    FormatError,
    Record,
    RunInfo,
    check_format,
    format_for,
    render,
)
from batchvision.cli.summary import run_summary
from batchvision.client.progress import stderr_progress
from batchvision.core.errors import ErrorCode
from batchvision.core.fsutil import write_atomic
from batchvision.core.settings import Settings
from batchvision.core.types import ImageInput, ItemError, ItemResult, Task, VideoInput
from batchvision.intake.decode import IMAGE_SUFFIXES
from batchvision.intake.files import file_input
from batchvision.intake.video import VIDEO_SUFFIXES, FrameSampling

if TYPE_CHECKING:
    from batchvision.core.types import VideoResult
    from batchvision.pipeline import Pipeline, PreparedTask

CHECKPOINT_VERSION = 1


@dataclass
class RunSpec:
    folder: Path
    skill: str
    params: dict[str, Any]
    fmt: str
    out: Path
    settings: Settings
    checkpoint_every: int = 500
    batch: int = 16
    resume: bool = False
    draw: Path | None = None
    files: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    sampling: FrameSampling = field(default_factory=FrameSampling)

    @property
    def checkpoint(self) -> Path:
        return self.out.with_name(self.out.name + ".checkpoint.json")

    @property
    def rollup(self) -> Path:
        return self.out.with_name(self.out.name + ".videos.json")


def run(
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="FOLDER", help="folder to scan (recursively)", exists=True, file_okay=False
        ),
    ],
    skill: Annotated[
        str, typer.Option(metavar="NAME", help="skill to run, e.g. animals, detect, metadata")
    ],
    out: Annotated[Path, typer.Option(metavar="FILE", help="results file to write")],
    format: Annotated[  # the option is called --format
        str | None,
        typer.Option(
            metavar="NAME",
            help="megadetector, coco, csv or jsonl (default: from the --out extension)",
        ),
    ] = None,
    params: Annotated[
        str | None, typer.Option(metavar="JSON", help="JSON params for the skill")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(metavar="SCORE", help="shortcut for params.threshold")
    ] = None,
    country: Annotated[
        str | None, typer.Option(metavar="CODE", help="shortcut for params.country")
    ] = None,
    checkpoint_every: Annotated[
        int, typer.Option(min=1, metavar="N", help="write a checkpoint every N images")
    ] = 500,
    resume: Annotated[bool, typer.Option(help="continue from the checkpoint")] = False,
    batch: Annotated[
        int, typer.Option(min=1, metavar="N", help="images read and analysed at once")
    ] = 16,
    fps: Annotated[
        float, typer.Option(metavar="FPS", help="videos: frames analysed per second")
    ] = 1.0,
    max_frames: Annotated[
        int, typer.Option(metavar="N", help="videos: at most this many frames each")
    ] = 300,
    draw: DrawDir = None,
    model_dir: ModelDirs = None,
) -> None:
    """Run one skill over every image and video in FOLDER and write one results file, with
    checkpoints (videos: one record per sampled frame, and a roll-up in OUT.videos.json).

    The format follows the --out extension unless --format is given: .csv is csv, .jsonl
    jsonl, .json megadetector for animals and coco for detect; any other extension is jsonl
    (megadetector for animals). Ends with a summary line on stdout; exits 1 when every image
    failed."""
    with reported():
        spec = _spec(folder, skill, out, format, params, model_dir)
        spec.params.update(_shortcuts(threshold=threshold, country=country))
        spec.checkpoint_every, spec.batch, spec.resume = checkpoint_every, batch, resume
        spec.sampling, spec.draw = FrameSampling(fps=fps, max_frames=max_frames), draw
        found = scan_folder(folder, leave_out=draw)
        spec.files, spec.videos = found.images, found.videos
        if not spec.files and not spec.videos:
            skipped = f"; {found.skipped_note()}" if found.skipped else ""
            raise CliError(f"no images or videos found in {folder}{skipped}")
        if found.skipped:
            typer.echo(found.skipped_note(), err=True)
        records = asyncio.run(_execute(spec))
    _report(spec, records)


def _report(spec: RunSpec, records: list[Record]) -> None:
    """What was written, the run's summary line, and exit 1 when no image succeeded."""
    wrote = f"wrote {len(spec.files)} image results"
    if spec.videos:
        wrote += f" and the frames of {len(spec.videos)} videos (roll-up: {spec.rollup})"
    typer.echo(f"{wrote} to {spec.out}", err=True)
    write_utf8(run_summary(records, spec.skill, frames=len(records) - len(spec.files)) + "\n")
    if records and all(record["status"] != "ok" for record in records):
        with reported():
            first = records[0]["error"]
            raise CliError(
                f"every one of the {len(records)} images failed "
                f"(the first: {first['code']}: {first['message']})"
            )


def _spec(
    folder: Path,
    skill: str,
    out: Path,
    fmt: str | None,
    params: str | None,
    model_dirs: list[Path] | None,
) -> RunSpec:
    """Everything that can be refused without touching an image or a model."""
    from batchvision.skills import SKILL_TYPES, unknown_skill

    if skill not in SKILL_TYPES:
        raise unknown_skill(skill)
    try:
        fmt = fmt or format_for(out, skill)
        check_format(fmt, skill)
    except FormatError as exc:
        raise CliError(str(exc), ExitStatus.USAGE) from None
    settings = build_settings(model_dirs=model_dirs)
    return RunSpec(folder, skill, parse_params(params), fmt, out, settings)


def _shortcuts(**values: Any) -> dict[str, Any]:
    """--threshold/--country, merged over --params: they are the more specific request."""
    return {name: value for name, value in values.items() if value is not None}


@dataclass
class Scan:
    """A folder's files: images and videos as sorted relative POSIX paths, so runs (and resumed
    runs) on any platform see the same order; the rest counted by extension."""

    images: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def skipped_note(self) -> str:
        """ "skipped 3 files batchvision does not read (2 .txt, 1 .bak)", or "" when none."""
        if not self.skipped:
            return ""
        kinds = ", ".join(f"{n} {ext}" for ext, n in self.skipped.most_common())
        total = sum(self.skipped.values())
        return f"skipped {total} file{'s' * (total != 1)} batchvision does not read ({kinds})"


def scan_folder(folder: Path, leave_out: Path | None = None) -> Scan:
    """`leave_out`: a folder inside `folder` whose files are not inputs (the --draw folder,
    whose pictures would otherwise be analysed by the next run)."""
    scan = Scan()
    skip = leave_out.resolve() if leave_out is not None else None
    for path in folder.rglob("*"):
        if not path.is_file() or (skip is not None and path.resolve().is_relative_to(skip)):
            continue
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            scan.images.append(path.relative_to(folder).as_posix())
        elif suffix in VIDEO_SUFFIXES:
            scan.videos.append(path.relative_to(folder).as_posix())
        else:
            scan.skipped[suffix or "(no extension)"] += 1
    scan.images.sort()
    scan.videos.sort()
    return scan


def scan_images(folder: Path) -> list[str]:
    return scan_folder(folder).images


# --- the run ----------------------------------------------------------------------------------


async def _execute(spec: RunSpec) -> list[Record]:
    from batchvision.pipeline import Pipeline

    pipeline = Pipeline(spec.settings)
    try:
        prepared = pipeline.prepare_tasks([Task(spec.skill, spec.params)])
        identity = {
            "skill": spec.skill,
            "params": prepared[0].params.model_dump(mode="json"),
            "format": spec.fmt,
        }
        if spec.videos:
            sampling = spec.sampling
            identity["sampling"] = {"fps": sampling.fps, "max_frames": sampling.max_frames}
        done = _start_records(spec, identity)
        spec.out.parent.mkdir(parents=True, exist_ok=True)
        await _process(spec, identity, done, pipeline, prepared)
        await _process_videos(spec, identity, done, pipeline, prepared)
    finally:
        await pipeline.close()
    records = [done[name] for name in spec.files]
    records += [frame for name in spec.videos for frame in done[name]["frames"]]
    info = RunInfo(spec.skill, datetime.now(UTC).isoformat(timespec="seconds"))
    write_atomic(spec.out, render(spec.fmt, records, info))
    if spec.videos:
        rollup = {name: done[name]["rollup"] for name in spec.videos}
        write_atomic(spec.rollup, json.dumps(rollup, indent=1, ensure_ascii=False).encode())
    spec.checkpoint.unlink(missing_ok=True)
    return records


async def _process_videos(
    spec: RunSpec,
    identity: dict[str, Any],
    done: dict[str, Record],
    pipeline: Pipeline,
    prepared: list[PreparedTask],
) -> None:
    """One video at a time (its frames overlap in the pipeline), checkpointed after each."""
    for index, name in enumerate(spec.videos):
        if name in done:
            continue
        video = VideoInput(index=index, filename=name, path=spec.folder / name)
        result = await pipeline.analyze_video(video, prepared, spec.sampling)
        done[name] = video_record(name, result, spec.skill)
        _save_checkpoint(spec, identity, done)
        typer.echo(f"video {name}: {len(done[name]['frames'])} frames", err=True)


BATCHES_IN_FLIGHT = 2


async def _process(
    spec: RunSpec,
    identity: dict[str, Any],
    done: dict[str, Record],
    pipeline: Pipeline,
    prepared: list[PreparedTask],
) -> None:
    """Two batches in flight: while one finishes its slowest images, the next one's files are
    read and decoded, so the model does not idle on a batch's tail. Batches are recorded in
    order, so a checkpoint still holds exactly the first k*N images."""
    todo = [name for name in spec.files if name not in done]
    window: deque[tuple[list[str], asyncio.Task[list[ItemResult]]]] = deque()
    # A bar on a terminal, plain lines every few seconds under nohup, cron or CI.
    with stderr_progress("images", len(spec.files), unit="images", completed=len(done)) as bar:
        recorder = _Recorder(spec, identity, done, len(todo), bar.advance)
        try:
            for chunk in _chunks(todo, spec.batch, spec.checkpoint_every):
                inputs = await asyncio.to_thread(_read_all, spec, chunk)
                window.append((chunk, asyncio.create_task(pipeline.analyze(inputs, prepared))))
                if len(window) == BATCHES_IN_FLIGHT:
                    await recorder.finish(*window.popleft())
            while window:
                await recorder.finish(*window.popleft())
        except (KeyboardInterrupt, asyncio.CancelledError):
            for _, task in window:
                task.cancel()
            _save_checkpoint(spec, identity, done)  # Ctrl-C keeps everything finished so far
            raise


@dataclass
class _Recorder:
    """Records finished batches in order and writes a checkpoint every N images."""

    spec: RunSpec
    identity: dict[str, Any]
    done: dict[str, Record]
    todo: int
    advance: Callable[[int], None]
    processed: int = 0

    async def finish(self, chunk: list[str], task: asyncio.Task[list[ItemResult]]) -> None:
        results = await task
        for name, result in zip(chunk, results, strict=True):
            self.done[name] = to_record(name, result, self.spec.skill)
        if self.spec.draw is not None:
            await asyncio.to_thread(self._draw, chunk, self.spec.draw)
        self.advance(len(chunk))
        self.processed += len(chunk)
        if self.processed % self.spec.checkpoint_every == 0 and self.processed < self.todo:
            _save_checkpoint(self.spec, self.identity, self.done)

    def _draw(self, chunk: list[str], folder: Path) -> None:
        """The pictures of a batch, before it is checkpointed: a resumed run has drawn every
        image its checkpoint holds."""
        limit = self.spec.settings.max_image_pixels
        for name in chunk:
            record = self.done[name]
            if record["status"] == "ok":
                source = self.spec.folder / name
                write_drawing(source, record["outputs"], drawing_path(folder, name), limit)


def _read_all(spec: RunSpec, chunk: list[str]) -> list[ImageInput]:
    """The files' bytes, or item errors the pipeline turns into failure records."""
    limit = spec.settings.max_image_bytes
    return [file_input(i, spec.folder / name, limit, filename=name) for i, name in enumerate(chunk)]


def _chunks(names: list[str], batch: int, every: int) -> Iterator[list[str]]:
    """Batches cut so that a checkpoint boundary always ends a batch: with batch 16 and
    checkpoint 500 the checkpoint lands at exactly 500, and a kill loses at most N images."""
    start, since_save = 0, 0
    while start < len(names):
        size = min(batch, every - since_save)
        yield names[start : start + size]
        start += size
        since_save = (since_save + size) % every


def to_record(name: str, result: ItemResult, skill: str) -> Record:
    """The small, JSON-safe outcome of one image; pixels and bytes are dropped here."""
    if skill in result.outputs:
        outputs = native_outputs(result)
        return {"file": name, "status": "ok", "image": result.image, "outputs": outputs}
    error = result.errors[0] if result.errors else ItemError(ErrorCode.PROCESSING_ERROR, "failed")
    body = {"code": error.code.value, "message": error.message}
    return {"file": name, "status": "error", "image": result.image, "error": body}


def video_record(name: str, result: VideoResult, skill: str) -> Record:
    """A video's frame records (MegaDetector's `clip.mp4/frame000123.jpg` names; one error
    record under the video's own name when it could not be read) and its roll-up."""
    rollup: dict[str, Any] = {"video": result.video, "summary": result.summary}
    if result.errors:
        error = result.errors[0]
        rollup["error"] = {"code": error.code.value, "message": error.message}
        failed = ItemResult(index=result.index, filename=name, errors=[error])
        return {"frames": [to_record(name, failed, skill)], "rollup": rollup}
    frames = [
        {**to_record(f"{name}/frame{frame.number:06d}.jpg", frame, skill), "time_s": frame.time_s}
        for frame in result.frames
    ]
    return {"frames": frames, "rollup": rollup}


# --- checkpoint -------------------------------------------------------------------------------


def _start_records(spec: RunSpec, identity: dict[str, Any]) -> dict[str, Record]:
    if not spec.checkpoint.exists():
        if spec.resume:
            typer.echo(f"no checkpoint at {spec.checkpoint}: starting from the beginning", err=True)
        return {}
    if not spec.resume:
        raise CliError(
            f"a checkpoint exists at {spec.checkpoint}: pass --resume to continue it, "
            "or delete it to start over",
            ExitStatus.USAGE,
        )
    records = load_checkpoint(spec.checkpoint, identity)
    kept = {name: records[name] for name in [*spec.files, *spec.videos] if name in records}
    total = len(spec.files) + len(spec.videos)
    typer.echo(f"resuming: {len(kept)} of {total} images and videos already done", err=True)
    return kept


def load_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Record]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read checkpoint {path}: {exc.strerror}", ExitStatus.IO) from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise CliError(f"cannot read checkpoint {path}: {exc}", ExitStatus.USAGE) from None
    if not isinstance(body, dict) or body.get("version") != CHECKPOINT_VERSION:
        raise CliError(f"{path} is not a batchvision run checkpoint", ExitStatus.USAGE)
    differ = [key for key in identity if body.get(key) != identity[key]]
    if differ:
        raise CliError(
            f"checkpoint {path} was written with a different {', '.join(differ)}; "
            "rerun with the same --skill/--params/--format, or delete it to start over",
            ExitStatus.USAGE,
        )
    records: dict[str, Record] = body["records"]
    return records


def _save_checkpoint(spec: RunSpec, identity: dict[str, Any], done: dict[str, Record]) -> None:
    body = {"version": CHECKPOINT_VERSION, **identity, "records": done}
    write_atomic(spec.checkpoint, json.dumps(body, ensure_ascii=False).encode())
