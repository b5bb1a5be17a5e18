"""Classify cards, their label lists in the registry, crops and the classifier runtime.

The graphs are format-only, written with `onnx.helper`: a SpeciesNet-shaped input (NHWC, 480 x
480) and a constant score row. The label list is the real SpeciesNet one in ../shared/models.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.core.types import DecodedImage
from batchvision.intake.decode import decode_image
from batchvision.models.cards import ModelCard
from batchvision.models.classifier import (
    OnnxClassifier,
    crop_pixels,
    prepare_crop,
    softmax,
    top_k,
)
from batchvision.models.detector import YoloxDetector
from batchvision.models.preprocess import stretch
from batchvision.models.registry import ModelRegistry
from conftest import EVALDATA, MODELS

LABELS = "speciesnet_data/always_crop_99710272_22x8_v12_epoch_00148.labels.txt"
LABEL_COUNT = 2498
SIDE = 480
BEARS = EVALDATA / "camera_traps" / "images" / "ena24_9455.jpg"
BEAR_BOX = (466.58, 562.07, 627.28, 731.6)  # yolox-nano's `bear` box on BEARS


def batch_one_graph(width: int) -> onnx.ModelProto:
    """Input [1, 480, 480, 3]; output [1, width] = row + 0 x mean(all of the input): a graph
    whose output keeps batch 1 whatever it is fed, so it can only run one crop at a time."""
    row = np.linspace(0.0, 1.0, width, dtype=np.float32)[None]
    nodes = [
        helper.make_node("ReduceMean", ["crops"], ["mean"], keepdims=0),
        helper.make_node(
            "Constant",
            [],
            ["zero"],
            value=numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Constant", [], ["row"], value=numpy_helper.from_array(row, "row")),
        helper.make_node("Add", ["nothing", "row"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "batch-one",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, [1, SIDE, SIDE, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, width])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def card_text(name: str = "sn", labels: str = LABELS, extra: str = "") -> str:
    return (
        f'name = "{name}"\ntask = "classify"\nfamily = "speciesnet"\nfile = "{name}/{name}.onnx"\n'
        f'input_size = [{SIDE}, {SIDE}]\nlabels = "{labels}"\n{extra}'
    )


def install(models: Path, *, width: int = LABEL_COUNT, extra: str = "") -> None:
    (models / "sn").mkdir(parents=True)
    onnx.save(batch_one_graph(width), str(models / "sn" / "sn.onnx"))
    (models / "sn.card.toml").write_text(card_text(extra=extra), encoding="utf-8")


def registry_of(*model_dirs: Path) -> ModelRegistry:
    return ModelRegistry(Settings(model_dirs=list(model_dirs), ort_intra_op_threads=1))


# --- cards ----------------------------------------------------------------------------------


# The smallest valid classify card; tests change one field at a time.
CLASSIFY_CARD: dict[str, object] = {
    "name": "sn",
    "task": "classify",
    "family": "speciesnet",
    "file": "sn/sn.onnx",
    "input_size": [SIDE, SIDE],
    "labels": LABELS,
}


def test_a_speciesnet_card_takes_the_family_defaults() -> None:
    card = ModelCard.model_validate(CLASSIFY_CARD)
    assert (card.pre.resize, card.pre.layout, card.pre.channel_order) == ("stretch", "NHWC", "RGB")
    assert card.pre.scale == pytest.approx(1 / 255)
    assert card.softmax is True  # SpeciesNet's graph returns logits
    assert card.class_names() == []  # a classifier's labels are a file, read by the registry


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"labels": ["bear", "deer"]}, "path of its label list"),
        ({"labels": "/etc/labels.txt"}, "labels must be a relative path"),
        ({"labels": "../labels.txt"}, "labels must be a relative path"),
        (
            {"task": "detect", "family": "yolox", "softmax": True, "labels": "coco80"},
            "for classify cards",
        ),
        ({"file": None}, "names its file, input_size and labels"),
    ],
)
def test_invalid_classify_cards_are_refused(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        ModelCard.model_validate({**CLASSIFY_CARD, **changes})


def test_a_detect_card_cannot_stretch_or_take_nhwc() -> None:
    fields: dict[str, object] = {"name": "d", "task": "detect", "family": "yolox"}
    fields |= {"file": "d.onnx", "input_size": [416, 416], "labels": "coco80"}
    with pytest.raises(ValidationError, match="letterboxes into an NCHW"):
        ModelCard.model_validate({**fields, "preprocess": {"layout": "NHWC"}})


# --- the registry ---------------------------------------------------------------------------


def test_the_label_list_is_found_in_any_model_directory(tmp_path: Path) -> None:
    install(tmp_path)
    registry = registry_of(tmp_path, MODELS)
    card = registry.card("sn")
    status = registry.status(card)
    assert status.found.labels == MODELS / LABELS
    assert (status.state, status.classes) == ("installed", LABEL_COUNT)
    assert status.to_dict()["classes"] == LABEL_COUNT
    assert registry.require_labels("sn") == MODELS / LABELS


def test_the_model_directory_s_own_label_list_comes_first(tmp_path: Path) -> None:
    install(tmp_path)
    own = tmp_path / LABELS
    own.parent.mkdir()
    own.write_text((MODELS / LABELS).read_text(encoding="utf-8"), encoding="utf-8")
    # listed last, the directory holding the model still supplies the label list
    assert registry_of(MODELS, tmp_path).require_labels("sn") == own


def test_without_its_label_list_a_classifier_is_missing(tmp_path: Path) -> None:
    install(tmp_path)
    registry = registry_of(tmp_path)  # ../shared/models not listed: no label list anywhere
    assert registry.status(registry.card("sn")).state == "missing"
    for call in (registry.require, registry.model):
        with pytest.raises(BatchVisionError) as caught:
            call("sn")
        assert caught.value.code is ErrorCode.MODEL_UNAVAILABLE
        assert "label list" in caught.value.message


def test_a_label_list_checksum_is_verified(tmp_path: Path) -> None:
    real = hashlib.sha256((MODELS / LABELS).read_bytes()).hexdigest()
    install(tmp_path, extra=f'labels_sha256 = "{"0" * 64}"\n')
    registry = registry_of(tmp_path, MODELS)
    assert registry.status(registry.card("sn")).state == "checksum_mismatch"
    with pytest.raises(BatchVisionError, match="labels_sha256"):
        registry.model("sn")
    (tmp_path / "sn.card.toml").write_text(card_text(extra=f'labels_sha256 = "{real}"\n'))
    fixed = registry_of(tmp_path, MODELS)
    assert fixed.status(fixed.card("sn")).state == "installed"


def test_a_label_list_of_another_length_is_refused_at_load(tmp_path: Path) -> None:
    install(tmp_path, width=LABEL_COUNT - 1)
    with pytest.raises(BatchVisionError) as caught:
        registry_of(tmp_path, MODELS).model("sn")
    assert caught.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert f"gives {LABEL_COUNT - 1} scores" in caught.value.message


def test_each_card_loads_as_the_kind_its_task_and_family_name(tmp_path: Path) -> None:
    install(tmp_path)
    registry = registry_of(tmp_path, MODELS)
    assert isinstance(registry.model("sn"), OnnxClassifier)
    assert isinstance(registry.model("yolox-nano"), YoloxDetector)
    with pytest.raises(BatchVisionError) as caught:
        registry.require_labels("yolox-nano")
    assert caught.value.code is ErrorCode.INVALID_PARAMETER


def test_a_batch_one_graph_classifies_crops_one_at_a_time(tmp_path: Path) -> None:
    install(tmp_path, extra="softmax = false\n")
    classifier = registry_of(tmp_path, MODELS).model("sn")
    assert not classifier.model.batchable
    crops = [np.full((SIDE, SIDE, 3), v, np.float32) for v in (0.0, 0.5, 1.0)]
    rows = classifier.run_batch(crops)
    expected = np.linspace(0.0, 1.0, LABEL_COUNT, dtype=np.float32)
    assert len(rows) == 3
    for row in rows:
        np.testing.assert_allclose(row, expected, atol=1e-6)


def test_logits_are_turned_into_probabilities(tmp_path: Path) -> None:
    install(tmp_path)  # the family default: softmax = true
    [row] = (
        registry_of(tmp_path, MODELS).model("sn").run_batch([np.zeros((SIDE, SIDE, 3), np.float32)])
    )
    logits = np.linspace(0.0, 1.0, LABEL_COUNT)
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(row, expected, rtol=1e-4)
    assert float(row.sum()) == pytest.approx(1.0, abs=1e-5)


# --- crops ----------------------------------------------------------------------------------


def test_softmax_and_top_k() -> None:
    probs = softmax(np.log(np.array([0.1, 0.6, 0.3], np.float32)))
    np.testing.assert_allclose(probs, [0.1, 0.6, 0.3], rtol=1e-5)
    assert [i for i, _ in top_k(probs, 2)] == [1, 2]
    assert top_k(np.array([0.5, 0.5, 0.0], np.float32), 3)[:2] == [(0, 0.5), (1, 0.5)]


def test_stretch_is_bilinear_without_antialiasing() -> None:
    # torchvision's resize(antialias=False) of [0, 100] to 4 pixels: half-pixel centres,
    # clamped at the edges
    pixels = np.array([[[0] * 3, [100] * 3]], np.uint8)
    assert stretch(pixels, (4, 1))[0, :, 0].tolist() == [0, 25, 75, 100]
    # shrinking samples between neighbours, never averaging a wider window: 4 -> 2 pixels
    wide = np.array([[[0] * 3, [40] * 3, [80] * 3, [200] * 3]], np.uint8)
    assert stretch(wide, (2, 1))[0, :, 0].tolist() == [20, 140]
    assert np.array_equal(stretch(wide, (4, 1)), wide)


def test_a_box_is_cropped_in_the_frame_of_a_draft_decode() -> None:
    # `pixels` at half the original size: column value = its x, row value = its y
    ys, xs = np.mgrid[0:50, 0:80]
    pixels = np.stack([xs, ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    image = DecodedImage(pixels, width=160, height=100, format="JPEG", file_size=1)
    crop = crop_pixels(image, (21.0, 41.0, 61.0, 81.0))  # original pixels
    assert crop.shape == (20, 20, 3)
    assert (crop[0, 0, 0], crop[0, 0, 1]) == (10, 20)  # int(21 / 2), int(41 / 2)
    assert crop_pixels(image, (159.5, 99.5, 160.0, 100.0)).shape == (1, 1, 3)


def test_a_draft_and_a_full_decode_give_nearly_the_same_crop(tmp_path: Path) -> None:
    install(tmp_path)
    card = registry_of(tmp_path, MODELS).card("sn")
    data = BEARS.read_bytes()
    full = decode_image(data, max_pixels=10**8)
    draft = decode_image(data, max_pixels=10**8, target_side=416)
    assert draft.pixels.shape[1] < full.pixels.shape[1]  # the draft really is smaller
    tensor = prepare_crop(card, full, BEAR_BOX)
    assert tensor.shape == (SIDE, SIDE, 3) and tensor.dtype == np.float32
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
    same = np.abs(prepare_crop(card, draft, BEAR_BOX) - tensor).mean()
    elsewhere = np.abs(prepare_crop(card, full, (0.0, 0.0, 160.7, 169.5)) - tensor).mean()
    assert same < 0.05 < elsewhere
