"""The `animals` skill in MegaDetector mode, end to end through the real app over HTTP.

No MegaDetector weights are at hand, so the test writes a YOLOv5-format graph with `onnx.helper`:
input `images` [batch, 3, 640, 640], output [batch, N, 5 + 3] rows of (cx, cy, w, h in input
pixels, objectness, animal/person/vehicle scores), as a MegaDetector v5 export has. Its rows are
constants, so the test knows every box and score; the input still feeds the output (mean x 0), so
ONNX Runtime keeps the graph input and the batch dimension. Its card sits in a temporary model
directory listed before ../shared/models, which holds yolox-nano and the SpeciesNet data.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from batchvision.models.runtime import OnnxModel
from batchvision.taxonomy import SpeciesNetFiles, Taxonomy
from conftest import EVALDATA, MODELS, LiveServer

CARD_NAME = "md-synthetic"
CANVAS = 640
IMAGE_SIZE = (1280, 720)  # letterboxed to 640 x 360 at ratio 0.5, 140 px of padding above
HUMAN = "mammalia;primates;hominidae;homo;sapiens"
HERON = EVALDATA / "camera_traps" / "images" / "md_heron_20241018012713_0.jpg"

# (cx, cy, w, h) on the 640 x 640 canvas, objectness, (animal, person, vehicle) scores.
ROWS = np.array(
    [
        [160, 240, 128, 96, 0.90, 0.80, 0.10, 0.05],  # animal 0.72
        [400, 320, 64, 160, 0.95, 0.05, 0.90, 0.10],  # person 0.855
        [560, 300, 120, 60, 0.60, 0.00, 0.10, 0.70],  # vehicle 0.42
        [300, 400, 50, 50, 0.10, 0.90, 0.00, 0.00],  # animal 0.09: under the 0.2 threshold
    ],
    dtype=np.float32,
)

# The card a user writes for a MegaDetector v5 export; the preprocess table spells out the
# yolov5 family defaults (centred letterbox padded with 114, RGB, pixels / 255).
CARD = f"""
name = "{CARD_NAME}"
task = "detect"
family = "yolov5"
file = "md_synthetic/md_synthetic.onnx"
input_size = [{CANVAS}, {CANVAS}]
labels = ["animal", "person", "vehicle"]

[preprocess]
letterbox = "center"
pad_value = 114
channel_order = "RGB"
scale = {1 / 255!r}
"""


def yolov5_graph(rows: np.ndarray) -> onnx.ModelProto:
    """`output` = mean(images) x 0 + rows, broadcast to [batch, N, 8]."""

    def const(name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))

    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
        const("shape", np.array([-1, 1, 1], np.int64)),
        helper.make_node("Reshape", ["mean", "shape"], ["mean3"]),  # [batch, 1, 1]
        const("zero", np.array(0.0, np.float32)),
        helper.make_node("Mul", ["mean3", "zero"], ["zeros"]),
        const("rows", rows[None]),  # [1, N, 8]
        helper.make_node("Add", ["zeros", "rows"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "yolov5-format",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, CANVAS, CANVAS])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", len(rows), 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by any ONNX Runtime of the last years
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A model directory holding only the synthetic export and its card."""
    models = tmp_path / "user_models"
    (models / "md_synthetic").mkdir(parents=True)
    onnx.save(yolov5_graph(ROWS), str(models / "md_synthetic" / "md_synthetic.onnx"))
    (models / f"{CARD_NAME}.card.toml").write_text(CARD, encoding="utf-8")
    return models


@pytest.fixture
def live(serve: Callable[..., LiveServer], model_dir: Path) -> LiveServer:
    # Both directories: the export from the first, yolox-nano and speciesnet_data from ours.
    return serve(model_dirs=[model_dir, MODELS])


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return SpeciesNetFiles.find(MODELS / "speciesnet_data").taxonomy_index()


def png(size: tuple[int, int]) -> bytes:
    pixels = np.random.default_rng(7).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def analyze(
    client: httpx.Client, images: list[bytes], params: dict[str, Any]
) -> list[dict[str, Any]]:
    body = {
        "images": [{"data": base64.b64encode(image).decode()} for image in images],
        "tasks": [{"skill": "animals", "params": params}],
    }
    response = client.post("/v1/analyze", json=body)
    assert response.status_code == 200, response.text
    outputs = []
    for result in response.json()["results"]:
        assert result["status"] == "ok", result
        outputs.append(result["outputs"]["animals"])
    return outputs


def expected_bbox(row: np.ndarray, size: tuple[int, int]) -> list[float]:
    """A canvas box mapped back through the centred letterbox, normalised [x, y, w, h]."""
    width, height = size
    ratio = min(CANVAS / width, CANVAS / height)
    pad_x = (CANVAS - round(width * ratio)) // 2
    pad_y = (CANVAS - round(height * ratio)) // 2
    cx, cy, w, h = (float(v) for v in row[:4])
    x1 = (cx - w / 2 - pad_x) / ratio
    y1 = (cy - h / 2 - pad_y) / ratio
    return [x1 / width, y1 / height, w / ratio / width, h / ratio / height]


def by_category(annotations: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {a["category"]: a for a in annotations}
    assert len(found) == len(annotations), annotations
    return found


def test_an_installed_megadetector_card_is_the_default(
    live: LiveServer, taxonomy: Taxonomy
) -> None:
    with live.client() as client:
        [out] = analyze(client, [png(IMAGE_SIZE)], {})
    assert out["model"] == CARD_NAME
    assert out["mode"] == "megadetector"
    assert out["model_version"] == f"{CARD_NAME}-speciesnet-taxonomy"
    found = by_category(out["annotations"])
    assert set(found) == {"animal", "human", "vehicle"}  # the 0.09 animal is under threshold
    rows = {"animal": ROWS[0], "human": ROWS[1], "vehicle": ROWS[2]}
    for category, row in rows.items():
        ann = found[category]
        assert ann["score"] == pytest.approx(float(row[4] * row[5:].max()), abs=1e-4)
        assert ann["bbox"] == pytest.approx(expected_bbox(row, IMAGE_SIZE), abs=2e-5)
    # worked by hand for the animal: x (160 - 64) / 0.5 = 192 px, y (240 - 48 - 140) / 0.5 = 104
    assert found["animal"]["box"] == pytest.approx([192.0, 104.0, 448.0, 296.0], abs=0.01)
    assert found["animal"]["bbox"] == pytest.approx([0.15, 0.14444, 0.2, 0.26667], abs=1e-5)
    assert [a["score"] for a in out["annotations"]] == [0.855, 0.72, 0.42]
    # MegaDetector's classes name the category; without a classifier nothing finer is claimed
    assert {c: (a["detector_label"], a["label"]) for c, a in found.items()} == {
        "animal": ("animal", "animal"),
        "human": ("person", "human"),
        "vehicle": ("vehicle", "vehicle"),
    }
    assert found["animal"]["taxonomy"] == taxonomy.animal.to_dict()
    assert found["human"]["taxonomy"] == taxonomy.by_key(HUMAN).to_dict()
    assert found["vehicle"]["taxonomy"] == taxonomy.vehicle.to_dict()


def test_a_batch_and_another_frame(live: LiveServer, model_dir: Path) -> None:
    # The graph takes a real batch, so two images can share one run; the heron's letterbox
    # differs (500 x 375 at ratio 1.28, 80 px of padding above).
    graph = model_dir / "md_synthetic" / "md_synthetic.onnx"
    assert OnnxModel(graph, intra_threads=1, inter_threads=1).batchable
    heron = HERON.read_bytes()
    heron_size = Image.open(io.BytesIO(heron)).size
    with live.client() as client:
        first, second = analyze(client, [heron, heron], {"classify": False})
    assert first == second
    found = by_category(first["annotations"])
    assert found["animal"]["bbox"] == pytest.approx(expected_bbox(ROWS[0], heron_size), abs=2e-5)
    assert found["vehicle"]["bbox"] == pytest.approx(expected_bbox(ROWS[2], heron_size), abs=2e-5)
    assert first["model_version"] == CARD_NAME
    for ann in first["annotations"]:
        assert ann["label"] == ann["category"]
        assert ann["taxonomy"] is None


def test_naming_yolox_nano_still_uses_the_coco_path(live: LiveServer) -> None:
    with live.client() as client:
        [coco] = analyze(client, [HERON.read_bytes()], {"model": "yolox-nano"})
        [named] = analyze(client, [HERON.read_bytes()], {"model": CARD_NAME})
    assert (coco["model"], coco["mode"]) == ("yolox-nano", "coco-mapped")
    [bird] = coco["annotations"]
    assert (bird["detector_label"], bird["label"]) == ("bird", "bird")
    assert (named["model"], named["mode"]) == (CARD_NAME, "megadetector")
    assert len(named["annotations"]) == 3
