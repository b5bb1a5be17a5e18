"""The hardening probe's memory attacks, at full size, against a `batchvision serve` subprocess.

    PYTHONPATH=src python bench/bench_memory.py                   # this tree
    PYTHONPATH=/tmp/old/src python bench/bench_memory.py          # another tree, for "before"

Attacks: 32 and 64 one-colour 7900x7900 PNGs (about 200 KB each on the wire, 187 MB of RGB each
decoded) in one multipart request to `detect`; the same 32 (`--count`) to `barcode` and to `ocr`
(full resolution: read in tiles above `tile_side`² pixels) and to `detect` and `barcode` together
(a mixed request); and 64 URL images of 20 MiB each in one small JSON body (`metadata`). For
each it prints the server's RSS before, its peak during the request (VmHWM, reset through
/proc/PID/clear_refs), the time to answer and how many images were answered `ok`. The server
runs with its default settings (auth disabled, URLs from 127.0.0.1 allowed); `--env NAME=VALUE`
adds settings.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import numpy as np
from PIL import Image

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
MiB = 1024 * 1024


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server(data_dir: Path, extra: dict[str, str]) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHVISION_")}
    env.update(
        BATCHVISION_PORT=str(port),
        BATCHVISION_MODEL_DIRS=str(MODELS),
        BATCHVISION_DATA_DIR=str(data_dir),
        BATCHVISION_AUTH="disabled",
        BATCHVISION_URL_ALLOW_HOSTS="127.0.0.1",
        **{f"BATCHVISION_{k.upper()}": v for k, v in extra.items()},
    )
    command = [sys.executable, "-m", "batchvision.cli", "serve"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_ready(url: str) -> None:
    for _ in range(300):
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("server did not start")


def png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def noise_body(nbytes: int) -> bytes:
    """A PNG of about `nbytes` that does not compress (random pixels)."""
    side = int((nbytes / 3) ** 0.5)
    pixels = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


@contextlib.contextmanager
def image_host(body: bytes) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    host = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host.daemon_threads = True
    threading.Thread(target=host.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{host.server_address[1]}"
    finally:
        host.shutdown()


def measure(pid: int, send: Any) -> dict[str, Any]:
    idle = status_mb(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    start = time.perf_counter()
    response = send()
    took = time.perf_counter() - start
    results = response.json().get("results", []) if response.status_code == 200 else []
    return {
        "status": response.status_code,
        "idle_rss_mb": round(idle),
        "peak_growth_mb": round(status_mb(pid, "VmHWM") - idle),
        "seconds": round(took, 1),
        "ok": sum(r["status"] == "ok" for r in results),
        "of": len(results),
    }


def multipart(url: str, image: bytes, count: int, skills: str) -> httpx.Response:
    """`skills`: one skill, or several joined by "+"."""
    files = [("images", (f"i{i}.png", image, "image/png")) for i in range(count)]
    tasks = json.dumps([{"skill": skill} for skill in skills.split("+")])
    return httpx.post(f"{url}/v1/analyze", files=files, data={"tasks": tasks}, timeout=1800)


def url_images(url: str, base: str, count: int) -> httpx.Response:
    images = [{"url": f"{base}/u{i}.png"} for i in range(count)]
    body = {"images": images, "tasks": [{"skill": "metadata"}]}
    return httpx.post(f"{url}/v1/analyze", json=body, timeout=1800)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=7900)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE server setting")
    parser.add_argument("--only", default="", help="run only attacks whose name contains this")
    parser.add_argument("--count", type=int, default=32, help="images of the full-res attacks")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    big = png(args.side)
    count = args.count
    attacks = [
        (f"32 x {args.side}² PNG, detect", lambda u: multipart(u, big, 32, "detect")),
        (f"64 x {args.side}² PNG, detect", lambda u: multipart(u, big, 64, "detect")),
        *(
            (f"{count} x {args.side}² PNG, {s}", lambda u, s=s: multipart(u, big, count, s))
            for s in ("barcode", "ocr", "detect+barcode")
        ),
    ]
    with TemporaryDirectory() as tmp, image_host(noise_body(20 * MiB)) as base:
        attacks.append(("64 URLs x 20 MiB, metadata", lambda u: url_images(u, base, 64)))
        for n, (name, attack) in enumerate(a for a in attacks if args.only in a[0]):
            with server(Path(tmp) / str(n), extra) as (url, pid):
                multipart(url, png(640), 1, "detect")  # warm-up: the model loaded
                print(f"{name}: {json.dumps(measure(pid, lambda a=attack, u=url: a(u)))}")


if __name__ == "__main__":
    main()
