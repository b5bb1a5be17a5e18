"""`batchvision run FOLDER`: scan, formats, failures, and a real SIGKILL followed by --resume."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from batchvision.cli.main import app
from batchvision.cli.run import _chunks
from batchvision.cli.run_formats import RunInfo, to_megadetector
from conftest import COCO_IMAGES, EVALDATA, MODELS, REPO

runner = CliRunner()

# Mixed case, nested folders, real PNG/TIFF files and a corrupt JPEG; the .txt/.bak are ignored.
LAYOUT = [
    "cam1/IMG_0001.JPG",
    "cam1/IMG_0002.jpeg",
    "cam1/night/IMG_0003.PNG",
    "cam1/night/IMG_0004.jpg",
    "cam2/a.jpg",
    "cam2/b.Tif",
    "cam2/c.tiff",
    "cam2/d.JPEG",
    "cam2/deep/er/e.jpg",
    "cam2/deep/er/f.webp",
    "cam2/g.jpg",
]
BROKEN = "cam2/broken.jpg"
EXPECTED = sorted([*LAYOUT, BROKEN])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    sources = sorted(COCO_IMAGES.glob("*.jpg"))[: len(LAYOUT)]
    for name, source in zip(LAYOUT, sources, strict=True):
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as image:  # real files of the type the extension says
            image.save(target, format=_pil_format(name))
    (root / BROKEN).write_bytes(b"\xff\xd8\xff\xe0 truncated, not a jpeg")
    (root / "cam1/notes.txt").write_text("not an image")
    (root / "cam1/IMG_0001.jpg.bak").write_bytes(b"backup")
    return root


def _pil_format(name: str) -> str:
    suffix = name.rsplit(".", 1)[1].lower()
    return {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "tif": "TIFF", "tiff": "TIFF"}.get(
        suffix, "WEBP"
    )


def _run(*args: str) -> Any:
    return runner.invoke(app, ["run", *args, "--model-dir", str(MODELS)])


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_has_every_image_once_in_order_with_the_corrupt_one_failed(
    folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    result = _run(str(folder), "--skill", "detect", "--out", str(out), "--format", "jsonl")
    assert result.exit_code == 0, result.output
    records = _jsonl(out)
    assert [r["file"] for r in records] == EXPECTED
    by_file = {r["file"]: r for r in records}
    assert by_file[BROKEN]["status"] == "error"
    assert by_file[BROKEN]["error"]["code"] == "image_decode_failed"
    ok = [r for r in records if r["file"] != BROKEN]
    assert all(r["status"] == "ok" for r in ok)
    assert all(isinstance(r["outputs"]["detect"]["objects"], list) for r in ok)
    assert any(r["outputs"]["detect"]["objects"] for r in ok)
    assert not Path(f"{out}.checkpoint.json").exists()


def test_csv_rows_per_detection_and_one_row_for_failures(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    # A high threshold leaves some images without detections: they still need their row.
    result = _run(
        str(folder), "--skill", "detect", "--out", str(out), "--format", "csv", "--threshold", "0.8"
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert sorted({r["file"] for r in rows}) == EXPECTED
    broken = [r for r in rows if r["file"] == BROKEN]
    assert len(broken) == 1
    assert broken[0]["status"] == "error"
    assert "image_decode_failed" in broken[0]["error"]
    empty = [r for r in rows if r["status"] == "ok" and not r["label"]]
    boxes = [r for r in rows if r["label"]]
    assert empty
    assert boxes
    assert all(float(r["score"]) >= 0.8 for r in boxes)
    for row in boxes:
        x, y, w, h = (float(row[k]) for k in "xywh")
        assert 0 <= x <= 1 and 0 <= y <= 1 and 0 < w <= 1 and 0 < h <= 1
    for row in empty:  # an empty image has exactly one row
        assert sum(r["file"] == row["file"] for r in rows) == 1


def _spawn(folder: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHVISION_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "batchvision.cli", "run", str(folder), "--out", str(out)]
    return subprocess.Popen(
        [*command, "--skill", "detect", "--model-dir", str(MODELS), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill_after_first_checkpoint(process: subprocess.Popen[bytes], checkpoint: Path) -> None:
    deadline = time.monotonic() + 60
    while not checkpoint.exists():
        assert process.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.stderr is not None
    process.stderr.close()


def test_killed_run_resumes_to_the_same_output(folder: Path, tmp_path: Path) -> None:
    args = ("--format", "jsonl", "--checkpoint-every", "2", "--batch", "2")
    reference = tmp_path / "reference.jsonl"
    result = _run(str(folder), "--skill", "detect", "--out", str(reference), *args)
    assert result.exit_code == 0, result.output

    out = tmp_path / "resumed.jsonl"
    checkpoint = Path(f"{out}.checkpoint.json")
    process = _spawn(folder, out, *args)
    _kill_after_first_checkpoint(process, checkpoint)
    assert process.returncode == -signal.SIGKILL
    assert not out.exists()
    saved = json.loads(checkpoint.read_text())["records"]
    assert 2 <= len(saved) < len(EXPECTED)
    assert len(saved) % 2 == 0  # written only at checkpoint boundaries, never half a batch

    changed = _run(
        str(folder), "--skill", "detect", "--out", str(out), *args, "--resume", "--threshold", "0.6"
    )
    assert changed.exit_code == 2
    assert "different params" in changed.output
    assert "Traceback" not in changed.output
    assert checkpoint.exists()

    resumed = _spawn(folder, out, *args, "--resume")
    _, stderr = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, stderr.decode()
    assert f"resuming: {len(saved)} of {len(EXPECTED)}" in stderr.decode()
    assert _jsonl(out) == _jsonl(reference)
    assert not checkpoint.exists()


def test_batches_end_on_every_checkpoint_boundary() -> None:
    # batch 3, checkpoint every 4: a save must land at exactly 4 and 8, so a kill loses < 4.
    sizes = [len(chunk) for chunk in _chunks([str(i) for i in range(10)], 3, 4)]
    assert sizes == [3, 1, 3, 1, 2]
    assert [len(chunk) for chunk in _chunks([str(i) for i in range(5)], 16, 500)] == [5]


def test_a_leftover_checkpoint_is_not_silently_overwritten(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    Path(f"{out}.checkpoint.json").write_text("{}")
    result = _run(str(folder), "--skill", "detect", "--out", str(out))
    assert result.exit_code == 2
    assert "--resume" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--skill", "detect", "--format", "megadetector"], 2, "needs --skill animals"),
        (["--skill", "detect", "--format", "xml"], 2, "unknown format 'xml'"),
        (["--skill", "nope"], 2, "unknown skill 'nope'"),
        (["--skill", "detect", "--params", "[1]"], 2, "must be a JSON object"),
        (["--skill", "detect", "--threshold", "7"], 2, "invalid_parameter"),
    ],
)
def test_refusals_are_clean(
    folder: Path, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    out = tmp_path / "out"
    result = _run(str(folder), *args, "--out", str(out))
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_empty_folder_exits_1_and_missing_model_exits_3(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no photos here")
    empty = runner.invoke(
        app, ["run", str(tmp_path / "empty"), "--skill", "detect", "--out", str(tmp_path / "o")]
    )
    assert empty.exit_code == 1
    assert "no images or videos found" in empty.output
    no_models = str(tmp_path / "empty")
    missing = runner.invoke(
        app,
        [
            "run",
            str(folder),
            "--skill",
            "detect",
            "--out",
            str(tmp_path / "o"),
            "--model-dir",
            no_models,
        ],
    )
    assert missing.exit_code == 3
    assert "batchvision models pull yolox-nano" in missing.output
    assert "Traceback" not in missing.output


# --- megadetector format ----------------------------------------------------------------------


def validate_megadetector(body: dict[str, Any]) -> None:
    """The checks of MegaDetector's own `postprocessing/validate_batch_results.py` (the
    package needs torch, so it is not installed here), plus box and id consistency."""
    assert set(body) <= {
        "info",
        "detection_categories",
        "classification_categories",
        "classification_category_descriptions",
        "images",
    }
    assert float(body["info"]["format_version"]) >= 1.3
    assert body["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    classes = body.get("classification_categories", {})
    assert all(int(k) >= 0 and isinstance(v, str) for k, v in classes.items())
    for image in body["images"]:
        assert isinstance(image["file"], str)
        assert not image["file"].startswith("/")
        if image.get("failure") is not None:
            assert isinstance(image["failure"], str)
            assert image["detections"] is None
            continue
        assert isinstance(image["detections"], list)
        for det in image["detections"]:
            assert det["category"] in body["detection_categories"]
            assert isinstance(det["conf"], float)
            x, y, w, h = det["bbox"]
            assert 0 <= x <= 1 and 0 <= y <= 1 and 0 <= w <= 1 and 0 <= h <= 1
            assert x + w <= 1.0001 and y + h <= 1.0001
            for class_id, conf in det.get("classifications") or []:
                assert class_id in classes
                assert isinstance(conf, float)


SIZE = {"width": 640, "height": 400}


def _annotation(category: str, label: str, taxon: str | None, score: float) -> dict[str, Any]:
    taxonomy = None
    if taxon is not None:
        taxonomy = {"id": taxon, "class": "mammalia", "order": "", "family": "", "genus": ""}
        taxonomy["species"] = ""
    return {
        "category": category,
        "label": label,
        "score": score,
        "box": [64.0, 80.0, 256.0, 240.0],  # MegaDetector bbox in a 640 x 400 image: .1 .2 .3 .4
        "taxonomy": taxonomy,
        "detector_label": label,
    }


def test_megadetector_formatter_maps_categories_and_classes() -> None:
    output = {"model": "md-test", "model_version": "1", "mode": "coco-mapped", "geofence": {}}
    first = [
        _annotation("animal", "deer", "t-deer", 0.9),
        _annotation("human", "human", "t-h", 0.8),
    ]
    second = [
        _annotation("vehicle", "vehicle", None, 0.7),
        _annotation("animal", "deer", "t-deer", 0.6),
    ]
    records = [
        {
            "file": "a/1.jpg",
            "status": "ok",
            "image": SIZE,
            "outputs": {"animals": {**output, "annotations": first}},
        },
        {
            "file": "a/2.jpg",
            "status": "ok",
            "image": SIZE,
            "outputs": {"animals": {**output, "annotations": second}},
        },
        {
            "file": "b.jpg",
            "status": "ok",
            "image": SIZE,
            "outputs": {"animals": {**output, "annotations": []}},
        },
        {
            "file": "c.jpg",
            "status": "error",
            "error": {"code": "image_decode_failed", "message": "x"},
        },
    ]
    body = json.loads(to_megadetector(records, RunInfo("animals", "2024-01-01T00:00:00+00:00")))
    validate_megadetector(body)
    assert body["info"]["detector"] == "md-test"
    assert body["classification_categories"] == {"1": "deer", "2": "human"}
    images = body["images"]
    assert [d["category"] for d in images[0]["detections"]] == ["1", "2"]
    assert [d["category"] for d in images[1]["detections"]] == ["3", "1"]
    assert images[1]["detections"][1]["classifications"] == [["1", 0.6]]
    assert "classifications" not in images[1]["detections"][0]
    assert images[0]["detections"][0]["bbox"] == [0.1, 0.2, 0.3, 0.4]  # from the pixel box
    assert images[2]["detections"] == []
    assert images[3]["failure"].startswith("image_decode_failed")


def test_megadetector_output_from_a_real_animals_run(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "md.json"
    result = _run(str(folder), "--skill", "animals", "--out", str(out))
    assert result.exit_code == 0, result.output
    body = json.loads(out.read_text())
    validate_megadetector(body)
    assert [image["file"] for image in body["images"]] == EXPECTED
    failed = [image["file"] for image in body["images"] if "failure" in image]
    assert failed == [BROKEN]
    assert any(image.get("detections") for image in body["images"])


def test_caption_over_a_folder_asks_the_backend_once_per_image(
    tmp_path: Path, vlm_standin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlm_standin import square_image

    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = {"a.jpg": (120, 90), "b.jpg": (90, 120), "c.jpg": (64, 64)}
    for name, (width, height) in sizes.items():
        (photos / name).write_bytes(square_image(width, height, (5, 5, 30, 30)))
    monkeypatch.setenv("BATCHVISION_VLM_URL", vlm_standin.url)
    out = tmp_path / "captions.jsonl"
    result = _run(
        str(photos), "--skill", "caption", "--out", str(out), "--params", '{"length": "short"}'
    )
    assert result.exit_code == 0, result.output
    records = _jsonl(out)
    assert [r["file"] for r in records] == sorted(sizes)
    assert len(vlm_standin.requests) == len(sizes)
    seen = [request["images"][0] for request in vlm_standin.requests]
    for record in records:
        caption = record["outputs"]["caption"]["caption"]
        assert "one short sentence" in caption  # the length reached the prompt
        described = caption.split(" mean ")[0]  # what the stand-in saw: "<w>x<h>"
        assert sum(1 for s in seen if s.startswith(described + " mean")) == 1, (caption, seen)
        seen_w, seen_h = (int(v) for v in described.split("x"))
        width, height = sizes[record["file"]]
        assert seen_w / seen_h == pytest.approx(width / height, rel=0.15), (record, seen)


VIDEOS = EVALDATA / "video"


def test_videos_in_the_folder_become_megadetector_frame_records_and_a_rollup(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "trap"
    (folder / "cam3").mkdir(parents=True)
    (folder / "cam3" / "car.mp4").write_bytes((VIDEOS / "intel_car-detection.mp4").read_bytes())
    (folder / "cam3" / "broken.mp4").write_bytes(b"not a video at all")
    source = sorted(COCO_IMAGES.glob("*.jpg"))[0]
    (folder / "photo.jpg").write_bytes(source.read_bytes())
    out = tmp_path / "md.json"
    args = [str(folder), "--skill", "detect", "--out", str(out), "--format", "jsonl"]
    result = _run(*args, "--fps", "0.5", "--max-frames", "6")
    assert result.exit_code == 0, result.output
    records = _jsonl(out)
    names = [r["file"] for r in records]
    assert names[0] == "photo.jpg"
    frames = [n for n in names if n.startswith("cam3/car.mp4/")]
    assert len(frames) == 6
    assert all(re.fullmatch(r"cam3/car\.mp4/frame\d{6}\.jpg", n) for n in frames)
    numbers = [int(n[-10:-4]) for n in frames]
    assert numbers == sorted(numbers) and numbers[1] - numbers[0] == pytest.approx(25, abs=1)
    by_name = {r["file"]: r for r in records}
    assert by_name["cam3/broken.mp4"]["status"] == "error"
    assert by_name["cam3/broken.mp4"]["error"]["code"] == "video_decode_failed"
    rollup = json.loads((tmp_path / "md.json.videos.json").read_text())
    assert set(rollup) == {"cam3/broken.mp4", "cam3/car.mp4"}
    cars = rollup["cam3/car.mp4"]["summary"]["skills"]["detect"]["labels"]["car"]
    assert cars["frames"] >= 1 and cars["first_seen_s"] <= cars["last_seen_s"]
    assert rollup["cam3/broken.mp4"]["error"]["code"] == "video_decode_failed"


def test_megadetector_output_names_video_frames_as_its_video_tool_does(tmp_path: Path) -> None:
    folder = tmp_path / "trap"
    folder.mkdir()
    clip = VIDEOS / "zamba_chimp.mp4"
    (folder / clip.name).write_bytes(clip.read_bytes())
    out = tmp_path / "md.json"
    result = _run(str(folder), "--skill", "animals", "--out", str(out), "--max-frames", "3")
    assert result.exit_code == 0, result.output
    body = json.loads(out.read_text())
    files = [image["file"] for image in body["images"]]
    assert files == [f"zamba_chimp.mp4/frame{n:06d}.jpg" for n in (0, 30, 60)]
    assert all("detections" in image for image in body["images"])
