"""Pictures and summaries: `--draw DIR` on analyze and run, analyze's table and `--json`, and
the line a run ends with."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from batchvision.cli.draw import CATEGORY_COLOURS, colour_for
from batchvision.cli.main import app
from conftest import COCO_IMAGES, EVALDATA, MODELS, REPO

runner = CliRunner()
PHOTO = COCO_IMAGES / "000000000139.jpg"
CAMERA_TRAPS = EVALDATA / "camera_traps" / "images"
CYRILLIC = sorted((EVALDATA / "ocr" / "cyrillic_lines").glob("*.png"))[0]


def _analyze(*args: str) -> Any:
    return runner.invoke(app, ["analyze", *args, "--model-dir", str(MODELS)])


def _pixels(path: Path) -> np.ndarray[Any, Any]:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _left_edge(box: list[float], height: int) -> tuple[int, slice]:
    """Column just inside a box's left side, over the middle half of its height (away from
    the label tag on top)."""
    x1, y1, _, y2 = box
    top, bottom = int(y1 + (y2 - y1) / 4), int(y1 + 3 * (y2 - y1) / 4)
    return int(x1) + 1, slice(max(top, 0), min(bottom, height))


def test_analyze_draw_outlines_each_box_in_its_label_colour(tmp_path: Path) -> None:
    source = tmp_path / "room.png"  # lossless, so every pixel not drawn on stays exact
    with Image.open(PHOTO) as image:
        image.save(source)
    drawn_dir = tmp_path / "drawn"
    result = _analyze(str(source), "--json", "--draw", str(drawn_dir))
    assert result.exit_code == 0, result.output
    objects = json.loads(result.stdout)["results"][0]["outputs"]["detect"]["objects"]
    assert len(objects) >= 3
    before, after = _pixels(source), _pixels(drawn_dir / "room.png")
    assert after.shape == before.shape
    widest = max(objects, key=lambda o: o["box"][2] - o["box"][0])
    column, rows = _left_edge(widest["box"], before.shape[0])
    edge = after[rows, column]
    coloured = np.all(edge == colour_for(widest["label"]), axis=1).mean()
    assert coloured > 0.8, (widest, coloured)
    assert np.abs(edge - before[rows, column]).sum(axis=1).mean() > 30
    changed = np.any(after != before, axis=2).mean()
    assert 0.002 < changed < 0.25  # lines and tags, not a repainted photo


def test_analyze_prints_a_table_by_default_and_json_keeps_utf8(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    table = _analyze(str(PHOTO), str(broken), "--skill", "detect", "--skill", "metadata")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["FILE", "SKILL", "RESULT"]
    detect_row = next(line for line in lines if " detect " in line)
    assert str(PHOTO) in detect_row and "objects:" in detect_row and "tv" in detect_row
    assert any(" metadata " in line and "640x426 JPEG" in line for line in lines)
    assert any(str(broken) in line and "image_decode_failed" in line for line in lines)
    with pytest.raises(ValueError):
        json.loads(table.stdout)

    text = _analyze(str(CYRILLIC), "--skill", "ocr", "--params", '{"languages": ["ru"]}', "--json")
    assert text.exit_code == 0, text.output
    assert "\\u04" not in text.stdout  # no escapes: the Cyrillic is there as itself
    read = json.loads(text.stdout)["results"][0]["outputs"]["ocr"]["text"]
    assert any("а" <= char <= "я" for char in read), read
    assert read.splitlines()[0] in text.stdout


def test_ocr_and_barcode_drawings_outline_the_regions_they_read(tmp_path: Path) -> None:
    qr = EVALDATA / "barcodes" / "images" / "qrcode-1_1.webp"
    drawn_dir = tmp_path / "drawn"
    result = _analyze(
        str(CYRILLIC), str(qr), "--skill", "ocr", "--skill", "barcode",
        "--json", "--draw", str(drawn_dir),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    page, code = json.loads(result.stdout)["results"]
    assert sorted(p.name for p in drawn_dir.iterdir()) == [CYRILLIC.name, "qrcode-1_1.webp.png"]
    line = page["outputs"]["ocr"]["pages"][0]["blocks"][0]["lines"][0]
    x1 = min(p[0] for p in line["polygon"])
    x2, y2 = (max(p[i] for p in line["polygon"]) for i in (0, 1))
    after, before = _pixels(drawn_dir / CYRILLIC.name), _pixels(CYRILLIC)
    bottom = after[min(y2, after.shape[0] - 1), x1 + (x2 - x1) // 4 : x2 - (x2 - x1) // 4]
    assert np.all(bottom == (214, 39, 40), axis=1).mean() > 0.8  # the line's outline
    assert np.any(after != before, axis=2).any()
    corners = code["outputs"]["barcode"]["barcodes"][0]["polygon"]
    (qx, qy), (rx, _) = corners[3], corners[2]  # bottom-left, bottom-right
    qr_after = _pixels(drawn_dir / "qrcode-1_1.webp.png")
    under = qr_after[int(qy) - 1, int(qx) + 5 : int(rx) - 5]
    assert np.all(under == (148, 103, 189), axis=1).mean() > 0.6


def _trap_folder(root: Path) -> Path:
    folder = root / "trap"
    (folder / "night").mkdir(parents=True)
    for name in ("speciesnet_human.jpg", "speciesnet_vehicle.jpg", "speciesnet_blank3.jpg"):
        shutil.copy(CAMERA_TRAPS / name, folder / name)
    shutil.copy(CAMERA_TRAPS / "ena24_2595.jpg", folder / "night" / "ena24_2595.jpg")
    (folder / "night" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return folder


def test_run_ends_with_a_summary_that_matches_its_results_and_draws_each_image(
    tmp_path: Path,
) -> None:
    folder, out, drawn = _trap_folder(tmp_path), tmp_path / "md.json", tmp_path / "drawn"
    result = runner.invoke(
        app,
        ["run", str(folder), "--skill", "animals", "--out", str(out), "--draw", str(drawn),
         "--model-dir", str(MODELS)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    images = json.loads(out.read_text())["images"]
    ok = [image for image in images if "failure" not in image]
    having = {c: sum(any(d["category"] == c for d in i["detections"]) for i in ok) for c in "123"}
    empty = sum(not image["detections"] for image in ok)
    expected = (
        f"5 images: {having['1']} with animals, {having['2']} with people, "
        f"{having['3']} with vehicles, {empty} empty, 1 failed"
    )
    assert result.stdout.strip().splitlines()[-1] == expected
    assert having["2"] >= 1  # the SpeciesNet person photo, so the counts are not all zero
    drawn_names = sorted(p.relative_to(drawn).as_posix() for p in drawn.rglob("*.jpg"))
    assert drawn_names == sorted(i["file"] for i in ok)  # same relative names, not the failed
    person = next(i for i in ok if i["file"] == "speciesnet_human.jpg")["detections"]
    det = next(d for d in person if d["category"] == "2")
    name = "speciesnet_human.jpg"
    before, after = _pixels(folder / name), _pixels(drawn / name)
    height, width = before.shape[:2]
    x, y, w, h = det["bbox"]
    box = [x * width, y * height, (x + w) * width, (y + h) * height]
    column, rows = _left_edge(box, height)
    edge = after[rows, column + 2]  # inside a stroke that is 2+ px wide at this size
    close = np.abs(edge - CATEGORY_COLOURS["human"]).sum(axis=1) < 60  # JPEG keeps it near
    assert close.mean() > 0.7, close.mean()
    assert np.abs(edge - before[rows, column + 2]).sum(axis=1).mean() > 60


def test_two_inputs_with_one_name_get_two_pictures(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(PHOTO, tmp_path / folder / "x.jpg")
    drawn = tmp_path / "drawn"
    files = [str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.jpg")]
    result = _analyze(*files, "--skill", "metadata", "--draw", str(drawn))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in drawn.iterdir()) == ["2-x.jpg", "x.jpg"]
    with Image.open(drawn / "2-x.jpg") as picture:
        assert picture.format == "JPEG" and picture.size == (640, 426)


def test_json_and_table_are_utf8_even_when_the_locale_says_ascii(tmp_path: Path) -> None:
    photo = tmp_path / "фото_лиса.jpg"
    shutil.copy(PHOTO, photo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHVISION_")}
    env.update(PYTHONPATH=str(REPO / "src"), PYTHONIOENCODING="ascii", LC_ALL="C")
    command = [sys.executable, "-m", "batchvision.cli", "analyze", str(photo)]
    outputs = []
    for extra in (["--json"], []):
        done = subprocess.run(
            [*command, "--skill", "metadata", *extra],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        outputs.append(done.stdout.decode("utf-8"))  # raises if it were not UTF-8
    as_json, table = outputs
    assert json.loads(as_json)["results"][0]["filename"] == str(photo)
    assert "фото_лиса.jpg" in as_json and "\\u0444" not in as_json
    assert "фото_лиса.jpg" in table and "640x426 JPEG" in table


def test_points_are_dots_and_a_caption_is_a_banner_along_the_bottom(
    tmp_path: Path, vlm_standin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "room.png"
    with Image.open(PHOTO) as image:
        image.save(source)
    drawn = tmp_path / "drawn"
    pointed = _analyze(
        str(source), "--skill", "point", "--params", '{"object": "person"}',
        "--json", "--draw", str(drawn),
    )  # fmt: skip
    assert pointed.exit_code == 0, pointed.output
    points = json.loads(pointed.stdout)["results"][0]["outputs"]["point"]["points"]
    assert points  # the detector answers "person" locally: one point per person box
    after = _pixels(drawn / "room.png")
    for point in points:
        assert tuple(after[round(point["y"]), round(point["x"])]) == (214, 39, 40)

    monkeypatch.setenv("BATCHVISION_VLM_URL", vlm_standin.url)
    captioned = _analyze(str(source), "--skill", "caption", "--json", "--draw", str(drawn))
    assert captioned.exit_code == 0, captioned.output
    before, after = _pixels(source), _pixels(drawn / "room.png")
    bottom_row = after[-3]
    assert np.mean(np.all(bottom_row == (0, 0, 0), axis=1)) > 0.5  # the black banner
    assert np.array_equal(after[: before.shape[0] // 2], before[: before.shape[0] // 2])
