"""One exit status per problem, whichever command meets it (cli/exits.py, README "Command line")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from batchvision.cli.exits import EXIT_STATUS, MEANING, ExitStatus, codes_of
from batchvision.cli.main import app
from batchvision.core.errors import ErrorCode
from conftest import COCO_IMAGES, MODELS, REPO

PHOTO = COCO_IMAGES / "000000000139.jpg"
runner = CliRunner()


def _batchvision(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHVISION_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "batchvision.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(PHOTO.read_bytes())
    return folder


def test_analyze_and_run_exit_alike_for_an_unknown_skill(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    analyzed = _batchvision("analyze", str(PHOTO), "--skill", "nope", "--model-dir", str(MODELS))
    ran = _batchvision(
        "run", str(photos), "--skill", "nope", "--out", str(out), "--model-dir", str(MODELS)
    )
    assert analyzed.returncode == ran.returncode == 2
    for done in (analyzed, ran):
        assert "error: unknown_skill: unknown skill 'nope'" in done.stderr.splitlines()[-1]
        assert "Traceback" not in done.stderr
        assert done.stdout == ""
    assert not out.exists()


def test_a_missing_model_exits_3_from_analyze_and_run(photos: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-models"
    empty.mkdir()
    analyzed = runner.invoke(app, ["analyze", str(PHOTO), "--model-dir", str(empty)])
    ran = runner.invoke(
        app,
        ["run", str(photos), "--skill", "detect", "--out", str(tmp_path / "o.jsonl"),
         "--model-dir", str(empty)],
    )  # fmt: skip
    for result in (analyzed, ran):
        assert result.exit_code == 3, result.output
        assert result.stderr.startswith("error: model_unavailable: model 'yolox-nano'")
        assert "batchvision models pull yolox-nano" in result.stderr


def test_an_unwritable_output_exits_4(photos: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "out.jsonl"
    result = runner.invoke(
        app, ["run", str(photos), "--skill", "metadata", "--out", str(out), "--format", "jsonl"]
    )
    assert result.exit_code == 4, result.output
    assert result.stderr.startswith("error: ")
    assert str(blocker) in result.stderr
    assert "Traceback" not in result.output


def test_every_error_code_has_an_exit_status() -> None:
    assert set(EXIT_STATUS) == set(ErrorCode)
    assert EXIT_STATUS[ErrorCode.UNKNOWN_SKILL] == ExitStatus.USAGE == 2
    assert EXIT_STATUS[ErrorCode.MODEL_UNAVAILABLE] == ExitStatus.MODEL_UNAVAILABLE == 3
    assert EXIT_STATUS[ErrorCode.FETCH_FAILED] == ExitStatus.IO == 4


def test_help_lists_every_status_and_its_codes() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "Exit status: 0 success" in text
    for status in ExitStatus:
        assert f"{status.value} {MEANING[status]}" in text
        for code in codes_of(status):
            assert code in text


def test_readme_states_the_same_table() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Command line", 1)[1].split("\n### ", 1)[0]
    rows = {
        int(match.group(1)): set(re.findall(r"`(\w+)`", match.group(2)))
        for match in re.finditer(r"^\| (\d) \|[^|]*\|([^|]*)\|$", section, re.MULTILINE)
    }
    assert set(rows) == {0, *(status.value for status in ExitStatus)}
    for status in ExitStatus:
        if status is not ExitStatus.FAILED:
            assert rows[status.value] == set(codes_of(status)), status
