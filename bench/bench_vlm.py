"""A native caption job against the stand-in VLM server: lines/s against the ideal C/L.

The stand-in (tests/vlm_standin.py) answers every call after a fixed latency L; batchvision's
backend concurrency is C, so no scheduler can beat C/L lines/s. The job runs through the real
server over HTTP (`POST /v1/jobs`), exactly as a client's would. A second run has the backend
fail a share of calls with 503: every line must still end ok, and the extra attempts are counted.

    PYTHONPATH=src .venv/bin/python bench/bench_vlm.py --lines 1000 --latency-ms 200 --concurrency 4
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from PIL import Image

from batchvision.api.app import create_app
from batchvision.core.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from vlm_standin import run_standin  # the stand-in ships with the tests


@dataclass
class Run:
    lines: int
    ok: int
    seconds: float
    attempts: int
    faults: int

    def rate(self) -> float:
        return self.lines / self.seconds


def tiny_jpeg() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 140, 200)).save(buffer, "JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


def job_file(lines: int) -> bytes:
    image = tiny_jpeg()
    rows = [json.dumps({"id": f"l{i}", "skill": "caption", "image": image}) for i in range(lines)]
    return ("\n".join(rows) + "\n").encode()


def serve(settings: Settings) -> tuple[uvicorn.Server, str]:
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def run_job(url: str, body: bytes, timeout_s: float) -> tuple[dict[str, Any], float, list[Any]]:
    with httpx.Client(base_url=url, timeout=60.0) as client:
        start = time.perf_counter()
        job = client.post("/v1/jobs", content=body).raise_for_status().json()
        while True:
            view = client.get(f"/v1/jobs/{job['id']}").json()
            if view["status"] not in ("chunking", "processing"):
                break
            if time.perf_counter() - start > timeout_s:
                raise RuntimeError("the job did not end in time")
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        lines = []
        for output in view["outputs"]:
            text = client.get(output["url"]).text
            lines += [json.loads(line) for line in text.splitlines()]
    return view, elapsed, lines


def measure(args: argparse.Namespace, failure_rate: float) -> Run:
    standin_state = {"latency_s": args.latency_ms / 1000.0, "failure_rate": failure_rate}
    with run_standin(**standin_state) as standin, tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            auth="disabled",
            vlm_url=standin.url,
            vlm_max_concurrency=args.concurrency,
            vlm_retry_base_s=0.05,
            vlm_breaker_failures=50,
        )
        server, url = serve(settings)
        try:
            _, elapsed, lines = run_job(url, job_file(args.lines), timeout_s=3600)
        finally:
            server.should_exit = True
        ok = sum(1 for line in lines if line.get("status") == "ok")
        requests = standin.requests
        faults = sum(1 for r in requests if r["fault"])
        return Run(args.lines, ok, elapsed, len(requests), faults)


def report(name: str, run: Run, args: argparse.Namespace) -> None:
    ideal = args.concurrency / (args.latency_ms / 1000.0)
    per_slot_ms = run.seconds * 1000.0 * args.concurrency / run.lines
    print(
        f"{name:<22} {run.lines} lines, {run.ok} ok, {run.seconds:6.1f} s: "
        f"{run.rate():5.2f} lines/s vs ideal {ideal:.2f} = {run.rate() / ideal:.3f} of ideal; "
        f"overhead {per_slot_ms - args.latency_ms:5.1f} ms per line; "
        f"backend calls {run.attempts} ({run.attempts - run.lines} extra, {run.faults} failed)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--failure-rate", type=float, default=0.10)
    args = parser.parse_args()
    report("steady backend", measure(args, 0.0), args)
    report(f"{args.failure_rate:.0%} transient 503s", measure(args, args.failure_rate), args)


if __name__ == "__main__":
    main()
