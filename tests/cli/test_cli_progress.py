"""Progress when stderr is not a terminal (nohup, cron, CI): `jobs submit --wait` and `run` as
real subprocesses with stderr to a pipe print plain progress lines, never a live bar."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from conftest import COCO_IMAGES, MODELS, REPO, LiveServer, coco_image, coco_names
from local_http import RouteHandler, serve_routes

Serve = Callable[..., LiveServer]
LINES = 6
STEP_S = 0.3  # each image takes this long to fetch, so the job advances a line at a time


def cli(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHVISION_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    env["BATCHVISION_PROGRESS_EVERY_S"] = "0"  # a line at every step, not every 5 s
    command = [sys.executable, "-m", "batchvision.cli", *args]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def _slow_photo(handler: RouteHandler) -> None:
    time.sleep(STEP_S)
    handler.send(200, coco_image(), Content_Type="image/jpeg")


def _counts(stderr: str, unit: str) -> list[tuple[int, int]]:
    return [
        (int(done), int(total))
        for done, total in re.findall(rf"^\w+: (\d+)/(\d+) {unit} \(", stderr, re.MULTILINE)
    ]


def test_jobs_submit_wait_prints_plain_lines_as_the_job_advances(
    serve: Serve, tmp_path: Path
) -> None:
    live = serve(job_chunk_lines=1, job_output_lines=1, url_allow_hosts=["127.0.0.1"])
    with serve_routes({"/photo.jpg": _slow_photo}) as base:
        batch = tmp_path / "slow.jsonl"
        url = f"{base}/photo.jpg"
        lines = [{"id": f"u{i}", "skill": "detect", "image_url": url} for i in range(LINES)]
        batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
        done = cli("jobs", "submit", str(batch), "--wait", "--poll-s", "0.1", "--url", live.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1] == "completed"
    assert "\r" not in done.stderr and "\x1b" not in done.stderr  # no live bar in a log
    assert re.search(r"^upload slow\.jsonl: [\d.]+/[\d.]+ KiB \(100%\)", done.stderr, re.M)
    counts = _counts(done.stderr, "lines")
    assert counts[-1] == (LINES, LINES)
    assert re.search(rf"^completed: {LINES}/{LINES} lines \(100%\)", done.stderr, re.M)
    assert any(0 < seen < LINES for seen, _ in counts), done.stderr  # lines along the way
    assert [seen for seen, _ in counts] == sorted(seen for seen, _ in counts)


def test_run_prints_plain_lines_per_batch(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in coco_names(3):
        shutil.copy(COCO_IMAGES / name, folder / name)
    out = tmp_path / "out.jsonl"
    args = ("--skill", "detect", "--out", str(out), "--batch", "1", "--model-dir", str(MODELS))
    done = cli("run", str(folder), *args)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    assert _counts(done.stderr, "images") == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert re.search(r"^images: 3/3 images \(100%\), [\d.]+ images/s, ", done.stderr, re.M)
    assert len(out.read_text().splitlines()) == 3
