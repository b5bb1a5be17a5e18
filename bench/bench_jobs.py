"""A batch job of small images through the local job runner: lines/s, overhead, peak RSS.

For each size in --lines (default 1,000 and 100,000), on a FRESH server process each:

  1. A JSONL file of N lines is streamed to disk (never held in memory): `{"id": "l<i>",
     "skill": <skill>, "image": <base64 JPEG>}`, cycling over --image-count COCO images
     downscaled to --image-side px (about 7-12 KB of base64 per line).
  2. The real server runs as a subprocess (`python -m batchvision.cli serve`, auth disabled,
     a temporary data dir, BATCHVISION_MODEL_DIRS=--models). A small warm-up job
     (--warmup-lines) loads the model and warms the arenas; then the server's peak-RSS mark
     (VmHWM) is reset through /proc/<pid>/clear_refs.
  3. The file is POSTed to /v1/jobs (the body streamed from the file) and GET /v1/jobs/{id}
     is polled until the job ends. lines/s = N / (submit start -> state `completed` seen).
     The server's CPU time (utime + stime from /proc/<pid>/stat) over the same span gives
     CPU ms per line, a view less exposed to other load on the machine.
  4. Peak RSS: VmHWM of the server (plus any child processes) read after the job ended: the
     peak during the job (the mark was reset after warm-up) and the process's lifetime peak.
     VmRSS is also sampled while polling. Memory must not grow with the job's size: the bench
     prints the ratio of the peaks of the largest and the smallest size.
  5. The output files are downloaded through their signed links and streamed line by line:
     every line_index 0..N-1 must appear exactly once, with the right id and status ok.

Raw time, in this process, with no job system and no HTTP: the same images (the JPEG bytes,
not base64) through `Pipeline.analyze` of the same skill, in calls of --raw-batch images with
job_lines_in_flight images in flight at once, the concurrency the job runner uses. That is the
skill's own work: decode, preprocess, the dynamic batcher and the model. It runs --raw-images
images before the jobs and again after them, so drift on a noisy machine shows; the mean of
the two is the baseline. Overhead per line = 1/job_lines_per_s - 1/raw_images_per_s.

    .venv/bin/python bench/bench_jobs.py
    .venv/bin/python bench/bench_jobs.py --lines 1000 --skill metadata --json /tmp/jobs.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batchvision.core.settings import Settings
from batchvision.core.types import ImageInput, Task
from batchvision.models.registry import ModelRegistry
from batchvision.pipeline import Pipeline
from bench_detect import Server, cpu_seconds, free_port, git_revision, running

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_MODELS = SHARED / "models"
DEFAULT_IMAGES = SHARED / "evaldata" / "coco" / "images"
SKILLS = ("detect", "barcode", "metadata")
FINAL_STATES = ("completed", "failed", "cancelled", "expired")
KB = 1024
MB = 1024 * 1024


@dataclass(frozen=True)
class Config:
    lines: tuple[int, ...]
    skill: str
    raw_images: int
    raw_batch: int
    image_count: int
    image_side: int
    jpeg_quality: int
    warmup_lines: int
    job_timeout_s: float
    models: Path
    images: Path
    settings: dict[str, str]  # setting name -> value, for the server and the raw pipeline
    json_path: Path | None = None
    quiet: bool = False


@dataclass(frozen=True)
class SmallImage:
    name: str
    jpeg: bytes
    b64: str
    width: int
    height: int


@dataclass
class RawResult:
    images: int
    seconds: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    @property
    def cpu_ms_per_image(self) -> float:
        return self.cpu_s * 1000.0 / self.images


@dataclass
class OutputCheck:
    """What the downloaded outputs held; `complete` when every line is there once and ok."""

    lines: int
    files: int = 0
    ok: int = 0
    errors: int = 0
    missing: int = 0
    duplicates: int = 0
    bad: int = 0  # line_index out of range, or an id that does not match it
    objects: int = 0  # detect: detections over all lines
    first_error: str | None = None

    @property
    def complete(self) -> bool:
        return self.ok == self.lines and not (
            self.errors or self.missing or self.duplicates or self.bad
        )


@dataclass
class JobResult:
    lines: int
    file_bytes: int
    job_id: str
    state: str
    upload_s: float  # POST /v1/jobs, body streamed, until its 202
    chunking_s: float  # 202 until the job was first seen `processing`
    total_s: float  # submit start until `completed` was seen
    server_cpu_s: float  # over the same span
    rss_warm_kb: int  # VmRSS after the warm-up job, before this job
    peak_job_kb: int  # VmHWM after the job; the mark was reset after warm-up
    peak_process_kb: int  # the server's lifetime peak, start-up and warm-up included
    peak_sampled_kb: int  # the highest VmRSS seen while polling
    rss_end_kb: int
    children_peak_kb: int  # sum of child processes' VmHWM (0: none)
    hwm_reset: bool  # False: clear_refs failed, so peak_job_kb is the lifetime peak too
    check: OutputCheck
    progress: list[tuple[float, int]] = field(default_factory=list)  # (s, lines done)

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.total_s

    @property
    def processing_lines_per_s(self) -> float:
        """Without the upload and the chunking scan."""
        return self.lines / max(1e-9, self.total_s - self.upload_s - self.chunking_s)

    @property
    def cpu_ms_per_line(self) -> float:
        return self.server_cpu_s * 1000.0 / self.lines


@dataclass
class BenchResult:
    revision: str
    cpus: int
    skill: str
    settings: dict[str, str]
    raw: list[RawResult]
    jobs: list[JobResult]

    @property
    def raw_rate(self) -> float:
        """images/s of all raw runs together (before and after the jobs)."""
        return sum(r.images for r in self.raw) / sum(r.seconds for r in self.raw)

    @property
    def raw_cpu_ms_per_image(self) -> float:
        return sum(r.cpu_s for r in self.raw) * 1000.0 / sum(r.images for r in self.raw)

    def overhead_ms_per_line(self, job: JobResult) -> float:
        return 1000.0 / job.lines_per_s - 1000.0 / self.raw_rate

    def overhead_cpu_ms_per_line(self, job: JobResult) -> float:
        return job.cpu_ms_per_line - self.raw_cpu_ms_per_image

    def throughput_ratio(self, job: JobResult) -> float:
        """job lines/s over raw images/s (1.0: the job system costs nothing)."""
        return job.lines_per_s / self.raw_rate

    def peak_ratio(self) -> float:
        """Peak RSS during the largest job over that of the smallest (1.0: no growth)."""
        small, large = self._smallest_largest()
        return large.peak_job_kb / small.peak_job_kb

    def process_peak_ratio(self) -> float:
        small, large = self._smallest_largest()
        return large.peak_process_kb / small.peak_process_kb

    def _smallest_largest(self) -> tuple[JobResult, JobResult]:
        ordered = sorted(self.jobs, key=lambda j: j.lines)
        return ordered[0], ordered[-1]

    def to_json(self) -> dict[str, Any]:
        def job(j: JobResult) -> dict[str, Any]:
            return {
                **asdict(j),
                "check": {**asdict(j.check), "complete": j.check.complete},
                "lines_per_s": j.lines_per_s,
                "processing_lines_per_s": j.processing_lines_per_s,
                "cpu_ms_per_line": j.cpu_ms_per_line,
                "overhead_ms_per_line": self.overhead_ms_per_line(j),
                "overhead_cpu_ms_per_line": self.overhead_cpu_ms_per_line(j),
                "job_over_raw": self.throughput_ratio(j),
            }

        return {
            "revision": self.revision,
            "cpus": self.cpus,
            "skill": self.skill,
            "settings": self.settings,
            "raw": [
                {**asdict(r), "images_per_s": r.rate, "cpu_ms_per_image": r.cpu_ms_per_image}
                for r in self.raw
            ],
            "raw_images_per_s": self.raw_rate,
            "raw_cpu_ms_per_image": self.raw_cpu_ms_per_image,
            "jobs": [job(j) for j in self.jobs],
            "peak_rss_ratio": self.peak_ratio(),
            "process_peak_rss_ratio": self.process_peak_ratio(),
        }


def say(config: Config, message: str) -> None:
    if not config.quiet:
        print(message, flush=True)


# ---------------------------------------------------------------- images and the JSONL file


def load_images(directory: Path, count: int, side: int, quality: int) -> list[SmallImage]:
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        raise SystemExit(f"no JPEG images in {directory}")
    small = []
    for path in paths[:count]:
        with Image.open(path) as source:
            image = source.convert("RGB")
        image.thumbnail((side, side), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        jpeg = buffer.getvalue()
        b64 = base64.b64encode(jpeg).decode("ascii")
        small.append(SmallImage(path.name, jpeg, b64, image.width, image.height))
    return small


def write_jsonl(path: Path, lines: int, skill: str, images: Sequence[SmallImage]) -> int:
    """N lines, streamed to disk in blocks; the file's size in bytes."""
    tails = [f', "skill": {json.dumps(skill)}, "image": "{i.b64}"}}\n' for i in images]
    block: list[str] = []
    with path.open("w", encoding="ascii", newline="\n") as file:
        for index in range(lines):
            block.append(f'{{"id": "l{index}"' + tails[index % len(tails)])
            if len(block) >= 1000:
                file.write("".join(block))
                block.clear()
        file.write("".join(block))
    return path.stat().st_size


# ---------------------------------------------------------------- /proc readings


def proc_status_kb(pid: int, key: str) -> int:
    """A `kB` field (VmRSS, VmHWM) of /proc/<pid>/status; 0 when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                for child in children.read_text().split():
                    found.append(int(child))
                    pending.append(int(child))
    return found


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: "5" to clear_refs); False if not allowed."""
    for target in (pid, *descendants(pid)):
        try:
            Path(f"/proc/{target}/clear_refs").write_text("5")
        except OSError:
            return False
    return True


def tree_rss_kb(pid: int) -> int:
    return sum(proc_status_kb(p, "VmRSS") for p in (pid, *descendants(pid)))


# ---------------------------------------------------------------- raw: the pipeline alone


async def _raw_run(
    settings: Settings,
    registry: ModelRegistry,
    skill: str,
    images: Sequence[SmallImage],
    count: int,
    batch: int,
) -> RawResult:
    pipeline = Pipeline(settings, registry)
    try:
        tasks = pipeline.prepare_tasks([Task(skill, {})])
        workers = max(1, settings.job_lines_in_flight // batch)
        cursor = 0

        async def worker(limit: int) -> None:
            nonlocal cursor
            while cursor < limit:
                start, cursor = cursor, min(limit, cursor + batch)
                inputs = [
                    ImageInput(index=i - start, data=images[i % len(images)].jpeg)
                    for i in range(start, cursor)
                ]
                for result in await pipeline.analyze(inputs, tasks):
                    if result.errors:
                        raise RuntimeError(f"raw {skill}: {result.errors[0].message}")

        async def run(limit: int) -> None:
            nonlocal cursor
            cursor = 0
            await asyncio.gather(*(worker(limit) for _ in range(workers)))

        await run(max(len(images), batch * workers))  # warm-up: model load, arenas, threads
        cpu_before, started = cpu_seconds(), time.perf_counter()
        await run(count)
        elapsed = time.perf_counter() - started
        return RawResult(count, elapsed, cpu_seconds() - cpu_before)
    finally:
        await pipeline.close()


def measure_raw(
    config: Config, settings: Settings, registry: ModelRegistry, images: Sequence[SmallImage]
) -> RawResult:
    result = asyncio.run(
        _raw_run(settings, registry, config.skill, images, config.raw_images, config.raw_batch)
    )
    say(
        config,
        f"  raw {result.images} images in {result.seconds:.1f} s = {result.rate:.1f} images/s;"
        f" CPU {result.cpu_ms_per_image:.1f} ms/image",
    )
    return result


# ---------------------------------------------------------------- the server and one job


def job_server(config: Config, data_dir: Path, logs: Path) -> Server:
    env = dict(os.environ)
    env.update({f"BATCHVISION_{k.upper()}": v for k, v in config.settings.items()})
    env["BATCHVISION_MODEL_DIRS"] = str(config.models)
    env["BATCHVISION_DATA_DIR"] = str(data_dir)
    env["BATCHVISION_AUTH"] = "disabled"
    port = free_port()
    command = [sys.executable, "-m", "batchvision.cli", "serve", "--port", str(port)]
    return Server("batchvision", [*command, "--log-level", "warning"], port, env, logs)


def submit(client: httpx.Client, path: Path) -> dict[str, Any]:
    with path.open("rb") as body:  # httpx streams a file object in blocks
        response = client.post("/v1/jobs", content=body)
    if response.status_code != 202:
        raise RuntimeError(f"submit: HTTP {response.status_code}: {response.text[:500]}")
    job: dict[str, Any] = response.json()
    return job


@dataclass
class Watch:
    """What polling saw: when processing started, the RSS high, progress over time."""

    processing_at: float | None = None
    peak_rss_kb: int = 0
    progress: list[tuple[float, int]] = field(default_factory=list)


def wait_for_end(
    client: httpx.Client,
    job_id: str,
    pid: int,
    started: float,
    timeout_s: float,
    config: Config,
) -> tuple[dict[str, Any], float, Watch]:
    """Poll until the job ends; (final view, when the end was seen, what polling saw)."""
    watch = Watch()
    next_report = started + 30.0
    while True:
        now = time.perf_counter()
        elapsed = now - started
        if elapsed > timeout_s:
            raise RuntimeError(f"job {job_id} did not end within {timeout_s:.0f} s")
        response = client.get(f"/v1/jobs/{job_id}")
        response.raise_for_status()
        view: dict[str, Any] = response.json()
        seen = time.perf_counter()
        watch.peak_rss_kb = max(watch.peak_rss_kb, tree_rss_kb(pid))
        if view["status"] in FINAL_STATES:
            return view, seen, watch
        if view["status"] == "processing" and watch.processing_at is None:
            watch.processing_at = seen
        done = view["progress"]["completed"] + view["progress"]["failed"]
        if now >= next_report:
            watch.progress.append((round(elapsed, 1), done))
            rate = done / max(1e-9, seen - (watch.processing_at or seen))
            say(
                config,
                f"    {elapsed:6.0f} s: {done}/{view['progress']['total'] or '?'} lines,"
                f" {rate:.1f} lines/s since processing began,"
                f" RSS {tree_rss_kb(pid) / KB:.0f} MB",
            )
            next_report = now + 30.0
        # Poll briskly at first (small jobs), then ease off so polling costs the server little.
        time.sleep(min(1.0, 0.05 + 0.01 * elapsed))


def check_outputs(client: httpx.Client, view: dict[str, Any], lines: int) -> OutputCheck:
    """Stream every output file: each line_index once, with its id, status ok."""
    check = OutputCheck(lines=lines, files=len(view["outputs"]))
    seen = bytearray(lines)
    for output in sorted(view["outputs"], key=lambda o: o["index"]):
        with client.stream("GET", output["url"]) as response:
            response.raise_for_status()
            for text in response.iter_lines():
                if not text:
                    continue
                line = json.loads(text)
                index = line.get("line_index")
                if not isinstance(index, int) or not 0 <= index < lines:
                    check.bad += 1
                    continue
                if line.get("id") != f"l{index}":
                    check.bad += 1
                if seen[index]:
                    check.duplicates += 1
                    continue
                seen[index] = 1
                if line.get("status") == "ok":
                    check.ok += 1
                    result = line.get("result")
                    objects = result.get("objects") if isinstance(result, dict) else None
                    if isinstance(objects, list):
                        check.objects += len(objects)
                else:
                    check.errors += 1
                    if check.first_error is None:
                        check.first_error = json.dumps(line.get("error"))[:300]
    check.missing = lines - sum(seen)
    return check


def run_job(config: Config, lines: int, images: Sequence[SmallImage], tmp: Path) -> JobResult:
    """One job of `lines` lines on a fresh server; the server is stopped before returning."""
    work = tmp / f"job_{lines}"
    work.mkdir()
    warm_path, path = work / "warmup.jsonl", work / "input.jsonl"
    write_jsonl(warm_path, config.warmup_lines, config.skill, images)
    file_bytes = write_jsonl(path, lines, config.skill, images)
    say(config, f"\n{lines} lines ({file_bytes / MB:.1f} MB of JSONL); fresh server")
    server = job_server(config, work / "data", work)
    try:
        with running(server), httpx.Client(base_url=server.url, timeout=600.0) as client:
            pid = server.process.pid
            if config.warmup_lines:
                warm = submit(client, warm_path)
                view, _, _ = wait_for_end(
                    client, warm["id"], pid, time.perf_counter(), config.job_timeout_s, config
                )
                if view["status"] != "completed":
                    raise RuntimeError(f"warm-up job ended {view['status']}: {view['error']}")
            rss_warm = tree_rss_kb(pid)
            peak_before = proc_status_kb(pid, "VmHWM")
            reset = reset_peak(pid)
            cpu_before = cpu_seconds(pid)
            started = time.perf_counter()
            job = submit(client, path)
            submitted = time.perf_counter()
            view, ended, watch = wait_for_end(
                client, job["id"], pid, started, config.job_timeout_s, config
            )
            server_cpu = cpu_seconds(pid) - cpu_before
            peak_job = proc_status_kb(pid, "VmHWM")
            children_peak = sum(proc_status_kb(c, "VmHWM") for c in descendants(pid))
            rss_end = tree_rss_kb(pid)
            if view["status"] != "completed":
                raise RuntimeError(f"job {job['id']} ended {view['status']}: {view['error']}")
            check = check_outputs(client, view, lines)
    finally:
        for leftover in (warm_path, path):
            leftover.unlink(missing_ok=True)
    processing_at = watch.processing_at or submitted
    result = JobResult(
        lines=lines,
        file_bytes=file_bytes,
        job_id=job["id"],
        state=view["status"],
        upload_s=submitted - started,
        chunking_s=max(0.0, processing_at - submitted),
        total_s=ended - started,
        server_cpu_s=server_cpu,
        rss_warm_kb=rss_warm,
        peak_job_kb=peak_job,
        peak_process_kb=max(peak_before, peak_job),
        peak_sampled_kb=watch.peak_rss_kb,
        rss_end_kb=rss_end,
        children_peak_kb=children_peak,
        hwm_reset=reset,
        check=check,
        progress=watch.progress,
    )
    report_job(config, result)
    return result


def report_job(config: Config, job: JobResult) -> None:
    check = job.check
    say(
        config,
        f"  {job.lines} lines in {job.total_s:.1f} s = {job.lines_per_s:.1f} lines/s"
        f" (upload {job.upload_s:.1f} s, chunking {job.chunking_s:.1f} s);"
        f" server CPU {job.cpu_ms_per_line:.1f} ms/line",
    )
    say(
        config,
        f"  RSS after warm-up {job.rss_warm_kb / KB:.0f} MB; peak during the job"
        f" {job.peak_job_kb / KB:.0f} MB{'' if job.hwm_reset else ' (mark not reset)'};"
        f" lifetime peak {job.peak_process_kb / KB:.0f} MB; sampled max"
        f" {job.peak_sampled_kb / KB:.0f} MB; children {job.children_peak_kb / KB:.0f} MB",
    )
    objects = f", {check.objects} objects" if config.skill == "detect" else ""
    say(
        config,
        f"  outputs: {check.files} files; {check.ok} ok, {check.errors} errors,"
        f" {check.missing} missing, {check.duplicates} duplicates, {check.bad} bad{objects}",
    )
    if check.first_error:
        say(config, f"  first error: {check.first_error}")


# ---------------------------------------------------------------- summary


def print_summary(result: BenchResult) -> None:
    raw = ", ".join(f"{r.rate:.1f}" for r in result.raw)
    print(
        f"\nraw pipeline ({result.skill}): {result.raw_rate:.1f} images/s (runs: {raw}),"
        f" CPU {result.raw_cpu_ms_per_image:.1f} ms/image"
    )
    print(
        "\n| lines | lines/s | job / raw | overhead ms/line | server CPU ms/line"
        " | CPU overhead ms/line | peak RSS during job MB | lifetime peak MB | all lines ok once |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for job in result.jobs:
        print(
            f"| {job.lines:,} | {job.lines_per_s:.1f} | {result.throughput_ratio(job):.2f}x"
            f" | {result.overhead_ms_per_line(job):.1f} | {job.cpu_ms_per_line:.1f}"
            f" | {result.overhead_cpu_ms_per_line(job):.1f} | {job.peak_job_kb / KB:.0f}"
            f" | {job.peak_process_kb / KB:.0f} | {'yes' if job.check.complete else 'NO'} |"
        )
    if len(result.jobs) > 1:
        small, large = result._smallest_largest()
        growth = (large.peak_job_kb - small.peak_job_kb) / KB
        print(
            f"\npeak RSS {large.lines:,} / {small.lines:,} lines = {result.peak_ratio():.3f}x"
            f" during the job ({growth:+.0f} MB), {result.process_peak_ratio():.3f}x lifetime"
        )


# ---------------------------------------------------------------- main


def run(config: Config) -> BenchResult:
    values: dict[str, Any] = {**config.settings, "model_dirs": [config.models]}
    settings = Settings(**values)
    images = load_images(config.images, config.image_count, config.image_side, config.jpeg_quality)
    sizes = ", ".join(f"{i.width}x{i.height}" for i in images)
    overrides = " ".join(f"{k}={v}" for k, v in config.settings.items()) or "none"
    say(config, f"batchvision {git_revision()}; machine: {os.cpu_count()} CPUs")
    say(
        config,
        f"skill {config.skill}; {len(images)} images ({sizes}) from {config.images};"
        f" setting overrides: {overrides}",
    )
    say(
        config,
        f"server: worker_threads={settings.worker_threads},"
        f" ort_intra_op_threads={settings.ort_intra_op_threads},"
        f" job_chunk_lines={settings.job_chunk_lines},"
        f" job_parallel_chunks={settings.job_parallel_chunks},"
        f" job_lines_in_flight={settings.job_lines_in_flight}, auth disabled",
    )
    registry = ModelRegistry(settings)
    raw: list[RawResult] = []
    jobs: list[JobResult] = []
    say(config, "\nraw pipeline, before the jobs:")
    raw.append(measure_raw(config, settings, registry, images))
    with tempfile.TemporaryDirectory(prefix="bench_jobs_") as name:
        for lines in config.lines:
            jobs.append(run_job(config, lines, images, Path(name)))
    say(config, "\nraw pipeline, after the jobs:")
    raw.append(measure_raw(config, settings, registry, images))
    result = BenchResult(
        git_revision(), os.cpu_count() or 0, config.skill, dict(config.settings), raw, jobs
    )
    if not config.quiet:
        print_summary(result)
    if config.json_path is not None:
        config.json_path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        say(config, f"\nwrote {config.json_path}")
    return result


def parse_setting(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition("=")
    name = name.strip().lower().removeprefix("batchvision_")
    if not sep or not name or name not in Settings.model_fields:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a Settings field: {raw!r}")
    return name, value


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", default="1000,100000", help="job sizes, comma-separated")
    parser.add_argument("--skill", choices=SKILLS, default="detect")
    parser.add_argument("--raw-images", type=int, default=2000, help="per raw run (2 runs)")
    parser.add_argument("--raw-batch", type=int, default=8, help="images per analyze call")
    parser.add_argument("--image-count", type=int, default=8, help="distinct images, cycled")
    parser.add_argument("--image-side", type=int, default=160, help="longer side, px")
    parser.add_argument("--jpeg-quality", type=int, default=85)
    parser.add_argument("--warmup-lines", type=int, default=64, help="0: no warm-up job")
    parser.add_argument("--job-timeout", type=float, default=4 * 3600.0, help="seconds per job")
    parser.add_argument("--worker-threads", type=int, help="server and raw: CPU pool threads")
    parser.add_argument("--ort-threads", type=int, help="server and raw: ORT intra-op threads")
    parser.add_argument(
        "--setting",
        action="append",
        type=parse_setting,
        default=[],
        metavar="NAME=VALUE",
        help="any Settings field, for the server (as BATCHVISION_NAME) and the raw pipeline;"
        " repeatable, e.g. --setting job_chunk_lines=100",
    )
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--quiet", action="store_true", help="print nothing (tests)")
    args = parser.parse_args(argv)
    try:
        lines = tuple(int(n.replace("_", "")) for n in args.lines.split(",") if n.strip())
    except ValueError:
        parser.error(f"--lines: not a list of integers: {args.lines!r}")
    if not lines or min(lines) < 1:
        parser.error("--lines needs at least one size, each at least 1")
    if min(args.raw_images, args.raw_batch, args.image_count, args.image_side) < 1:
        parser.error("--raw-images, --raw-batch, --image-count and --image-side must be >= 1")
    settings = dict(args.setting)
    if args.worker_threads is not None:
        settings["worker_threads"] = str(args.worker_threads)
    if args.ort_threads is not None:
        settings["ort_intra_op_threads"] = str(args.ort_threads)
    return Config(
        lines=lines,
        skill=args.skill,
        raw_images=args.raw_images,
        raw_batch=args.raw_batch,
        image_count=args.image_count,
        image_side=args.image_side,
        jpeg_quality=args.jpeg_quality,
        warmup_lines=args.warmup_lines,
        job_timeout_s=args.job_timeout,
        models=args.models.resolve(),
        images=args.images.resolve(),
        settings=settings,
        json_path=args.json,
        quiet=args.quiet,
    )


def main(argv: Sequence[str] | None = None) -> BenchResult:
    return run(parse_args(argv))


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the server subprocess is always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted; server stopped", file=sys.stderr)
        sys.exit(130)
