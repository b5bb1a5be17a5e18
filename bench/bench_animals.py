"""Throughput of `animals` on the camera-trap images three ways, side by side in one run.

Modes (see bench/README.md):
  raw   in-process loop, no server: read bytes, decode_image(target_side=416: the JPEG draft
        path), preprocess, run_batch with the skill's detection settings (threshold 0.2,
        the animal/person/vehicle class filter), one image per call, sequentially.
  http  the real server (`batchvision serve` subprocess, auth on with a metered API key) under
        --clients concurrent clients. Each request carries up to 10 images and at most 10 MB
        of image bytes (AnimalDetect's limits). It POSTs to /api/v1/batch-detect when the
        running server has that route (probed at start-up), else to /v1/analyze with the
        animals task; the route used is printed and recorded.
  run   `batchvision run FOLDER --skill animals --format megadetector` as a subprocess on a
        folder of cycled links to the images; wall time from spawn to exit, so the process's
        start-up (imports, model load) is in it. A 1-image run first measures that start-up;
        "steady" images/s leaves it out.

The images are cycled to --images per segment (or --seconds per segment for raw and http).
Modes run interleaved for --rounds rounds and the median is reported, with ratios per round and
by CPU time per image: the 2-core machine is shared, so compare ratios, not absolute numbers.
The image sizes are printed (the large photos are where the draft decode matters), with
decode + prepare timed per image with the draft path and with a full decode.

    .venv/bin/python bench/bench_animals.py
    .venv/bin/python bench/bench_animals.py --rounds 3 --images 210 --clients 4 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batchvision.core.settings import Settings
from batchvision.intake.decode import decode_image
from batchvision.models.decoders import DecodeParams
from batchvision.models.detector import DetectRequest, OnnxDetector
from batchvision.models.registry import ModelRegistry
from batchvision.skills.animals import (
    _MAX_DETECTIONS,
    _NMS_IOU,
    AnimalsParams,
    boxes_of,
    category_ids,
    default_detector,
)
from bench_detect import (
    Measurement,
    Sample,
    Sender,
    Server,
    WorkQueue,
    cpu_seconds,
    create_api_key,
    free_port,
    git_revision,
    parse_modes,
    report_sanity,
    run_clients,
    running,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_MODELS = SHARED / "models"
DEFAULT_IMAGES = SHARED / "evaldata" / "camera_traps" / "images"
THRESHOLD = float(AnimalsParams.model_fields["threshold"].default)
MAX_IMAGES_PER_REQUEST = 10  # AnimalDetect: 1-10 images
MAX_REQUEST_BYTES = 10 * 1000 * 1000  # AnimalDetect: combined raw images up to 10 MB
BATCH_DETECT = "/api/v1/batch-detect"
ANALYZE = "/v1/analyze"
MODES = ("raw", "http", "run")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Config:
    models: Path
    images: Path
    clients: int
    rounds: int
    seconds: float
    count: int | None  # images per segment; None: --seconds for raw/http
    run_images: int
    modes: tuple[str, ...]
    decode_runs: int
    limit: int | None  # use only the first N images of the folder (tests)
    auth: str = "key"
    json_path: Path | None = None


# ---------------------------------------------------------------- the image set


@dataclass
class ImageInfo:
    name: str
    width: int
    height: int
    bytes: int
    draft_ms: float | None = None  # decode + prepare, target_side=416 (JPEG draft)
    full_ms: float | None = None  # decode + prepare, full decode

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def load_samples(images: Path, limit: int | None) -> list[Sample]:
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        paths = paths[:limit]
    if not paths:
        raise SystemExit(f"no images in {images}")
    return [Sample(p.name, p.read_bytes()) for p in paths]


def describe_images(samples: Sequence[Sample], images: Path) -> list[ImageInfo]:
    infos = []
    for sample in samples:
        with Image.open(images / sample.name) as image:
            infos.append(ImageInfo(sample.name, image.width, image.height, len(sample.data)))
    return infos


def time_decodes(
    samples: Sequence[Sample], infos: Sequence[ImageInfo], detector: OnnxDetector, runs: int
) -> None:
    """Median decode + prepare per image, draft vs full, interleaved so drift hits both."""
    side = max(detector.card.size)
    for sample, info in zip(samples, infos, strict=True):
        draft: list[float] = []
        full: list[float] = []
        for _ in range(runs):
            for target, into in ((side, draft), (None, full)):
                start = time.perf_counter()
                image = decode_image(sample.data, max_pixels=10**8, target_side=target)
                detector.preprocess(DetectRequest(image, DecodeParams()))
                into.append((time.perf_counter() - start) * 1000.0)
        info.draft_ms, info.full_ms = statistics.median(draft), statistics.median(full)


def print_images(infos: Sequence[ImageInfo], timed: bool) -> None:
    print(
        "\n| image | pixels | MP | MB |" + (" decode+prepare draft ms | full ms |" if timed else "")
    )
    print("|---|---|---:|---:|" + ("---:|---:|" if timed else ""))
    for i in infos:
        row = f"| {i.name} | {i.width}x{i.height} | {i.megapixels:.1f} | {i.bytes / 1e6:.2f} |"
        if timed:
            row += f" {i.draft_ms:.1f} | {i.full_ms:.1f} |"
        print(row)
    mps = [i.megapixels for i in infos]
    total = sum(i.bytes for i in infos)
    print(
        f"\n{len(infos)} images, {total / 1e6:.1f} MB; megapixels min {min(mps):.1f}, "
        f"median {statistics.median(mps):.1f}, max {max(mps):.1f}; "
        f">= 3 MP: {sum(m >= 3 for m in mps)}, >= 12 MP: {sum(m >= 12 for m in mps)}"
    )
    if timed:
        draft = sum(i.draft_ms or 0.0 for i in infos)
        full = sum(i.full_ms or 0.0 for i in infos)
        print(
            f"decode + prepare over the set: {draft / len(infos):.1f} ms/image with the draft "
            f"path vs {full / len(infos):.1f} ms/image full decode = {full / draft:.1f}x"
        )


# ---------------------------------------------------------------- work distribution


class PackedQueue(WorkQueue):
    """Requests of up to `batch` images and `max_bytes` of image data, cycling over the set,
    until `images` are handed out or the deadline passes."""

    def __init__(
        self,
        samples: Sequence[Sample],
        batch: int,
        max_bytes: int,
        images: int | None,
        seconds: float | None,
    ) -> None:
        super().__init__(samples, batch, None, seconds)
        self._limit = images
        self._max_bytes = max_bytes

    def take(self) -> list[Sample] | None:
        with self._lock:
            if self.stopped.is_set() or self._expired():
                return None
            chunk: list[Sample] = []
            size = 0
            while len(chunk) < self._batch:
                if self._limit is not None and self._next >= self._limit:
                    break
                sample = self._samples[self._next % len(self._samples)]
                if chunk and size + len(sample.data) > self._max_bytes:
                    break
                chunk.append(sample)
                size += len(sample.data)
                self._next += 1
            return chunk


# ---------------------------------------------------------------- senders


def raw_sender(detector: OnnxDetector, settings: Settings) -> Sender:
    card = detector.card
    side = max(card.size)
    params = DecodeParams(
        score_threshold=THRESHOLD,
        nms_iou=_NMS_IOU,
        max_detections=_MAX_DETECTIONS,
        class_filter=category_ids(card),
    )

    def send(chunk: Sequence[Sample]) -> list[tuple[str, int]]:
        out = []
        for sample in chunk:
            image = decode_image(
                sample.data, max_pixels=settings.max_image_pixels, target_side=side
            )
            (dets,) = detector.run_batch([detector.preprocess(DetectRequest(image, params))])
            out.append((sample.name, len(boxes_of(dets, card, image))))
        return out

    return send


def http_sender(base_url: str, api_key: str | None, route: str) -> Sender:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.Client(base_url=base_url, timeout=600.0, headers=headers)
    tasks = json.dumps([{"skill": "animals", "params": {"threshold": THRESHOLD}}])

    def send(chunk: Sequence[Sample]) -> list[tuple[str, int]]:
        files = [("images", (s.name, s.data, "image/jpeg")) for s in chunk]
        if route == BATCH_DETECT:
            response = client.post(route, files=files, data={"threshold": str(THRESHOLD)})
        else:
            response = client.post(route, files=files, data={"tasks": tasks})
        if response.status_code != 200:
            raise RuntimeError(f"{route}: HTTP {response.status_code}: {response.text[:500]}")
        results = response.json()["results"]
        if len(results) != len(chunk):
            raise RuntimeError(f"sent {len(chunk)} images, got {len(results)} results")
        return [(s.name, annotation_count(route, r)) for s, r in zip(chunk, results, strict=True)]

    return send


def annotation_count(route: str, result: dict[str, Any]) -> int:
    if route == BATCH_DETECT:
        if result.get("error") or "annotations" not in result:
            raise RuntimeError(f"{result.get('filename')}: {result.get('error') or result}")
        return len(result["annotations"])
    if result["status"] != "ok":
        raise RuntimeError(f"{result.get('filename')}: {result['errors']}")
    return len(result["outputs"]["animals"]["annotations"])


def probe_route(base_url: str, api_key: str | None, sample: Sample) -> tuple[str, str]:
    """/api/v1/batch-detect when the server answers it with a result, else /v1/analyze; the
    second value says why."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    files = [("images", (sample.name, sample.data, "image/jpeg"))]
    try:
        response = httpx.post(
            base_url + BATCH_DETECT, files=files, data={"threshold": str(THRESHOLD)},
            headers=headers, timeout=120.0,
        )  # fmt: skip
    except httpx.HTTPError as exc:
        return ANALYZE, f"{BATCH_DETECT} probe failed: {exc!r}"
    if response.status_code == 200:
        try:
            annotation_count(BATCH_DETECT, response.json()["results"][0])
        except (KeyError, IndexError, ValueError, RuntimeError) as exc:
            return ANALYZE, f"{BATCH_DETECT} answered 200 with an unexpected body ({exc!r})"
        return BATCH_DETECT, f"{BATCH_DETECT} answered 200"
    return ANALYZE, f"{BATCH_DETECT} answered HTTP {response.status_code}"


# ---------------------------------------------------------------- the folder run


def make_folder(samples: Sequence[Sample], images: Path, folder: Path, count: int) -> list[str]:
    """`count` symlinks cycling over the images; returns the original name of each, in the
    order `batchvision run` sorts them."""
    folder.mkdir(parents=True)
    originals = []
    for i in range(count):
        sample = samples[i % len(samples)]
        (folder / f"{i:05d}_{sample.name}").symlink_to(images / sample.name)
        originals.append(sample.name)
    return originals


@dataclass
class RunOutcome:
    measurement: Measurement
    counts: dict[str, int]  # original name -> detections (its first copy)


def folder_run(
    config: Config, samples: Sequence[Sample], tmp: Path, count: int, tag: str
) -> RunOutcome:
    folder, out = tmp / f"run_{tag}", tmp / f"run_{tag}.json"
    originals = make_folder(samples, config.images, folder, count)
    env = dict(os.environ)
    env["BATCHVISION_DATA_DIR"] = str(tmp / "run_data")
    env["BATCHVISION_MODEL_DIRS"] = str(config.models)
    command = [
        sys.executable,
        "-m",
        "batchvision.cli",
        "run",
        str(folder),
        "--skill",
        "animals",
    ]
    command += ["--out", str(out), "--format", "megadetector", "--threshold", str(THRESHOLD)]
    command += ["--model-dir", str(config.models)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"batchvision run exited {done.returncode}: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    body = json.loads(out.read_text())
    records = body["images"]
    if len(records) != count:
        raise RuntimeError(f"batchvision run wrote {len(records)} records for {count} images")
    failed = [r["file"] for r in records if r.get("failure")]
    if failed:
        raise RuntimeError(f"batchvision run failed on {failed[:5]}")
    counts: dict[str, int] = {}
    for record in sorted(records, key=lambda r: r["file"]):
        original = originals[int(record["file"].split("_", 1)[0])]
        counts.setdefault(original, len(record["detections"]))
    return RunOutcome(Measurement(count, elapsed, server_cpu_s=cpu), counts)


# ---------------------------------------------------------------- rounds


@dataclass
class ModeResult:
    name: str
    label: str
    rounds: list[Measurement] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(m.rate for m in self.rounds)

    @property
    def cpu_ms_per_image(self) -> float:
        return statistics.median(m.cpu_ms_per_image for m in self.rounds)


@dataclass
class Ratio:
    name: str
    ratio: float
    per_round: list[float]
    by_cpu: float


@dataclass
class BenchResult:
    images: list[ImageInfo]
    route: str
    route_note: str
    modes: dict[str, ModeResult]
    sanity: dict[str, dict[str, int]]
    ratios: list[Ratio]
    run_startup_s: float | None = None
    run_steady_rate: list[float] = field(default_factory=list)  # per round, start-up left out

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": git_revision(),
            "cpus": os.cpu_count(),
            "route": self.route,
            "route_note": self.route_note,
            "images": [{**asdict(i), "megapixels": round(i.megapixels, 2)} for i in self.images],
            "modes": {
                name: {
                    "label": m.label,
                    "images_per_s": m.rate,
                    "cpu_ms_per_image": m.cpu_ms_per_image,
                    "rounds": [
                        {**asdict(r), "rate": r.rate, "cpu_ms_per_image": r.cpu_ms_per_image}
                        for r in m.rounds
                    ],
                }
                for name, m in self.modes.items()
            },
            "ratios": [asdict(r) for r in self.ratios],
            "run_startup_s": self.run_startup_s,
            "run_steady_images_per_s": self.run_steady_rate,
            "sanity": self.sanity,
        }


def measure_clients(
    sender: Any, queue: PackedQueue, clients: int, server_pid: int | None
) -> tuple[Measurement, dict[str, int]]:
    client_before = cpu_seconds()
    server_before = cpu_seconds(server_pid) if server_pid else 0.0
    measurement, counts = run_clients(sender, queue, clients)
    server_after = cpu_seconds(server_pid) if server_pid else 0.0
    m = Measurement(
        measurement.images,
        measurement.seconds,
        client_cpu_s=cpu_seconds() - client_before,
        server_cpu_s=server_after - server_before,
    )
    return m, counts


def run(config: Config) -> BenchResult:
    settings = Settings(model_dirs=[config.models])
    registry = ModelRegistry(settings)
    detector = registry.model(default_detector(registry))
    samples = load_samples(config.images, config.limit)
    infos = describe_images(samples, config.images)
    print(f"batchvision {git_revision()}; machine: {os.cpu_count()} CPUs")
    print(
        f"animals, detector {detector.card.name}, threshold {THRESHOLD}; server settings: "
        f"worker_threads={settings.worker_threads}, ort_intra_op_threads="
        f"{settings.ort_intra_op_threads}, max_batch_size={settings.max_batch_size}, "
        f"auth={'API key (metered)' if config.auth == 'key' else 'disabled'}"
    )
    if config.decode_runs > 0:
        time_decodes(samples, infos, detector, config.decode_runs)
    print_images(infos, config.decode_runs > 0)
    length = f"{config.count} images" if config.count else f"~{config.seconds:.0f} s"
    run_count = config.count or config.run_images
    print(
        f"\n{config.rounds} rounds; raw and http segments of {length}, run segments of "
        f"{run_count} images (cycled links); {config.clients} HTTP clients"
    )
    route, note = ANALYZE, "http mode not run"
    results = {
        "raw": ModeResult("raw", "raw in-process loop (draft decode, 1 image/call)"),
        "http": ModeResult("http", ""),
        "run": ModeResult("run", "batchvision run --format megadetector (subprocess)"),
    }
    sanity: dict[str, dict[str, int]] = {}
    result = BenchResult(infos, route, note, {}, sanity, [])
    with (
        tempfile.TemporaryDirectory(prefix="bench_animals_") as name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(name)
        api_key, server = None, None
        if "http" in config.modes:
            server, api_key = animals_server(config, tmp)
            stack.enter_context(running(server))
            route, note = probe_route(server.url, api_key, min(samples, key=lambda s: len(s.data)))
        result.route, result.route_note = route, note
        results["http"].label = (
            f"HTTP {route} ({config.clients} clients x <= {MAX_IMAGES_PER_REQUEST} img, "
            f"<= {MAX_REQUEST_BYTES // 1_000_000} MB/req)"
        )
        print(f"http route: {route} ({note})")

        def raw_queue(count: int | None) -> PackedQueue:
            return PackedQueue(samples, 1, 1 << 62, count, None if count else config.seconds)

        def http_queue(count: int | None) -> PackedQueue:
            seconds = None if count else config.seconds
            return PackedQueue(samples, MAX_IMAGES_PER_REQUEST, MAX_REQUEST_BYTES, count, seconds)

        def raw_make() -> Sender:
            return raw_sender(detector, settings)

        def http_make() -> Sender:
            assert server is not None
            return http_sender(server.url, api_key, route)

        print("\nwarm-up (one pass each; the 1-image folder run measures start-up):")
        if "raw" in config.modes:
            m, sanity["raw"] = measure_clients(raw_make, raw_queue(len(samples)), 1, None)
            print(f"  raw   {m.images} images, {m.rate:6.1f}/s")
        if "http" in config.modes and server is not None:
            queue = http_queue(len(samples))
            m, sanity["http"] = measure_clients(
                http_make, queue, config.clients, server.process.pid
            )
            print(f"  http  {m.images} images, {m.rate:6.1f}/s")
        if "run" in config.modes:
            startup = folder_run(config, samples, tmp, 1, "startup")
            result.run_startup_s = startup.measurement.seconds
            print(f"  run   1 image: {startup.measurement.seconds:.2f} s (process start-up)")

        print("\ntimed rounds:")
        for index in range(config.rounds):
            for mode in config.modes:
                if mode == "raw":
                    m, _ = measure_clients(raw_make, raw_queue(config.count), 1, None)
                elif mode == "http":
                    assert server is not None
                    queue = http_queue(config.count)
                    m, _ = measure_clients(http_make, queue, config.clients, server.process.pid)
                else:
                    outcome = folder_run(config, samples, tmp, run_count, f"r{index}")
                    m = outcome.measurement
                    sanity.setdefault("run", outcome.counts)
                    if result.run_startup_s is not None and run_count > 1:
                        steady = (run_count - 1) / max(m.seconds - result.run_startup_s, 1e-6)
                        result.run_steady_rate.append(steady)
                results[mode].rounds.append(m)
                print(
                    f"  round {index + 1} {mode:<5} {m.images:5d} images in {m.seconds:6.1f} s"
                    f" = {m.rate:6.1f} images/s; CPU {m.cpu_ms_per_image:6.1f} ms/image",
                    flush=True,
                )
        stack.close()
    result.modes = {mode: results[mode] for mode in config.modes}
    print("\nsanity (detections per image; http/run may merge boxes the raw loop keeps):")
    report_sanity(sanity, samples)
    result.ratios = ratios(result.modes)
    print_results(result)
    return result


def animals_server(config: Config, tmp: Path) -> tuple[Server, str | None]:
    env = dict(os.environ)
    env["BATCHVISION_MODEL_DIRS"] = str(config.models)
    env["BATCHVISION_DATA_DIR"] = str(tmp / "data")
    env["BATCHVISION_AUTH"] = "required" if config.auth == "key" else "disabled"
    api_key = create_api_key(tmp / "data") if config.auth == "key" else None
    port = free_port()
    command = [sys.executable, "-m", "batchvision.cli", "serve", "--port", str(port)]
    return Server("batchvision", [*command, "--log-level", "warning"], port, env, tmp), api_key


def ratios(modes: dict[str, ModeResult]) -> list[Ratio]:
    out = []
    raw = modes.get("raw")
    for name in ("http", "run"):
        ours = modes.get(name)
        if raw is None or ours is None:
            continue
        per_round = [a.rate / b.rate for a, b in zip(ours.rounds, raw.rounds, strict=True)]
        by_cpu = raw.cpu_ms_per_image / ours.cpu_ms_per_image
        out.append(Ratio(f"{name}/raw", ours.rate / raw.rate, per_round, by_cpu))
    return out


def print_results(result: BenchResult) -> None:
    print("\n| mode | images/s (median) | per round | CPU ms/image (median) |")
    print("|---|---:|---|---:|")
    for mode in result.modes.values():
        rounds = ", ".join(f"{m.rate:.1f}" for m in mode.rounds)
        print(f"| {mode.label} | {mode.rate:.1f} | {rounds} | {mode.cpu_ms_per_image:.1f} |")
    print()
    for r in result.ratios:
        rounds = ", ".join(f"{x:.2f}" for x in r.per_round)
        print(f"{r.name:<8} = {r.ratio:.2f}x; per round {rounds}; by CPU per image {r.by_cpu:.2f}x")
    if result.run_startup_s is not None and result.run_steady_rate:
        steady = statistics.median(result.run_steady_rate)
        raw = result.modes.get("raw")
        line = (
            f"run: process start-up {result.run_startup_s:.2f} s (a 1-image run); without it "
            f"{steady:.1f} images/s"
        )
        if raw is not None:
            line += f" = {steady / raw.rate:.2f}x raw"
        print(line)


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per mode")
    parser.add_argument("--seconds", type=float, default=20.0, help="raw/http seconds per round")
    parser.add_argument("--images", type=int, help="images per segment, every mode, instead")
    parser.add_argument(
        "--run-images", type=int, default=210, help="images per `batchvision run` segment"
    )
    parser.add_argument("--modes", default=",".join(MODES), help="subset of raw,http,run")
    parser.add_argument("--auth", choices=("key", "disabled"), default="key")
    parser.add_argument("--decode-runs", type=int, default=3, help="0 skips decode timing")
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--data", type=Path, default=DEFAULT_IMAGES, help="image folder")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    modes = parse_modes(parser, args.modes, MODES)
    if min(args.clients, args.rounds, args.run_images) < 1 or (args.images or 1) < 1:
        parser.error("--clients, --rounds, --run-images and --images must be at least 1")
    return Config(
        models=args.models.resolve(),
        images=args.data.resolve(),
        clients=args.clients,
        rounds=args.rounds,
        seconds=args.seconds,
        count=args.images,
        run_images=args.run_images,
        modes=modes,
        decode_runs=args.decode_runs,
        limit=args.limit,
        auth=args.auth,
        json_path=args.json,
    )


def main(argv: Sequence[str] | None = None) -> BenchResult:
    config = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the server subprocess is always stopped (main thread only;
    # the previous handler comes back afterwards, for callers such as the tests).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)) if main_thread else None
    try:
        result = run(config)
    except KeyboardInterrupt:
        print("\ninterrupted; server stopped", file=sys.stderr)
        sys.exit(130)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if config.json_path is not None:
        config.json_path.write_text(json.dumps(result.to_json(), indent=1) + "\n")
        print(f"\nwrote {config.json_path}")
    return result


if __name__ == "__main__":
    main()
