"""`batchvision jobs`: the CLI against a real server over real HTTP (multipart upload, polling,
signed downloads, error reporting)."""

from __future__ import annotations

import base64
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from batchvision.accounts.keys import KeyStore
from batchvision.cli.main import app
from batchvision.core.db import make_engine
from conftest import LiveServer, coco_image
from local_http import RouteHandler, serve_routes

runner = CliRunner()
Serve = Callable[..., LiveServer]
PART_MIB = 0.2


def jobs(url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, ["jobs", *args, "--url", url], env=env)


def write_batch(path: Path, count: int, *, blank_after: int | None = None) -> Path:
    """`count` detect requests on a real photo; a blank line after line `blank_after`."""
    image = base64.b64encode(coco_image()).decode()
    lines = [json.dumps({"id": f"x{i}", "skill": "detect", "image": image}) for i in range(count)]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def job_json(url: str, job_id: str) -> dict[str, Any]:
    result = jobs(url, "status", job_id, "--json")
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def result_lines(directory: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(directory.iterdir())
        for line in path.read_text().splitlines()
    ]


def test_submit_wait_download_status_list_and_cancel(serve: Serve, tmp_path: Path) -> None:
    live = serve(job_chunk_lines=5, job_output_lines=10)
    batch = write_batch(tmp_path / "batch.jsonl", 12)
    submitted = jobs(
        live.url, "submit", str(batch), "--wait", "--part-size", str(PART_MIB), "--poll-s", "0.2"
    )
    assert submitted.exit_code == 0, submitted.output
    parts = math.ceil(batch.stat().st_size / int(PART_MIB * 1024 * 1024))
    assert parts > 1
    assert f"in {parts} parts" in submitted.stderr
    assert "12/12" in submitted.stderr  # the progress bar's last state
    # Not a terminal here: the upload's progress comes as plain lines, in bytes.
    assert re.search(
        r"^upload batch\.jsonl: [\d.]+/[\d.]+ (KiB|MiB) \(100%\)", submitted.stderr, re.M
    )
    job_id, state = submitted.stdout.split()[:2]
    assert state == "completed"

    out = tmp_path / "out"
    downloaded = jobs(live.url, "download", job_id, "-o", str(out))
    assert downloaded.exit_code == 0, downloaded.output
    assert sorted(p.name for p in out.iterdir()) == ["results_0.jsonl", "results_1.jsonl"]
    lines = result_lines(out)
    assert [line["line_index"] for line in lines] == list(range(12))
    assert [line["id"] for line in lines] == [f"x{i}" for i in range(12)]
    assert {line["status"] for line in lines} == {"ok"}
    assert {"person", "tv"} <= {o["label"] for o in lines[0]["result"]["objects"]}

    job = job_json(live.url, job_id)
    assert job["status"] == "completed"
    assert job["progress"] == {"total": 12, "completed": 12, "failed": 0}
    listed = jobs(live.url, "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [j["id"] for j in json.loads(listed.stdout)["jobs"]] == [job_id]

    cancelled = jobs(live.url, "cancel", job_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert job_json(live.url, job_id)["status"] == "completed"


def test_list_all_follows_the_cursor_and_submit_prints_the_id(serve: Serve, tmp_path: Path) -> None:
    live = serve(job_chunk_lines=5, job_output_lines=10)
    batch = write_batch(tmp_path / "one.jsonl", 1)
    ids = []
    for _ in range(3):
        submitted = jobs(live.url, "submit", str(batch))
        assert submitted.exit_code == 0, submitted.output
        ids.append(submitted.stdout.strip())
    assert job_json(live.url, ids[0])["id"] == ids[0]

    one_page = json.loads(jobs(live.url, "list", "--limit", "2", "--json").stdout)
    assert len(one_page["jobs"]) == 2
    assert one_page["has_more"] is True
    every = json.loads(jobs(live.url, "list", "--limit", "2", "--all", "--json").stdout)
    assert sorted(j["id"] for j in every["jobs"]) == sorted(ids)
    assert every["has_more"] is False


def test_unknown_job_is_not_found_on_every_command(serve: Serve, tmp_path: Path) -> None:
    live = serve()
    for args in (["status", "nope"], ["cancel", "nope"], ["download", "nope", "-o", "d"]):
        result = jobs(live.url, *args)
        assert result.exit_code == 1, args
        assert result.stderr.startswith("error: not_found: "), result.stderr
        assert "Traceback" not in result.output


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_unreachable_server_is_one_clear_line_and_exit_4() -> None:
    result = jobs(f"http://127.0.0.1:{_unused_port()}", "list")
    assert result.exit_code == 4  # a network failure (cli/exits.py)
    assert result.stderr.startswith("error: cannot connect to http://127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_api_key_comes_from_the_option_or_the_environment(serve: Serve) -> None:
    live = serve(auth="required")
    missing = jobs(live.url, "list")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: unauthorized: missing API key: send ")
    assert "(the CLI: --api-key or BATCHVISION_API_KEY)" in missing.stderr
    wrong = jobs(live.url, "list", "--api-key", "bv_wrong_key")
    assert wrong.exit_code == 1
    assert "unauthorized" in wrong.stderr

    secret = KeyStore(make_engine(live.settings)).create("cli-user").secret
    with_option = jobs(live.url, "list", "--json", "--api-key", secret)
    assert with_option.exit_code == 0, with_option.output
    assert json.loads(with_option.stdout) == {"jobs": [], "has_more": False}
    env = {"BATCHVISION_URL": live.url, "BATCHVISION_API_KEY": secret}
    from_env = runner.invoke(app, ["jobs", "list", "--json"], env=env)
    assert from_env.exit_code == 0, from_env.output


def test_failed_batch_exits_1_and_shows_the_validation_error(serve: Serve, tmp_path: Path) -> None:
    live = serve(job_chunk_lines=5, job_output_lines=10)
    batch = write_batch(tmp_path / "blank.jsonl", 2, blank_after=1)
    submitted = jobs(live.url, "submit", str(batch), "--wait", "--poll-s", "0.2", "--json")
    assert submitted.exit_code == 1, submitted.output
    final = json.loads(submitted.stdout)
    assert final["status"] == "failed"
    assert final["error"]["code"] == "validation_error"

    shown = jobs(live.url, "status", final["id"])
    assert shown.exit_code == 0, shown.output
    assert "error: validation_error: line 2" in shown.stdout


def test_refused_options_fail_cleanly_and_free_the_uploaded_parts(
    serve: Serve, tmp_path: Path
) -> None:
    live = serve()
    batch = write_batch(tmp_path / "batch.jsonl", 2)
    refused = jobs(live.url, "submit", str(batch), "--part-size", "0.2", "--retention-days", "999")
    assert refused.exit_code == 2  # the server's invalid_parameter: a usage error
    assert refused.stderr.splitlines()[-1].startswith("error: invalid_parameter: retention_days")
    assert refused.stdout == ""
    stored = live.settings.data_dir / "blobs" / "uploads"
    assert [p for p in stored.rglob("*") if p.is_file()] == []
    assert json.loads(jobs(live.url, "list", "--json").stdout)["jobs"] == []


@pytest.fixture
def stalled_image() -> Iterator[str]:
    """An image URL whose server holds the response until the test ends, so a job that
    fetches it stays running for as long as the test needs."""
    release = threading.Event()

    def hold(handler: RouteHandler) -> None:
        release.wait(30)
        handler.send(200, coco_image(), Content_Type="image/jpeg")

    with serve_routes({"/photo.jpg": hold}) as base:
        yield f"{base}/photo.jpg"
        release.set()


def test_download_refuses_a_running_job_and_cancel_ends_it(
    serve: Serve, tmp_path: Path, stalled_image: str
) -> None:
    live = serve(url_allow_hosts=["127.0.0.1"])
    batch = tmp_path / "url.jsonl"
    batch.write_text(json.dumps({"id": "u", "skill": "detect", "image_url": stalled_image}) + "\n")
    job_id = jobs(live.url, "submit", str(batch)).stdout.strip()

    refused = jobs(live.url, "download", job_id, "-o", str(tmp_path / "out"))
    assert refused.exit_code == 1
    assert f"error: job {job_id} is still " in refused.stderr
    assert not (tmp_path / "out").exists()

    assert jobs(live.url, "cancel", job_id).exit_code == 0
    deadline = time.monotonic() + 15
    while (state := job_json(live.url, job_id)["status"]) not in ("cancelled", "completed"):
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert state == "cancelled"
