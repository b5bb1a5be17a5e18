"""Throughput of `detect` (yolox-nano) three ways, side by side in one run, plus draft-mode timing.

Modes (see bench/README.md):
  raw    in-process loop: read bytes, decode_image(target_side=416), preprocess, run_batch
         one image at a time, sequentially; the ORT settings the server uses.
  http   the real batchvision server (subprocess) under N concurrent clients, each POSTing
         multipart batches of B images to /v1/analyze with tasks=detect.
  naive-nospin  the same naive server with batchvision's ORT settings (idle workers sleep,
         no spin-waiting): the like-for-like comparison.
  naive  bench/naive_server.py (one image per request, Pillow full decode, session.run in the
         handler) under the same N concurrent clients, one image per request.

Modes run interleaved for --rounds rounds and the median per mode is reported, so drift on a
noisy machine hits every mode alike. Compare the ratios, not the absolute numbers.

    .venv/bin/python bench/bench_detect.py
    .venv/bin/python bench/bench_detect.py --clients 8 --batch 4 --rounds 3 --seconds 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from batchvision.core.settings import Settings
from batchvision.intake.decode import decode_image
from batchvision.models.decoders import DecodeParams
from batchvision.models.detector import DetectRequest, OnnxDetector
from batchvision.models.registry import ModelRegistry

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_MODELS = SHARED / "models"
DEFAULT_IMAGES = SHARED / "evaldata" / "coco" / "images"
DEFAULT_DRAFT_SOURCE = SHARED / "evaldata" / "camera_traps" / "images"
MODEL = "yolox-nano"
SIDE = 416
THRESHOLD = 0.25
TASKS = json.dumps([{"skill": "detect", "params": {"model": MODEL, "threshold": THRESHOLD}}])
MODES = ("raw", "http", "naive", "naive-nospin")


@dataclass(frozen=True)
class Config:
    models: Path
    images: Path
    clients: int
    batch: int
    rounds: int
    seconds: float
    repeat: int | None
    modes: tuple[str, ...]
    draft_runs: int
    draft_source: Path
    auth: str = "key"


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes


@dataclass(frozen=True)
class Measurement:
    images: int
    seconds: float
    client_cpu_s: float = 0.0  # this process: the raw loop, or the HTTP client threads
    server_cpu_s: float = 0.0  # the server subprocess, if any

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    @property
    def cpu_ms_per_image(self) -> float:
        """CPU time per image, all threads of client and server; less sensitive to other load
        on the machine than images/s (though contention still inflates it somewhat)."""
        return (self.client_cpu_s + self.server_cpu_s) * 1000.0 / self.images


# One unit of client work: send these images, return (name, detection count) per image.
Sender = Callable[[Sequence[Sample]], list[tuple[str, int]]]


# ---------------------------------------------------------------- work distribution


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process (pid None) or of `pid`, all threads."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class WorkQueue:
    """Hands out chunks of `batch` images, cycling over the set, until `passes` full passes
    are handed out or the deadline passes (whichever is set)."""

    def __init__(
        self, samples: Sequence[Sample], batch: int, passes: int | None, seconds: float | None
    ) -> None:
        self._samples = samples
        self._batch = batch
        self._limit = passes * len(samples) if passes is not None else None
        self._deadline = time.perf_counter() + seconds if seconds is not None else None
        self._next = 0
        self._lock = threading.Lock()
        self.stopped = threading.Event()

    def take(self) -> list[Sample] | None:
        with self._lock:
            if self.stopped.is_set() or self._expired():
                return None
            end = self._next + self._batch
            if self._limit is not None:
                end = min(end, self._limit)
            n = len(self._samples)
            chunk = [self._samples[i % n] for i in range(self._next, end)]
            self._next = end
            return chunk

    def _expired(self) -> bool:
        if self._limit is not None and self._next >= self._limit:
            return True
        return self._deadline is not None and time.perf_counter() >= self._deadline


def run_clients(
    make_sender: Callable[[], Sender], queue: WorkQueue, clients: int
) -> tuple[Measurement, dict[str, int]]:
    """Run `clients` threads that drain `queue`; images/s and per-image detection counts."""
    counts: dict[str, int] = {}
    done = [0] * clients
    errors: list[BaseException] = []

    def worker(slot: int) -> None:
        try:
            send = make_sender()
            while (chunk := queue.take()) is not None:
                for name, found in send(chunk):
                    counts[name] = found
                done[slot] += len(chunk)
        except BaseException as exc:
            errors.append(exc)
            queue.stopped.set()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():  # a timed join keeps Ctrl-C responsive
                thread.join(0.5)
    except BaseException:
        queue.stopped.set()  # let in-flight calls finish, so no thread dies inside ORT at exit
        for thread in threads:
            thread.join(30.0)
        raise
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"client failed: {errors[0]!r}") from errors[0]
    return Measurement(sum(done), elapsed), counts


# ---------------------------------------------------------------- the three senders


def raw_sender(detector: OnnxDetector, max_pixels: int) -> Sender:
    params = DecodeParams(score_threshold=THRESHOLD)

    def send(chunk: Sequence[Sample]) -> list[tuple[str, int]]:
        out = []
        for sample in chunk:
            image = decode_image(sample.data, max_pixels=max_pixels, target_side=SIDE)
            (dets,) = detector.run_batch([detector.preprocess(DetectRequest(image, params))])
            out.append((sample.name, len(dets)))
        return out

    return send


def http_sender(base_url: str, api_key: str | None) -> Sender:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.Client(base_url=base_url, timeout=300.0, headers=headers)

    def send(chunk: Sequence[Sample]) -> list[tuple[str, int]]:
        files = [("images", (s.name, s.data, "image/jpeg")) for s in chunk]
        response = client.post("/v1/analyze", files=files, data={"tasks": TASKS})
        response.raise_for_status()
        results = response.json()["results"]
        if len(results) != len(chunk):
            raise RuntimeError(f"sent {len(chunk)} images, got {len(results)} results")
        out = []
        for sample, result in zip(chunk, results, strict=True):
            if result["status"] != "ok":
                raise RuntimeError(f"{sample.name}: {result['errors']}")
            out.append((sample.name, len(result["outputs"]["detect"]["objects"])))
        return out

    return send


def naive_sender(base_url: str) -> Sender:
    client = httpx.Client(base_url=base_url, timeout=300.0)

    def send(chunk: Sequence[Sample]) -> list[tuple[str, int]]:
        out = []
        for sample in chunk:
            files = {"file": (sample.name, sample.data, "image/jpeg")}
            response = client.post("/detect", files=files)
            response.raise_for_status()
            out.append((sample.name, len(response.json()["objects"])))
        return out

    return send


# ---------------------------------------------------------------- server subprocesses


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server subprocess, stopped (terminate, then kill) when the context exits."""

    def __init__(
        self, name: str, command: list[str], port: int, env: dict[str, str], logs: Path
    ) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = logs / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop it ourselves
        )

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.2)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.name} server did not become healthy; log tail:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def create_api_key(data_dir: Path) -> str:
    """An unlimited key in a fresh database under `data_dir`, as `batchvision keys create`
    would make; the server then runs its default, authenticated and metered, request path."""
    from batchvision.accounts.keys import KeyStore
    from batchvision.core.db import make_engine, migrate

    engine = make_engine(Settings(data_dir=data_dir))
    try:
        migrate(engine)
        return KeyStore(engine).create("bench").secret
    finally:
        engine.dispose()


def batchvision_server(config: Config, tmp: Path) -> tuple[Server, str | None]:
    env = dict(os.environ)
    env["BATCHVISION_MODEL_DIRS"] = str(config.models)
    env["BATCHVISION_DATA_DIR"] = str(tmp / "data")
    env["BATCHVISION_AUTH"] = "required" if config.auth == "key" else "disabled"
    api_key = create_api_key(tmp / "data") if config.auth == "key" else None
    port = free_port()
    command = [sys.executable, "-m", "batchvision.cli", "serve", "--port", str(port)]
    server = Server("batchvision", [*command, "--log-level", "warning"], port, env, tmp)
    return server, api_key


def naive_server(config: Config, tmp: Path, threads: int, *, spin: bool = True) -> Server:
    port = free_port()
    model = config.models / "yolox_nano" / "yolox_nano.onnx"
    script = str(REPO / "bench" / "naive_server.py")
    command = [sys.executable, script, "--model", str(model), "--port", str(port)]
    command += ["--threads", str(threads), *([] if spin else ["--no-spin"])]
    return Server("naive" if spin else "naive-nospin", command, port, dict(os.environ), tmp)


# ---------------------------------------------------------------- throughput rounds


@dataclass
class Mode:
    name: str
    label: str
    make_sender: Callable[[], Sender]
    clients: int
    batch: int
    server_pid: int | None = None


def build_modes(
    config: Config,
    detector: OnnxDetector,
    settings: Settings,
    servers: dict[str, Server],
    api_key: str | None,
) -> list[Mode]:
    def pid(name: str) -> int | None:
        return servers[name].process.pid if name in servers else None

    factories: dict[str, Mode] = {
        "raw": Mode(
            "raw",
            "raw in-process loop (1 image/call)",
            lambda: raw_sender(detector, settings.max_image_pixels),
            1,
            1,
        ),
        "http": Mode(
            "http",
            f"batchvision HTTP ({config.clients} clients x {config.batch} img/req)",
            lambda: http_sender(servers["http"].url, api_key),
            config.clients,
            config.batch,
            pid("http"),
        ),
        "naive": Mode(
            "naive",
            f"naive FastAPI ({config.clients} clients x 1 img/req)",
            lambda: naive_sender(servers["naive"].url),
            config.clients,
            1,
            pid("naive"),
        ),
        "naive-nospin": Mode(
            "naive-nospin",
            f"naive FastAPI, batchvision's ORT settings ({config.clients} clients x 1 img/req)",
            lambda: naive_sender(servers["naive-nospin"].url),
            config.clients,
            1,
            pid("naive-nospin"),
        ),
    }
    return [factories[name] for name in config.modes]


def measure(mode: Mode, samples: Sequence[Sample], config: Config) -> Measurement:
    seconds = None if config.repeat is not None else config.seconds
    queue = WorkQueue(samples, mode.batch, config.repeat, seconds)
    client_before = cpu_seconds()
    server_before = cpu_seconds(mode.server_pid) if mode.server_pid else 0.0
    measurement, _ = run_clients(mode.make_sender, queue, mode.clients)
    server_after = cpu_seconds(mode.server_pid) if mode.server_pid else 0.0
    return Measurement(
        measurement.images,
        measurement.seconds,
        client_cpu_s=cpu_seconds() - client_before,
        server_cpu_s=server_after - server_before,
    )


def warm_up(modes: Sequence[Mode], samples: Sequence[Sample]) -> dict[str, dict[str, int]]:
    """One full pass per mode (model load, ORT arenas, connections); returns detection counts
    per image, which double as the sanity check."""
    counts = {}
    for mode in modes:
        queue = WorkQueue(samples, mode.batch, passes=1, seconds=None)
        measurement, counts[mode.name] = run_clients(mode.make_sender, queue, mode.clients)
        print(f"  warm-up {mode.name:<6} {measurement.images} images, {measurement.rate:6.1f}/s")
    return counts


def report_sanity(counts: dict[str, dict[str, int]], samples: Sequence[Sample]) -> None:
    names = [s.name for s in samples]
    for mode, found in counts.items():
        total = sum(found.get(n, 0) for n in names)
        with_dets = sum(1 for n in names if found.get(n, 0) > 0)
        line = f"  {mode:<6} {total:4d} detections, {with_dets}/{len(names)} images with any"
        if mode != "raw" and "raw" in counts:
            same = sum(1 for n in names if found.get(n) == counts["raw"].get(n))
            line += f"; same count as raw on {same}/{len(names)}"
        print(line)
        if total == 0:
            raise RuntimeError(f"{mode}: no detections at all; the benchmark is not measuring")


def run_rounds(
    modes: Sequence[Mode], samples: Sequence[Sample], config: Config
) -> dict[str, list[Measurement]]:
    results: dict[str, list[Measurement]] = {mode.name: [] for mode in modes}
    for index in range(config.rounds):
        for mode in modes:
            m = measure(mode, samples, config)
            results[mode.name].append(m)
            print(
                f"  round {index + 1} {mode.name:<6} {m.images:5d} images in {m.seconds:5.1f} s"
                f" = {m.rate:6.1f} images/s; CPU {m.cpu_ms_per_image:5.1f} ms/image"
                f" (server {m.server_cpu_s:5.1f} s, this process {m.client_cpu_s:5.1f} s)",
                flush=True,
            )
    return results


def print_throughput(modes: Sequence[Mode], results: dict[str, list[Measurement]]) -> None:
    medians = {name: statistics.median(m.rate for m in ms) for name, ms in results.items()}
    print("\n| mode | images/s (median) | per round | CPU ms/image (median) |")
    print("|---|---:|---|---:|")
    for mode in modes:
        runs = results[mode.name]
        rounds = ", ".join(f"{m.rate:.1f}" for m in runs)
        cpu = statistics.median(m.cpu_ms_per_image for m in runs)
        print(f"| {mode.label} | {medians[mode.name]:.1f} | {rounds} | {cpu:.1f} |")
    print()
    for other, label, target in (
        ("raw", "HTTP / raw  ", ">= 0.90x"),
        ("naive", "HTTP / naive", "clearly > 1x"),
        ("naive-nospin", "HTTP / naive, same ORT settings", ">= 1.0x"),
    ):
        if "http" in results and other in results:
            print_ratio(label, results["http"], results[other], target)


def print_ratio(
    label: str, ours: Sequence[Measurement], theirs: Sequence[Measurement], target: str
) -> None:
    """The ratio of medians, plus two views that are less exposed to drift: the ratio within
    each round (modes of one round ran back to back) and the ratio of CPU time per image."""
    ratio = statistics.median(m.rate for m in ours) / statistics.median(m.rate for m in theirs)
    per_round = [a.rate / b.rate for a, b in zip(ours, theirs, strict=True)]
    cpu = statistics.median(m.cpu_ms_per_image for m in theirs) / statistics.median(
        m.cpu_ms_per_image for m in ours
    )
    rounds = ", ".join(f"{r:.2f}" for r in per_round)
    print(
        f"{label} = {ratio:.2f}x (target {target}); per round {rounds}; "
        f"by CPU time per image {cpu:.2f}x"
    )


# ---------------------------------------------------------------- draft-mode timing


def make_big_jpeg(source_dir: Path, tmp: Path) -> Path:
    source = sorted(source_dir.glob("*.jpg"))[0]
    path = tmp / "big_12mp.jpg"
    with Image.open(source) as image:
        image.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(path, quality=90)
    print(f"  12 MP test image from {source.name}: {path.stat().st_size / 1e6:.1f} MB")
    return path


def time_decode(data: bytes, detector: OnnxDetector, max_pixels: int, side: int | None) -> float:
    start = time.perf_counter()
    image = decode_image(data, max_pixels=max_pixels, target_side=side)
    detector.preprocess(DetectRequest(image, DecodeParams()))
    return (time.perf_counter() - start) * 1000.0


def draft_timing(config: Config, detector: OnnxDetector, settings: Settings, tmp: Path) -> None:
    data = make_big_jpeg(config.draft_source, tmp).read_bytes()
    max_pixels = settings.max_image_pixels
    drafted = decode_image(data, max_pixels=max_pixels, target_side=SIDE).pixels.shape
    print(f"  decoded pixels: draft {drafted[1]}x{drafted[0]}, full 4000x3000")
    draft, full = [], []
    time_decode(data, detector, max_pixels, SIDE)  # warm caches
    for _ in range(config.draft_runs):  # interleaved so drift hits both alike
        draft.append(time_decode(data, detector, max_pixels, SIDE))
        full.append(time_decode(data, detector, max_pixels, None))
    draft_ms, full_ms = statistics.median(draft), statistics.median(full)
    print(f"\n| decode + prepare, 4000x3000 JPEG q90 | ms (median of {config.draft_runs}) |")
    print("|---|---:|")
    print(f"| target_side=416 (JPEG draft) | {draft_ms:.1f} |")
    print(f"| target_side=None (full decode) | {full_ms:.1f} |")
    print(f"\ndraft speed-up = {full_ms / draft_ms:.1f}x")


# ---------------------------------------------------------------- main


def git_revision() -> str:
    command = ["git", "describe", "--always", "--dirty"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown"


def print_settings(settings: Settings, config: Config) -> None:
    print(f"batchvision {git_revision()}; machine: {os.cpu_count()} CPUs")
    print(
        f"server settings: worker_threads={settings.worker_threads}, "
        f"ort_intra_op_threads={settings.ort_intra_op_threads}, "
        f"ort_inter_op_threads={settings.ort_inter_op_threads}, "
        f"max_batch_size={settings.max_batch_size}, max_wait_ms={settings.max_wait_ms}, "
        f"auth={'API key (metered)' if config.auth == 'key' else 'disabled'}"
    )
    print(
        "raw loop: the same ORT settings; naive server: ORT intra-op threads="
        f"{settings.ort_intra_op_threads}, inter-op 1"
    )


def load_samples(images: Path) -> list[Sample]:
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        raise SystemExit(f"no JPEG images in {images}")
    return [Sample(p.name, p.read_bytes()) for p in paths]


def run(config: Config) -> None:
    settings = Settings(model_dirs=[config.models])
    detector = ModelRegistry(settings).model(MODEL)
    assert isinstance(detector, OnnxDetector), f"{MODEL} is not an ONNX detector"
    samples = load_samples(config.images)
    print_settings(settings, config)
    length = f"{config.repeat} passes" if config.repeat else f"~{config.seconds:.0f} s"
    print(
        f"{len(samples)} images from {config.images}; {config.rounds} rounds of {length} per mode"
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench_detect_") as name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(name)
        servers: dict[str, Server] = {}
        api_key = None
        if "http" in config.modes:
            server, api_key = batchvision_server(config, tmp)
            servers["http"] = stack.enter_context(running(server))
        if "naive" in config.modes:
            threads = settings.ort_intra_op_threads
            servers["naive"] = stack.enter_context(running(naive_server(config, tmp, threads)))
        if "naive-nospin" in config.modes:
            threads = settings.ort_intra_op_threads
            quiet = naive_server(config, tmp, threads, spin=False)
            servers["naive-nospin"] = stack.enter_context(running(quiet))
        modes = build_modes(config, detector, settings, servers, api_key)
        print("\nwarm-up and sanity (one pass each):")
        counts = warm_up(modes, samples)
        report_sanity(counts, samples)
        print("\ntimed rounds:")
        results = run_rounds(modes, samples, config)
        stack.close()  # servers down before the single-threaded draft timing
        print_throughput(modes, results)
        if config.draft_runs > 0:
            print("\ndraft-mode timing:")
            draft_timing(config, detector, settings, tmp)


def parse_modes(
    parser: argparse.ArgumentParser, text: str, known: Sequence[str]
) -> tuple[str, ...]:
    """A comma-separated subset of `known` (the --modes option of the bench scripts)."""
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    if unknown := set(modes) - set(known):
        parser.error(f"unknown modes: {sorted(unknown)}")
    return modes


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--batch", type=int, default=8, help="images per /v1/analyze request")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per mode")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per mode")
    parser.add_argument("--repeat", type=int, help="fixed passes over the images instead")
    parser.add_argument("--modes", default=",".join(MODES), help="subset of raw,http,naive")
    parser.add_argument(
        "--auth",
        choices=("key", "disabled"),
        default="key",
        help="key: server's default auth (a Bearer API key, metered); disabled: BATCHVISION_AUTH",
    )
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--draft-runs", type=int, default=15, help="0 skips draft timing")
    parser.add_argument("--draft-source", type=Path, default=DEFAULT_DRAFT_SOURCE)
    args = parser.parse_args(argv)
    modes = parse_modes(parser, args.modes, MODES)
    if min(args.clients, args.batch, args.rounds) < 1:
        parser.error("--clients, --batch and --rounds must be at least 1")
    return Config(
        models=args.models.resolve(),
        images=args.images.resolve(),
        clients=args.clients,
        batch=args.batch,
        rounds=args.rounds,
        seconds=args.seconds,
        repeat=args.repeat,
        modes=modes,
        draft_runs=args.draft_runs,
        draft_source=args.draft_source.resolve(),
        auth=args.auth,
    )


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the server subprocesses are always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run(config)
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
