"""Tests for `pull_model`: mirror copies and downloads, verified and installed atomically.

The only network used is a local HTTP server on 127.0.0.1; an autouse guard stops httpx from
sending a request anywhere else.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchvision.core.settings import Settings
from batchvision.models import pull
from batchvision.models.cards import ModelCard
from batchvision.models.files import sha256_of
from batchvision.models.pull import PullError, pull_model
from batchvision.models.registry import ModelRegistry
from local_http import Route, RouteHandler, serve_routes

SHARED_MODELS = Path(__file__).resolve().parents[2].parent / "shared" / "models"
YOLOX_FILE = "yolox_nano/yolox_nano.onnx"


def _yolox_bytes() -> bytes:
    return (SHARED_MODELS / YOLOX_FILE).read_bytes()


def _corrupt(data: bytes) -> bytes:
    """Same length, one byte different: only the sha256 can tell."""
    return data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]


def _send_half(h: RouteHandler, body: bytes) -> None:
    h.send_response(200)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body[: len(body) // 2])
    h.wfile.flush()
    h.close_connection = True  # hang up mid-body


def _routes(body: bytes) -> dict[str, Route]:
    return {
        "/yolox_nano.onnx": lambda h: h.send(200, body),
        "/corrupt.onnx": lambda h: h.send(200, _corrupt(body)),
        "/too-big.onnx": lambda h: h.send(200, body + b"\0" * 4096),
        "/redirect": lambda h: h.redirect("/yolox_nano.onnx"),
        "/truncated.onnx": lambda h: _send_half(h, body),
    }


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with serve_routes(_routes(_yolox_bytes())) as url:
        yield url


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("BATCHVISION_") or name.upper().endswith("_PROXY"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    original = httpx.Client.send

    def guarded(self: httpx.Client, request: httpx.Request, **kw: Any) -> Any:
        if request.url.host != "127.0.0.1":
            raise AssertionError(f"test tried to reach {request.url}")
        return original(self, request, **kw)

    monkeypatch.setattr(httpx.Client, "send", guarded)


@pytest.fixture
def card() -> ModelCard:
    return ModelRegistry(Settings(model_dirs=[])).card("yolox-nano")


def _settings(model_dir: Path, mirror: Path | None = None) -> Settings:
    return Settings(model_dirs=[model_dir], model_mirror=mirror)


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def _assert_installed(settings: Settings, card: ModelCard, path: Path) -> None:
    assert path == settings.model_dirs[0] / card.file
    assert sha256_of(path) == card.sha256
    status = ModelRegistry(settings).status(card)
    assert status.state == "installed"
    assert status.path == path


def test_mirror_copy_installs_and_second_pull_is_a_noop(tmp_path: Path, card: ModelCard) -> None:
    settings = _settings(tmp_path / "models", mirror=SHARED_MODELS)
    path = pull_model(card, settings)
    _assert_installed(settings, card, path)
    assert _files(tmp_path) == [path]
    mtime = path.stat().st_mtime_ns

    assert pull_model(card, settings) == path
    assert path.stat().st_mtime_ns == mtime
    # Nothing is read from the source either: a mirror that is gone does not matter.
    assert pull_model(card, _settings(tmp_path / "models", tmp_path / "gone")) == path
    assert path.stat().st_mtime_ns == mtime


def test_download_installs_verified_file(
    tmp_path: Path, card: ModelCard, base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(tmp_path)
    remote = card.model_copy(update={"url": f"{base}/yolox_nano.onnx"})
    path = pull_model(remote, settings, progress=True)
    _assert_installed(settings, remote, path)
    assert _files(tmp_path) == [path]
    assert "downloading yolox-nano" in capsys.readouterr().err


def test_download_follows_redirects(tmp_path: Path, card: ModelCard, base: str) -> None:
    settings = _settings(tmp_path)
    path = pull_model(card.model_copy(update={"url": f"{base}/redirect"}), settings)
    _assert_installed(settings, card, path)


def test_sha256_mismatch_leaves_no_file(tmp_path: Path, card: ModelCard, base: str) -> None:
    remote = card.model_copy(update={"url": f"{base}/corrupt.onnx"})
    with pytest.raises(PullError, match="sha256 mismatch") as info:
        pull_model(remote, _settings(tmp_path))
    assert "yolox-nano" in str(info.value)
    assert f"expected {card.sha256}" in str(info.value)
    assert _files(tmp_path) == []


def test_mismatch_keeps_existing_destination(tmp_path: Path, card: ModelCard, base: str) -> None:
    dest = tmp_path / card.file
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"old")
    remote = card.model_copy(update={"url": f"{base}/corrupt.onnx"})
    with pytest.raises(PullError, match="sha256"):
        pull_model(remote, _settings(tmp_path))
    assert dest.read_bytes() == b"old"
    assert _files(tmp_path) == [dest]


def test_wrong_existing_file_is_replaced(tmp_path: Path, card: ModelCard, base: str) -> None:
    dest = tmp_path / card.file
    dest.parent.mkdir(parents=True)
    dest.write_bytes(_corrupt(_yolox_bytes()))
    settings = _settings(tmp_path)
    assert ModelRegistry(settings).status(card).state == "checksum_mismatch"
    path = pull_model(card.model_copy(update={"url": f"{base}/yolox_nano.onnx"}), settings)
    _assert_installed(settings, card, path)
    assert _files(tmp_path) == [path]


def test_connection_closed_mid_body_leaves_no_file(
    tmp_path: Path, card: ModelCard, base: str
) -> None:
    remote = card.model_copy(update={"url": f"{base}/truncated.onnx"})
    with pytest.raises(PullError, match="cannot download model 'yolox-nano'"):
        pull_model(remote, _settings(tmp_path), progress=True)
    assert _files(tmp_path) == []


def test_oversized_download_is_cut_off(tmp_path: Path, card: ModelCard, base: str) -> None:
    remote = card.model_copy(update={"url": f"{base}/too-big.onnx"})
    with pytest.raises(PullError, match="more than the expected"):
        pull_model(remote, _settings(tmp_path))
    assert _files(tmp_path) == []


def test_http_404(tmp_path: Path, card: ModelCard, base: str) -> None:
    remote = card.model_copy(update={"url": f"{base}/nothing-here.onnx"})
    with pytest.raises(PullError, match="HTTP 404") as info:
        pull_model(remote, _settings(tmp_path))
    assert f"{base}/nothing-here.onnx" in str(info.value)
    assert info.value.__cause__ is None
    assert _files(tmp_path) == []


def test_connection_refused(tmp_path: Path, card: ModelCard) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        remote = card.model_copy(update={"url": f"http://127.0.0.1:{port}/x.onnx"})
        with pytest.raises(PullError, match="cannot download model 'yolox-nano'"):
            pull_model(remote, _settings(tmp_path))
    assert _files(tmp_path) == []


def test_mirror_missing_file(tmp_path: Path, card: ModelCard) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with pytest.raises(PullError, match="not in the mirror") as info:
        pull_model(card, _settings(tmp_path / "models", mirror))
    assert str(mirror / card.file) in str(info.value)
    assert _files(tmp_path) == []


def test_card_without_url_and_no_mirror(tmp_path: Path, card: ModelCard) -> None:
    with pytest.raises(PullError, match=r"no download URL.*--mirror"):
        pull_model(card.model_copy(update={"url": None}), _settings(tmp_path))
    assert _files(tmp_path) == []


def test_card_without_sha_keeps_any_existing_file(tmp_path: Path, card: ModelCard) -> None:
    dest = tmp_path / card.file
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"whatever")
    unverified = card.model_copy(update={"sha256": None, "size_bytes": None, "url": None})
    assert pull_model(unverified, _settings(tmp_path)) == dest
    assert dest.read_bytes() == b"whatever"


@pytest.mark.parametrize("file", ["../escape.onnx", "/abs/model.onnx", "a/../../b.onnx"])
def test_file_outside_model_dir_is_refused(tmp_path: Path, card: ModelCard, file: str) -> None:
    with pytest.raises(PullError, match="inside the model directory"):
        pull_model(card.model_copy(update={"file": file}), _settings(tmp_path / "m", SHARED_MODELS))
    assert _files(tmp_path) == []


def test_interrupt_removes_temporary_file(
    tmp_path: Path, card: ModelCard, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(blocks: Iterator[bytes], *args: Any) -> Iterator[bytes]:
        yield next(blocks)
        raise KeyboardInterrupt

    monkeypatch.setattr(pull, "_with_progress", interrupted)
    monkeypatch.setattr(pull, "CHUNK_BYTES", 1024)
    with pytest.raises(KeyboardInterrupt):
        pull_model(card, _settings(tmp_path / "models", SHARED_MODELS))
    assert _files(tmp_path) == []
