"""The Celery job runner against the local one (issue 16): overhead per line, and throughput
with one and two `batchvision worker` processes.

    PYTHONPATH=src .venv/bin/python bench/bench_celery.py
    PYTHONPATH=src .venv/bin/python bench/bench_celery.py --rounds 5 --metadata-lines 2000 \\
        --detect-lines 400 --throughput-lines 600 --json /tmp/bench_celery.json
    # chunks queued ahead of the worker's slots (hides the dispatcher's tick):
    PYTHONPATH=src .venv/bin/python bench/bench_celery.py --parts overhead \
        --setting job_parallel_chunks=4

Everything runs on this machine: one real `redis-server` (Debian's, no persistence) is the
broker; each setup is a `batchvision serve` subprocess and its workers sharing one temporary
data dir (SQLite, local blobs), auth disabled, models from ../shared/models and ./models. Each
Celery setup has a Redis database of its own. Subprocesses import this checkout's src/.

Part 1, overhead per line (job_chunk_lines=50, the other job settings at their defaults):
setups `local` (one server, job_runner=local) and `celery` (one server with job_runner=celery
and one `batchvision worker --concurrency 2`). For each skill, `metadata` on small JPEGs
(--metadata-lines, default 2000: the skill costs little, so the runner's own cost shows) and
`detect` (yolox-nano) on COCO photos (--detect-lines, default 400: a realistic figure), the
rounds alternate local, celery, local, celery, ... (--rounds of each). A round is one job: the
JSONL file POSTed to /v1/jobs, then GET /v1/jobs/{id} every 50 ms until it is `completed`;
wall time runs from the submit to that answer. Overhead per line = (celery wall - local wall)
/ lines, per round (the two ran back to back) and from the medians; the target is <= 2 ms/line.
CPU per line adds up every process of the setup (server, worker, and redis for celery);
"cores busy" is that CPU time over the wall time.

Part 2, throughput (detect, --throughput-lines default 600, job_parallel_chunks=4,
job_chunks_in_flight=8): setups `celery-1` (server + one worker) and `celery-2` (server + two
workers, each --concurrency 2), rounds alternating. lines/s = lines / wall. Two cores cannot
show scaling: the second worker shares the same two cores. The worker processes' CPU seconds
per line (utime + stime from /proc) give an estimate for a bigger box: 16 / cpu_s_per_line
lines/s on 16 cores, assuming the work is CPU-bound and scales linearly with cores (one worker
per box with ORT threads = cores, or several workers of a few cores each).

Start-up stays out of the timings: each server answers /healthz, each worker has logged
`ready.`, and each setup runs an untimed warm-up job of the round's skill first, one chunk per
worker slot, so every worker has loaded its models (Celery's prefetch limit, one unacknowledged
task per slot, spreads those chunks over the workers). Every timed job's outputs are downloaded
and checked: each line exactly once, status ok.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detect import Server, cpu_seconds, free_port, git_revision
from bench_jobs import (
    FINAL_STATES,
    OutputCheck,
    SmallImage,
    check_outputs,
    descendants,
    load_images,
    parse_setting,
    submit,
    write_jsonl,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_MODELS = (SHARED / "models", REPO / "models")
DEFAULT_IMAGES = SHARED / "evaldata" / "coco" / "images"
POLL_S = 0.05
TARGET_MS_PER_LINE = 2.0
BIG_BOX_CORES = 16
START_TIMEOUT_S = 120.0
PARTS = ("overhead", "throughput")


@dataclass(frozen=True)
class Config:
    rounds: int
    metadata_lines: int
    detect_lines: int
    throughput_lines: int
    concurrency: int  # chunks at once per worker
    chunk_lines: int
    parallel_chunks: int  # part 2: job_parallel_chunks
    chunks_in_flight: int  # part 2: job_chunks_in_flight
    image_count: int
    metadata_side: int
    detect_side: int
    job_timeout_s: float
    models: tuple[Path, ...]
    images: Path
    settings: dict[str, str]  # extra settings for every server and worker
    parts: tuple[str, ...]
    json_path: Path | None = None
    quiet: bool = False


def say(config: Config, message: str) -> None:
    if not config.quiet:
        print(message, flush=True)


# ---------------------------------------------------------------- processes


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children; 0 for those already gone."""
    total = 0.0
    for target in (pid, *descendants(pid)):
        with contextlib.suppress(OSError, IndexError):
            total += cpu_seconds(target)
    return total


@dataclass(frozen=True)
class Cpu:
    """CPU seconds of a setup's processes, by role."""

    server: float = 0.0
    workers: float = 0.0
    broker: float = 0.0

    @property
    def total(self) -> float:
        return self.server + self.workers + self.broker

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(
            self.server - other.server, self.workers - other.workers, self.broker - other.broker
        )


class Redis:
    """The broker: Debian's redis-server on a free port, no persistence."""

    def __init__(self, logs: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found: apt-get install -y redis-server")
        self.port = free_port()
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]
        self.process = Server("redis", command, self.port, dict(os.environ), logs)

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def wait_ready(self) -> None:
        client = redis.Redis.from_url(self.url(0), socket_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)


@dataclass
class Setup:
    """One API server, its workers (none: job_runner=local) and, for Celery, the broker."""

    name: str
    server: Server
    broker: Redis | None
    concurrency: int  # chunks at once: per worker, or the local runner's parallel chunks
    worker_count: int
    env: dict[str, str]
    logs: Path
    workers: list[Server] = field(default_factory=list)

    @property
    def slots(self) -> int:
        return self.concurrency * max(1, self.worker_count)

    def spawn_workers(self) -> None:
        """After the server answered: it has migrated the database the workers open."""
        command = [sys.executable, "-m", "batchvision.cli", "worker"]
        command += ["--concurrency", str(self.concurrency)]
        for i in range(self.worker_count):
            name = f"{self.name}-worker{i + 1}"
            self.workers.append(Server(name, command, 0, self.env, self.logs))

    def cpu(self) -> Cpu:
        broker = self.broker.process.process.pid if self.broker else None
        return Cpu(
            server=tree_cpu(self.server.process.pid),
            workers=sum(tree_cpu(w.process.pid) for w in self.workers),
            broker=tree_cpu(broker) if broker is not None else 0.0,
        )

    def worker_cpu(self) -> list[float]:
        return [tree_cpu(w.process.pid) for w in self.workers]

    def stop(self) -> None:
        for process in (self.server, *self.workers):
            process.stop()


Broker = tuple[Redis, int] | None  # the broker and a database of its own; None: local runner


def base_env(config: Config, data_dir: Path, settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHVISION_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env.update({f"BATCHVISION_{k.upper()}": v for k, v in {**settings, **config.settings}.items()})
    env["BATCHVISION_MODEL_DIRS"] = os.pathsep.join(map(str, config.models))
    env["BATCHVISION_DATA_DIR"] = str(data_dir)
    env["BATCHVISION_AUTH"] = "disabled"
    return env


def start_setup(
    config: Config,
    name: str,
    workers: int,
    settings: dict[str, str],
    broker: Broker,
    tmp: Path,
) -> Setup:
    """Spawn the server (its workers come once it answers); `broker` (server, database)
    selects job_runner=celery."""
    work = tmp / name
    work.mkdir()
    values = dict(settings)
    if broker is not None:
        values.update(job_runner="celery", broker_url=broker[0].url(broker[1]))
    env = base_env(config, work / "data", values)
    port = free_port()
    serve = [sys.executable, "-m", "batchvision.cli", "serve", "--port", str(port)]
    server = Server(f"{name}-server", [*serve, "--log-level", "warning"], port, env, work)
    concurrency = config.concurrency if broker else int(values.get("job_parallel_chunks", "2"))
    return Setup(name, server, broker[0] if broker else None, concurrency, workers, env, work)


def wait_worker_ready(worker: Server) -> None:
    """Celery logs `<node> ready.` once it consumes from the queue."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and worker.process.poll() is None:
        if " ready." in worker.log_path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    tail = worker.log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{worker.name} did not become ready; log tail:\n{tail}")


@contextlib.contextmanager
def running_setups(
    config: Config, tmp: Path, specs: Sequence[tuple[str, int, dict[str, str], Broker]]
) -> Iterator[list[Setup]]:
    """Start every setup at once (name, workers, settings, broker), wait until all are ready,
    and stop them all at the end, whatever happens."""
    setups: list[Setup] = []
    try:
        for spec in specs:
            setups.append(start_setup(config, *spec, tmp))
        for setup in setups:
            setup.server.wait_healthy(START_TIMEOUT_S)
            setup.spawn_workers()
        for setup in setups:
            for worker in setup.workers:
                wait_worker_ready(worker)
        yield setups
    finally:
        for setup in setups:
            setup.stop()


# ---------------------------------------------------------------- one job


@dataclass
class JobRun:
    setup: str
    skill: str
    lines: int
    wall_s: float  # submit start until `completed` was seen
    cpu: Cpu
    check: OutputCheck

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.wall_s

    def cpu_ms_per_line(self, role: str = "total") -> float:
        return float(getattr(self.cpu, role)) * 1000.0 / self.lines

    @property
    def cores_busy(self) -> float:
        """The setup's CPU seconds per wall second: how much of the machine it used."""
        return self.cpu.total / self.wall_s


def wait_completed(
    client: httpx.Client, job_id: str, started: float, timeout_s: float
) -> tuple[dict[str, Any], float]:
    """Poll every POLL_S until the job ends; (its final view, when that was seen)."""
    while True:
        response = client.get(f"/v1/jobs/{job_id}")
        response.raise_for_status()
        view: dict[str, Any] = response.json()
        seen = time.perf_counter()
        if view["status"] in FINAL_STATES:
            return view, seen
        if seen - started > timeout_s:
            raise RuntimeError(f"job {job_id} still {view['status']} after {timeout_s:.0f} s")
        time.sleep(POLL_S)


def run_job(
    setup: Setup, client: httpx.Client, path: Path, lines: int, skill: str, timeout_s: float
) -> JobRun:
    """One job, timed, its outputs checked afterwards (outside the timing)."""
    before = setup.cpu()
    started = time.perf_counter()
    job = submit(client, path)
    view, ended = wait_completed(client, job["id"], started, timeout_s)
    cpu = setup.cpu() - before
    if view["status"] != "completed":
        raise RuntimeError(f"{setup.name}: job {job['id']} ended {view['status']}: {view}")
    check = check_outputs(client, view, lines)
    if not check.complete:
        raise RuntimeError(f"{setup.name}: job {job['id']} outputs incomplete: {check}")
    return JobRun(setup.name, skill, lines, ended - started, cpu, check)


def warm_up(
    config: Config, setup: Setup, client: httpx.Client, path: Path, lines: int, skill: str
) -> None:
    """An untimed job of one chunk per slot: models loaded in every worker."""
    before = setup.worker_cpu()
    run = run_job(setup, client, path, lines, skill, config.job_timeout_s)
    spent = [after - b for after, b in zip(setup.worker_cpu(), before, strict=True)]
    busy = ", ".join(f"{s:.2f}" for s in spent)
    note = f"; worker CPU s: {busy}" if spent else ""
    say(config, f"  warm-up {setup.name} ({skill}, {lines} lines): {run.wall_s:.2f} s{note}")


# ---------------------------------------------------------------- the JSONL files


@dataclass(frozen=True)
class JobFile:
    path: Path
    lines: int
    skill: str


def job_file(tmp: Path, name: str, lines: int, skill: str, images: Sequence[SmallImage]) -> JobFile:
    path = tmp / f"{name}.jsonl"
    write_jsonl(path, lines, skill, images)
    return JobFile(path, lines, skill)


def skill_images(config: Config, skill: str) -> list[SmallImage]:
    side = config.metadata_side if skill == "metadata" else config.detect_side
    return load_images(config.images, config.image_count, side, 85)


# ---------------------------------------------------------------- part 1: overhead


@dataclass
class Comparison:
    """Alternating rounds of one job on two setups."""

    skill: str
    lines: int
    first: list[JobRun] = field(default_factory=list)
    second: list[JobRun] = field(default_factory=list)

    def wall(self, runs: list[JobRun]) -> float:
        return statistics.median(r.wall_s for r in runs)

    def rate(self, runs: list[JobRun]) -> float:
        return statistics.median(r.lines_per_s for r in runs)

    def cpu_ms(self, runs: list[JobRun], role: str = "total") -> float:
        return statistics.median(r.cpu_ms_per_line(role) for r in runs)

    def cores(self, runs: list[JobRun]) -> float:
        return statistics.median(r.cores_busy for r in runs)

    def overhead_per_round_ms(self) -> list[float]:
        return [
            (b.wall_s - a.wall_s) * 1000.0 / self.lines
            for a, b in zip(self.first, self.second, strict=True)
        ]

    def overhead_ms(self) -> float:
        """Median of the per-round differences (each pair ran back to back)."""
        return statistics.median(self.overhead_per_round_ms())

    def overhead_of_medians_ms(self) -> float:
        return (self.wall(self.second) - self.wall(self.first)) * 1000.0 / self.lines

    def ratio(self) -> float:
        """second / first in lines/s, median of the per-round ratios."""
        pairs = zip(self.first, self.second, strict=True)
        return statistics.median(b.lines_per_s / a.lines_per_s for a, b in pairs)


def alternate(
    config: Config,
    setups: tuple[Setup, Setup],
    clients: tuple[httpx.Client, httpx.Client],
    file: JobFile,
) -> Comparison:
    comparison = Comparison(file.skill, file.lines)
    for round_ in range(config.rounds):
        for setup, client, runs in zip(
            setups, clients, (comparison.first, comparison.second), strict=True
        ):
            run = run_job(setup, client, file.path, file.lines, file.skill, config.job_timeout_s)
            runs.append(run)
            say(
                config,
                f"  round {round_ + 1} {setup.name:9} {file.lines} lines in {run.wall_s:6.2f} s"
                f" = {run.lines_per_s:7.1f} lines/s; CPU {run.cpu_ms_per_line():.2f} ms/line,"
                f" {run.cores_busy:.2f} cores busy",
            )
    return comparison


def idle_cpu_per_s(setup: Setup, seconds: float = 2.0) -> float:
    """CPU seconds per second of an idle setup (the dispatcher ticking, workers waiting)."""
    before = setup.cpu()
    time.sleep(seconds)
    return (setup.cpu() - before).total / seconds


def part_overhead(config: Config, redis_server: Redis, tmp: Path) -> dict[str, Any]:
    settings = {"job_chunk_lines": str(config.chunk_lines)}
    specs = [("local", 0, settings, None), ("celery", 1, settings, (redis_server, 1))]
    wanted = [("metadata", config.metadata_lines), ("detect", config.detect_lines)]
    comparisons: list[Comparison] = []
    idle = 0.0
    with (
        running_setups(config, tmp, specs) as (local, celery),
        httpx.Client(base_url=local.server.url, timeout=600.0) as local_client,
        httpx.Client(base_url=celery.server.url, timeout=600.0) as celery_client,
    ):
        idle = idle_cpu_per_s(celery)
        for skill, lines in wanted:
            if lines < 1:
                continue
            say(config, f"\npart 1, {skill}: {lines} lines, local vs celery")
            images = skill_images(config, skill)
            file = job_file(tmp, f"{skill}_{lines}", lines, skill, images)
            for setup, client in ((local, local_client), (celery, celery_client)):
                warm_lines = config.chunk_lines * setup.slots
                warm = job_file(tmp, f"warm_{setup.name}_{skill}", warm_lines, skill, images)
                warm_up(config, setup, client, warm.path, warm.lines, skill)
            clients = (local_client, celery_client)
            comparisons.append(alternate(config, (local, celery), clients, file))
            file.path.unlink()
    return {"comparisons": comparisons, "idle_celery_cpu_per_s": idle}


# ---------------------------------------------------------------- part 2: throughput


def part_throughput(config: Config, redis_server: Redis, tmp: Path) -> Comparison | None:
    if config.throughput_lines < 1:
        return None
    settings = {
        "job_chunk_lines": str(config.chunk_lines),
        "job_parallel_chunks": str(config.parallel_chunks),
        "job_chunks_in_flight": str(config.chunks_in_flight),
    }
    specs = [
        ("celery-1", 1, settings, (redis_server, 2)),
        ("celery-2", 2, settings, (redis_server, 3)),
    ]
    images = skill_images(config, "detect")
    file = job_file(tmp, "throughput", config.throughput_lines, "detect", images)
    say(config, f"\npart 2, detect: {file.lines} lines, 1 worker vs 2 workers")
    with (
        running_setups(config, tmp, specs) as (one, two),
        httpx.Client(base_url=one.server.url, timeout=600.0) as one_client,
        httpx.Client(base_url=two.server.url, timeout=600.0) as two_client,
    ):
        for setup, client in ((one, one_client), (two, two_client)):
            warm_lines = config.chunk_lines * setup.slots
            warm = job_file(tmp, f"warm_{setup.name}", warm_lines, "detect", images)
            warm_up(config, setup, client, warm.path, warm.lines, "detect")
        return alternate(config, (one, two), (one_client, two_client), file)


# ---------------------------------------------------------------- the report


def rounds_text(runs: Sequence[JobRun], value: str) -> str:
    if value == "wall":
        return ", ".join(f"{r.wall_s:.2f}" for r in runs)
    return ", ".join(f"{r.lines_per_s:.1f}" for r in runs)


def print_overhead(comparisons: Sequence[Comparison], idle: float) -> None:
    print(
        "\n| skill | lines | local s (median) | celery s (median) | local lines/s | celery lines/s"
        " | overhead ms/line (median of rounds) | per round | from the medians"
        " | CPU ms/line local | CPU ms/line celery (server + worker + redis)"
        " | cores busy local / celery |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|")
    for c in comparisons:
        per_round = ", ".join(f"{o:.2f}" for o in c.overhead_per_round_ms())
        cpu = (
            f"{c.cpu_ms(c.second):.2f} ({c.cpu_ms(c.second, 'server'):.2f}"
            f" + {c.cpu_ms(c.second, 'workers'):.2f} + {c.cpu_ms(c.second, 'broker'):.2f})"
        )
        print(
            f"| {c.skill} | {c.lines:,} | {c.wall(c.first):.2f} | {c.wall(c.second):.2f}"
            f" | {c.rate(c.first):.1f} | {c.rate(c.second):.1f} | {c.overhead_ms():.2f}"
            f" | {per_round} | {c.overhead_of_medians_ms():.2f} | {c.cpu_ms(c.first):.2f}"
            f" | {cpu} | {c.cores(c.first):.2f} / {c.cores(c.second):.2f} |"
        )
    print()
    for c in comparisons:
        met = "met" if c.overhead_ms() <= TARGET_MS_PER_LINE else "NOT met"
        print(
            f"{c.skill}: celery/local lines/s = {c.ratio():.2f}x (median of rounds);"
            f" overhead {c.overhead_ms():.2f} ms/line, target <= {TARGET_MS_PER_LINE:g}: {met};"
            f" CPU overhead {c.cpu_ms(c.second) - c.cpu_ms(c.first):+.2f} ms/line"
        )
    print(f"idle celery setup (dispatcher ticking, worker waiting): {idle * 1000:.1f} ms CPU/s")


def print_throughput(c: Comparison, cpus: int) -> None:
    print(
        "\n| workers (x concurrency) | lines/s (median) | per round | worker CPU ms/line"
        " | API server CPU ms/line | redis CPU ms/line | cores busy |"
    )
    print("|---|---:|---|---:|---:|---:|---:|")
    for runs, label in ((c.first, "1 (x2)"), (c.second, "2 (x2)")):
        print(
            f"| {label} | {c.rate(runs):.1f} | {rounds_text(runs, 'rate')}"
            f" | {c.cpu_ms(runs, 'workers'):.2f} | {c.cpu_ms(runs, 'server'):.2f}"
            f" | {c.cpu_ms(runs, 'broker'):.3f} | {c.cores(runs):.2f} |"
        )
    one, two = c.cpu_ms(c.first, "workers") / 1000.0, c.cpu_ms(c.second, "workers") / 1000.0
    server = c.cpu_ms(c.first, "server")
    print(
        f"\n2 workers / 1 worker = {c.ratio():.2f}x lines/s (median of rounds). This machine has"
        f" {cpus} cores: both workers share them, so it cannot show scaling; the ratio is what"
        " a second worker process on the same cores costs or gains (more chunks in flight)."
    )
    print(
        f"estimate for {BIG_BOX_CORES} cores: {BIG_BOX_CORES} / {one:.4f} CPU s/line ="
        f" {BIG_BOX_CORES / one:.0f} lines/s from one worker's CPU per line"
        f" ({BIG_BOX_CORES / two:.0f} from two workers' {two:.4f}), assuming the work is"
        " CPU-bound and linear in cores: one worker per box with ORT threads = cores, or N"
        " workers of a few cores each (a small model such as yolox-nano scales better as"
        " several workers than as one with 16 ORT threads)."
    )
    print(
        f"the API server (dispatcher, upload, chunking, polls) spent {server:.2f} ms CPU/line:"
        f" one replica's core keeps about {1000.0 / server:.0f} lines/s of workers busy."
    )


def to_json(result: dict[str, Any]) -> dict[str, Any]:
    def comparison(c: Comparison) -> dict[str, Any]:
        return {
            **asdict(c),
            "overhead_ms_per_line": c.overhead_ms(),
            "overhead_per_round_ms": c.overhead_per_round_ms(),
            "overhead_of_medians_ms": c.overhead_of_medians_ms(),
            "second_over_first": c.ratio(),
        }

    out = dict(result)
    out["comparisons"] = [comparison(c) for c in result.get("comparisons", [])]
    if result.get("throughput") is not None:
        out["throughput"] = comparison(result["throughput"])
    return out


# ---------------------------------------------------------------- main


def run(config: Config) -> dict[str, Any]:
    say(config, f"batchvision {git_revision()}; machine: {os.cpu_count()} CPUs")
    say(
        config,
        f"job_chunk_lines={config.chunk_lines}; worker --concurrency {config.concurrency};"
        f" part 2: job_parallel_chunks={config.parallel_chunks},"
        f" job_chunks_in_flight={config.chunks_in_flight}; rounds {config.rounds} each;"
        f" extra settings: {config.settings or 'none'}",
    )
    result: dict[str, Any] = {"revision": git_revision(), "cpus": os.cpu_count() or 0}
    result["load_before"] = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_celery_") as name:
        tmp = Path(name)
        broker = Redis(tmp)
        try:
            broker.wait_ready()
            if "overhead" in config.parts:
                result.update(part_overhead(config, broker, tmp))
            if "throughput" in config.parts:
                result["throughput"] = part_throughput(config, broker, tmp)
        finally:
            broker.process.stop()
    result["load_after"] = os.getloadavg()
    report(config, result)
    return result


def report(config: Config, result: dict[str, Any]) -> None:
    if not config.quiet:
        before, after = (
            ", ".join(f"{x:.2f}" for x in result[k]) for k in ("load_before", "load_after")
        )
        print(f"\nload average (1, 5, 15 min): before {before}; after {after}")
        if result.get("comparisons"):
            print_overhead(result["comparisons"], result["idle_celery_cpu_per_s"])
        if result.get("throughput") is not None:
            print_throughput(result["throughput"], result["cpus"])
    if config.json_path is not None:
        config.json_path.write_text(json.dumps(to_json(result), indent=2) + "\n")
        say(config, f"\nwrote {config.json_path}")


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed jobs per setup and part")
    parser.add_argument("--metadata-lines", type=int, default=2000, help="part 1; 0: skip")
    parser.add_argument("--detect-lines", type=int, default=400, help="part 1; 0: skip")
    parser.add_argument("--throughput-lines", type=int, default=600, help="part 2; 0: skip")
    parser.add_argument("--lines", type=int, help="one size for all three jobs")
    parser.add_argument("--parts", default=",".join(PARTS), help="overhead,throughput")
    parser.add_argument("--concurrency", type=int, default=2, help="per worker")
    parser.add_argument("--chunk-lines", type=int, default=50)
    parser.add_argument("--parallel-chunks", type=int, default=4, help="part 2")
    parser.add_argument("--chunks-in-flight", type=int, default=8, help="part 2")
    parser.add_argument("--image-count", type=int, default=8, help="distinct images, cycled")
    parser.add_argument("--metadata-side", type=int, default=160, help="longer side, px")
    parser.add_argument("--detect-side", type=int, default=640, help="longer side, px")
    parser.add_argument("--job-timeout", type=float, default=600.0, help="seconds per job")
    parser.add_argument("--setting", action="append", type=parse_setting, default=[])
    parser.add_argument("--models", type=Path, action="append", help="default: both dirs")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--quiet", action="store_true", help="print nothing (tests)")
    args = parser.parse_args(argv)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    if not parts or set(parts) - set(PARTS):
        parser.error(f"--parts: a comma-separated subset of {','.join(PARTS)}")
    if min(args.rounds, args.concurrency, args.chunk_lines, args.image_count) < 1:
        parser.error("--rounds, --concurrency, --chunk-lines and --image-count must be >= 1")
    sizes = [args.metadata_lines, args.detect_lines, args.throughput_lines]
    if args.lines is not None:
        sizes = [args.lines] * 3
    return Config(
        rounds=args.rounds,
        metadata_lines=sizes[0],
        detect_lines=sizes[1],
        throughput_lines=sizes[2],
        concurrency=args.concurrency,
        chunk_lines=args.chunk_lines,
        parallel_chunks=args.parallel_chunks,
        chunks_in_flight=args.chunks_in_flight,
        image_count=args.image_count,
        metadata_side=args.metadata_side,
        detect_side=args.detect_side,
        job_timeout_s=args.job_timeout,
        models=tuple(p.resolve() for p in (args.models or DEFAULT_MODELS)),
        images=args.images.resolve(),
        settings=dict(args.setting),
        parts=parts,
        json_path=args.json,
        quiet=args.quiet,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run(parse_args(argv))


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so every subprocess is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted; servers and workers stopped", file=sys.stderr)
        sys.exit(130)
