"""`batchvision analyze` (no server) and `batchvision serve` as a real subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from batchvision.cli.main import app
from conftest import COCO_IMAGES, MODELS, spawn_server

runner = CliRunner()


def test_analyze_prints_detections_and_per_file_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    photo = COCO_IMAGES / "000000000139.jpg"
    result = runner.invoke(
        app,
        [
            "analyze",
            str(photo),
            str(broken),
            "--skill",
            "detect",
            "--skill",
            "metadata",
            "--model-dir",
            str(MODELS),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    good, bad = body["results"]
    labels = {o["label"] for o in good["outputs"]["detect"]["objects"]}
    assert {"person", "tv"} <= labels
    assert good["outputs"]["metadata"]["width"] == 640
    assert bad["status"] == "error"
    assert bad["errors"][0]["code"] == "image_decode_failed"


def test_analyze_params_apply_to_the_skill() -> None:
    photo = COCO_IMAGES / "000000000139.jpg"
    result = runner.invoke(
        app,
        [
            "analyze",
            str(photo),
            "--params",
            '{"classes": ["tv"], "threshold": 0.5}',
            "--model-dir",
            str(MODELS),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    objects = json.loads(result.stdout)["results"][0]["outputs"]["detect"]["objects"]
    assert objects
    assert {o["label"] for o in objects} == {"tv"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--skill", "nope"], "unknown_skill"),
        (["--params", "{not json"], "not valid JSON"),
        (["--params", '{"threshold": 7}'], "invalid_parameter"),
    ],
)
def test_analyze_refuses_bad_requests_cleanly(args: list[str], message: str) -> None:
    photo = COCO_IMAGES / "000000000139.jpg"
    result = runner.invoke(app, ["analyze", str(photo), *args, "--model-dir", str(MODELS)])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_analyze_with_missing_model_names_the_pull_command(tmp_path: Path) -> None:
    photo = COCO_IMAGES / "000000000139.jpg"
    result = runner.invoke(app, ["analyze", str(photo), "--model-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "batchvision models pull yolox-nano" in result.output


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (kernel hex form) listening on `port`, from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_serve_subprocess_binds_loopback_by_default_and_answers(tmp_path: Path) -> None:
    server = spawn_server(tmp_path)
    try:
        server.wait_ready(timeout_s=30)
        port = server.port
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        assert health.json() == {"status": "ok"}
        photo = (COCO_IMAGES / "000000000139.jpg").read_bytes()
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/analyze",
            files=[("images", ("a.jpg", photo, "image/jpeg"))],
            timeout=60,
        )
        assert reply.status_code == 200
        assert reply.json()["results"][0]["outputs"]["detect"]["objects"]
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only, no IPv6 either
    finally:
        server.stop()
