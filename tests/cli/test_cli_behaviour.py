"""What people expect of a command line (issue 15, part 8): readable --help, settings errors
that name the variable, --log-level a choice, every decodable format scanned and the rest
reported, --format from the --out extension, exit 1 when every item failed, files created with
the umask, and "did you mean" for a mistyped skill or class."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pillow_heif
import pytest
import typer.main
from PIL import Image
from typer.testing import CliRunner

from batchvision.cli.main import app
from batchvision.cli.run_formats import FormatError, format_for
from batchvision.core.errors import did_you_mean
from conftest import COCO_IMAGES, MODELS, LiveServer

runner = CliRunner()
PHOTO = COCO_IMAGES / "000000000139.jpg"


# --- help -------------------------------------------------------------------------------------


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command's path, groups included (typer's own click, so no isinstance)."""
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _long_options(command: Any, path: tuple[str, ...]) -> list[str]:
    for name in path:
        command = command.commands[name]
    return [o for p in command.params for o in [*p.opts, *p.secondary_opts] if o.startswith("--")]


def test_every_help_at_80_columns_names_each_option_whole_and_no_bool_metavar() -> None:
    root = typer.main.get_command(app)
    paths = list(_commands(root))
    assert ("run",) in paths and ("jobs", "submit") in paths
    for path in paths:
        result = CliRunner(env={"COLUMNS": "80"}).invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        text = result.stdout
        assert "<bool>" not in text, path
        assert max(len(line) for line in text.splitlines()) <= 80, path
        for option in _long_options(root, path):
            assert re.search(rf"(^|[\s,/]){re.escape(option)}([\s,=]|$)", text, re.M), (
                path,
                option,
            )


def test_log_level_is_a_choice() -> None:
    refused = runner.invoke(app, ["serve", "--log-level", "verbose"])
    assert refused.exit_code == 2
    assert "'verbose' is not one of 'debug', 'info', 'warning', 'error'" in refused.output
    help_text = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["serve", "--help"]).stdout
    assert "<debug|info|warning|error>" in help_text


# --- settings errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"BATCHVISION_MAX_IMAGE_BYTES": "-1"}, [], "BATCHVISION_MAX_IMAGE_BYTES: Input should be"),
        ({"BATCHVISION_AUTH": "maybe"}, [], "BATCHVISION_AUTH: Input should be 'required'"),
        (
            {"BATCHVISION_JOB_OUTPUT_LINES": "7"},
            [],
            "BATCHVISION_JOB_OUTPUT_LINES must be a multiple of BATCHVISION_JOB_CHUNK_LINES",
        ),
        ({}, ["--port", "70000"], "--port: Input should be less than or equal to 65535"),
    ],
)
def test_a_bad_setting_names_its_variable_or_option(
    env: dict[str, str], args: list[str], message: str
) -> None:
    command = ["serve", *args] if args else ["analyze", str(PHOTO), "--model-dir", str(MODELS)]
    result = runner.invoke(app, command, env=env)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: invalid settings: ")
    assert message in result.stderr
    assert "Traceback" not in result.output


# --- run: scanning and formats ----------------------------------------------------------------

# One real file per format the server decodes, with extensions in several cases.
FORMATS = {
    "a.jpg": "JPEG",
    "b.JPEG": "JPEG",
    "c.png": "PNG",
    "d.bmp": "BMP",
    "e.gif": "GIF",
    "f.TIF": "TIFF",
    "g.webp": "WEBP",
    "h.heic": "HEIF",
    "i.avif": "AVIF",
}
NOT_IMAGES = {"notes.txt": b"field notes", "IMG_1.jpg.bak": b"backup", "README": b"read me"}


@pytest.fixture(scope="module")
def every_format(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pillow_heif.register_heif_opener()
    folder = tmp_path_factory.mktemp("formats")
    (folder / "sub").mkdir()
    with Image.open(PHOTO) as photo:
        small = photo.convert("RGB").resize((160, 107))
    for index, (name, fmt) in enumerate(FORMATS.items()):
        target = folder / ("sub" if index % 2 else "") / name
        small.save(target, format=fmt)
    for name, data in NOT_IMAGES.items():
        (folder / name).write_bytes(data)
    return folder


def _run(folder: Path, *args: str) -> Any:
    return runner.invoke(app, ["run", str(folder), *args, "--model-dir", str(MODELS)])


def test_run_reads_every_decodable_format_and_counts_what_it_skipped(
    every_format: Path, tmp_path: Path
) -> None:
    out = tmp_path / "meta.csv"  # .csv: the format follows the extension
    result = _run(every_format, "--skill", "metadata", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert sorted(Path(r["file"]).name for r in rows) == sorted(FORMATS)
    assert all(r["status"] == "ok" for r in rows), rows
    formats = {Path(r["file"]).name: json.loads(r["output"])["format"] for r in rows}
    assert formats["h.heic"] == "HEIF" and formats["i.avif"] == "AVIF", formats
    assert "skipped 3 files batchvision does not read (" in result.stderr
    for kind in ("1 .txt", "1 .bak", "1 (no extension)"):
        assert kind in result.stderr
    assert result.stdout.strip().splitlines()[-1] == "9 images: 9 read, 0 failed"


def test_a_folder_of_nothing_readable_says_what_it_skipped(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("x")
    result = _run(tmp_path / "in", "--skill", "metadata", "--out", str(tmp_path / "o.jsonl"))
    assert result.exit_code == 1
    assert "no images or videos found" in result.stderr
    assert "skipped 1 file batchvision does not read (1 .txt)" in result.stderr


@pytest.mark.parametrize(
    ("name", "skill", "fmt"),
    [
        ("out.csv", "detect", "csv"),
        ("out.CSV", "ocr", "csv"),
        ("out.jsonl", "animals", "jsonl"),
        ("out.ndjson", "caption", "jsonl"),
        ("out.json", "animals", "megadetector"),
        ("out.json", "detect", "coco"),
        ("results", "animals", "megadetector"),
        ("results.txt", "barcode", "jsonl"),
    ],
)
def test_the_format_follows_the_out_extension(name: str, skill: str, fmt: str) -> None:
    assert format_for(Path(name), skill) == fmt


def test_a_json_out_for_a_skill_without_a_json_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=re.escape("use .jsonl or .csv, or pass --format")):
        format_for(Path("out.json"), "ocr")
    out = tmp_path / "out.json"
    refused = _run(tmp_path, "--skill", "ocr", "--out", str(out))
    assert refused.exit_code == 2
    assert "pass --format" in refused.stderr


def test_detect_into_json_writes_coco_and_an_explicit_format_wins(
    every_format: Path, tmp_path: Path
) -> None:
    coco = tmp_path / "boxes.json"
    result = _run(every_format, "--skill", "detect", "--out", str(coco))
    assert result.exit_code == 0, result.output
    body = json.loads(coco.read_text())
    assert set(body) == {"images", "annotations", "categories"}
    assert len(body["images"]) == len(FORMATS)
    with_boxes = len({a["image_id"] for a in body["annotations"]})
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"{len(FORMATS)} images: {with_boxes} with objects (")
    assert summary.endswith(f", {len(FORMATS) - with_boxes} empty, 0 failed")
    lines = tmp_path / "boxes-as-lines.json"
    explicit = _run(every_format, "--skill", "detect", "--out", str(lines), "--format", "jsonl")
    assert explicit.exit_code == 0, explicit.output
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(records) == len(FORMATS)


# --- exit status when everything failed -------------------------------------------------------


def test_run_exits_1_when_every_image_failed_and_still_writes_the_results(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"not an image at all")
    out = tmp_path / "out.jsonl"
    result = _run(folder, "--skill", "metadata", "--out", str(out))
    assert result.exit_code == 1, result.output
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: every one of the 2 images failed (the first: image_decode_failed: ")
    )
    assert result.stdout.strip() == "2 images: 0 read, 2 failed"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["status"] for r in records] == ["error", "error"]

    (folder / "c.jpg").write_bytes(PHOTO.read_bytes())  # one good image: success again
    again = _run(folder, "--skill", "metadata", "--out", str(tmp_path / "again.jsonl"))
    assert again.exit_code == 0, again.output


def test_analyze_exits_1_when_every_file_failed(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"nope")
    result = runner.invoke(app, ["analyze", str(broken), "--skill", "metadata", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["results"][0]["status"] == "error"  # the output still comes
    assert "error: every one of the 1 files failed" in result.stderr


# --- file modes -------------------------------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o007, 0o660)])
def test_results_and_pictures_are_created_with_the_umask(
    tmp_path: Path, umask: int, mode: int
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(PHOTO.read_bytes())
    out, drawn = tmp_path / "out.jsonl", tmp_path / "drawn"
    previous = os.umask(umask)
    try:
        result = _run(folder, "--skill", "detect", "--out", str(out), "--draw", str(drawn))
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == mode
    assert (drawn / "a.jpg").stat().st_mode & 0o777 == mode


# --- did you mean -----------------------------------------------------------------------------


def test_did_you_mean_names_only_close_known_names() -> None:
    skills = ["animals", "barcode", "detect", "ocr"]
    assert did_you_mean("detetc", skills) == " (did you mean 'detect'?)"
    assert did_you_mean("OCR", skills) == " (did you mean 'ocr'?)"
    assert did_you_mean("segment", skills) == ""
    assert did_you_mean(["persn", "tvv"], ["person", "tv", "car"]) == (
        " (did you mean 'person' or 'tv'?)"
    )


def test_a_mistyped_skill_or_class_gets_a_suggestion_from_the_cli(tmp_path: Path) -> None:
    skill = runner.invoke(app, ["analyze", str(PHOTO), "--skill", "detetc"])
    assert skill.exit_code == 2
    assert "unknown skill 'detetc' (did you mean 'detect'?); available: " in skill.stderr
    classes = runner.invoke(
        app,
        ["analyze", str(PHOTO), "--params", '{"classes": ["persn"]}', "--model-dir", str(MODELS)],
    )
    assert classes.exit_code == 2
    assert "unknown classes ['persn'] for model 'yolox-nano' (did you mean 'person'?)" in (
        classes.stderr
    )


def test_the_server_suggests_the_skill_and_class_too(live_server: LiveServer) -> None:
    photo = [("images", ("a.jpg", PHOTO.read_bytes(), "image/jpeg"))]
    with live_server.client() as client:
        replies = [
            client.post("/v1/analyze", files=photo, data={"tasks": json.dumps(tasks)})
            for tasks in (
                [{"skill": "barcod"}],
                [{"skill": "detect", "params": {"classes": ["dog", "bycicle"]}}],
            )
        ]
    messages = [_message(reply) for reply in replies]
    assert "unknown skill 'barcod' (did you mean 'barcode'?)" in messages[0]
    assert "(did you mean 'bicycle'?)" in messages[1]


def _message(reply: httpx.Response) -> str:
    assert reply.status_code in (400, 422), reply.text
    return json.dumps(reply.json())


def test_pictures_drawn_inside_the_folder_are_not_inputs_of_the_next_run(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(PHOTO.read_bytes())
    drawn = folder / "drawn"
    for attempt in ("first.jsonl", "second.jsonl"):
        out = tmp_path / attempt
        result = _run(folder, "--skill", "metadata", "--out", str(out), "--draw", str(drawn))
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["file"] for line in out.read_text().splitlines()] == ["a.jpg"]
    assert (drawn / "a.jpg").is_file()
