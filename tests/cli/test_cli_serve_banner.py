"""`batchvision serve`'s start-up banner and `--first-key`, with the real server in a subprocess:
what it prints is what the server then does (the printed key works; the listed models run)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from batchvision import __version__
from batchvision.cli.banner import StartFacts, banner, vlm_state
from batchvision.cli.main import app
from conftest import MODELS, free_port, make_settings
from local_http import RouteHandler, serve_routes


def serve_until_ready(data_dir: Path, port: int, *args: str) -> tuple[subprocess.Popen[str], str]:
    """Start `serve`; return it, running, with what it printed before it was ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHVISION_")}
    env.update(
        BATCHVISION_PORT=str(port),
        BATCHVISION_MODEL_DIRS=str(MODELS),
        BATCHVISION_DATA_DIR=str(data_dir),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchvision.cli", "serve", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    printed = []
    deadline = time.monotonic() + 180
    for line in proc.stderr:  # uvicorn says so once it accepts connections
        printed.append(line)
        if "Uvicorn running" in line or "Application startup complete" in line:
            break
        assert time.monotonic() < deadline, "".join(printed)
    return proc, "".join(printed)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def test_first_key_is_created_once_printed_and_works(tmp_path: Path) -> None:
    port, data_dir = free_port(), tmp_path / "data"
    proc, printed = serve_until_ready(data_dir, port, "--first-key")
    try:
        assert f"batchvision {__version__}" in printed
        assert f"listening   http://127.0.0.1:{port}" in printed
        assert f"data dir    {data_dir.resolve()}" in printed
        assert f"database    sqlite:///{(data_dir / 'batchvision.db').resolve()}" in printed
        models_line = next(line for line in printed.splitlines() if "  models " in line)
        assert "yolox-nano" in models_line and "tesseract" in models_line
        assert "VLM backend none" in printed
        secret = next(word for word in printed.split() if word.startswith("bv_"))
        assert "active key(s)" in printed and "'admin' (admin), shown once" in printed
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            usage = client.get("/v1/usage", headers={"Authorization": f"Bearer {secret}"})
            assert usage.status_code == 200, usage.text
            assert client.get("/v1/usage").status_code == 401
    finally:
        stop(proc)
    proc, again = serve_until_ready(data_dir, port, "--first-key")
    stop(proc)
    assert "bv_" not in again and "required; 1 active key(s)" in again  # never a second one


def test_without_keys_the_banner_gives_the_exact_command(tmp_path: Path) -> None:
    port, data_dir = free_port(), tmp_path / "data"
    proc, printed = serve_until_ready(data_dir, port)
    stop(proc)
    command = f"batchvision keys create --name admin --admin --data-dir {data_dir}"
    assert "0 active key(s)" in printed and command in printed
    created = CliRunner().invoke(
        app, ["keys", "create", "--name", "admin", "--admin", "--data-dir", str(data_dir)]
    )
    assert created.exit_code == 0, created.output  # the command, as printed, works


def test_the_banner_hides_a_database_password_and_names_missing_models(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, database_url="postgresql+psycopg://batch:s3cret@db.internal:5432/bv"
    )
    facts = StartFacts(settings, installed=["yolox-nano"], missing=["speciesnet"], vlm_state="x")
    text = "\n".join(banner(facts))
    assert "s3cret" not in text and "postgresql+psycopg://batch:***@db.internal:5432/bv" in text
    assert "missing     speciesnet" in text


def test_the_vlm_line_says_whether_the_backend_answers(tmp_path: Path) -> None:
    def models(h: RouteHandler) -> None:
        h.send(200, b"{}", Content_Type="application/json")

    with serve_routes({"/v1": models}) as base:
        up = vlm_state(make_settings(tmp_path, vlm_url=f"{base}/v1"))
    down = vlm_state(make_settings(tmp_path, vlm_url=f"http://127.0.0.1:{free_port()}/v1"))
    assert up.endswith("reachable") and "unreachable" not in up
    assert "unreachable: ConnectError" in down


def test_version_option() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"batchvision {__version__}"
