"""Model cards, file lookup, checksum verification, lazy loading, batching and LRU unloading."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.intake.decode import decode_image
from batchvision.models.cards import CardError, load_cards, read_card
from batchvision.models.decoders import DecodeParams
from batchvision.models.detector import DetectRequest
from batchvision.models.registry import ModelRegistry
from conftest import MODELS, coco_image

YOLOX_FILE = MODELS / "yolox_nano" / "yolox_nano.onnx"


def _registry(*model_dirs: Path, **overrides: object) -> ModelRegistry:
    return ModelRegistry(Settings(model_dirs=list(model_dirs), ort_intra_op_threads=2, **overrides))


def _install_yolox(model_dir: Path) -> Path:
    target = model_dir / "yolox_nano" / "yolox_nano.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(YOLOX_FILE, target)
    return target


def test_shipped_cards_describe_the_models_at_hand() -> None:
    cards = load_cards(Settings(model_dirs=[MODELS]))
    assert {"yolox-nano", "deimv2-atto", "yolov8n-int8-agpl", "tesseract", "ppocr"} <= set(cards)
    assert (cards["tesseract"].task, cards["ppocr"].family) == ("ocr", "ppocr")
    yolox = cards["yolox-nano"]
    assert yolox.family == "yolox" and yolox.input_size == (416, 416)
    assert yolox.pre.letterbox == "topleft" and yolox.pre.channel_order == "BGR"
    assert len(yolox.class_names()) == 80 and yolox.class_names()[0] == "person"
    assert cards["yolov8n-int8-agpl"].license == "AGPL-3.0"


def test_models_load_lazily_and_report_state() -> None:
    registry = _registry(MODELS)
    assert registry.loaded_names() == []
    assert registry.status(registry.card("yolox-nano")).state == "installed"
    registry.model("yolox-nano")
    assert registry.loaded_names() == ["yolox-nano"]
    assert registry.model("yolox-nano") is registry.model("yolox-nano")


def test_missing_model_names_the_pull_command(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    assert registry.status(registry.card("yolox-nano")).state == "missing"
    with pytest.raises(BatchVisionError) as caught:
        registry.model("yolox-nano")
    assert caught.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert "batchvision models pull yolox-nano" in caught.value.message


def test_checksum_mismatch_refuses_to_load(tmp_path: Path) -> None:
    target = _install_yolox(tmp_path)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    registry = _registry(tmp_path)
    assert registry.status(registry.card("yolox-nano")).state == "checksum_mismatch"
    with pytest.raises(BatchVisionError) as caught:
        registry.model("yolox-nano")
    assert caught.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert "sha256" in caught.value.message


def test_unknown_model_is_an_invalid_parameter() -> None:
    with pytest.raises(BatchVisionError) as caught:
        _registry(MODELS).card("no-such-model")
    assert caught.value.code is ErrorCode.INVALID_PARAMETER


def test_user_card_file_adds_a_model_without_code(tmp_path: Path) -> None:
    """A user's own export (here the YOLOX file under another name) described by a card file."""
    export = tmp_path / "exports" / "my-detector.onnx"
    export.parent.mkdir()
    shutil.copyfile(YOLOX_FILE, export)
    (tmp_path / "my-detector.card.toml").write_text(
        'name = "my-detector"\ntask = "detect"\nfamily = "yolox"\n'
        'file = "exports/my-detector.onnx"\ninput_size = [416, 416]\n'
        'labels = "coco80"\nlicense = "MIT"\n'
    )
    registry = _registry(tmp_path)
    assert registry.status(registry.card("my-detector")).state == "installed"
    detector = registry.model("my-detector")
    image = decode_image(coco_image(), max_pixels=10**8)
    (dets,) = detector.run_batch([detector.preprocess(DetectRequest(image, DecodeParams()))])
    assert "person" in {detector.class_names[int(c)] for c in dets.class_ids}


@pytest.mark.parametrize(
    ("task", "family"), [("segment", "yolox"), ("classify", "yolox"), ("detect", "yolo-nas")]
)
def test_a_card_no_kind_runs_is_refused_with_a_clear_message(
    tmp_path: Path, task: str, family: str
) -> None:
    (tmp_path / "odd.card.toml").write_text(
        f'name = "odd"\ntask = "{task}"\nfamily = "{family}"\nfile = "odd.onnx"\n'
        'input_size = [320, 320]\nlabels = "coco80"\n'
    )
    with pytest.raises(CardError) as caught:
        _registry(tmp_path)
    message = str(caught.value)
    assert f"model card 'odd': no model kind has task '{task}' and family '{family}'" in message
    assert "detect/yolox" in message and "ocr/tesseract" in message


def test_an_ocr_card_names_no_files(tmp_path: Path) -> None:
    bad = tmp_path / "ocr.card.toml"
    bad.write_text('name = "t2"\ntask = "ocr"\nfamily = "tesseract"\nfile = "t.onnx"\n')
    with pytest.raises(CardError, match=r"an ocr card names no files or inputs \(got \['file'\]\)"):
        read_card(bad)


def test_invalid_card_file_is_reported_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.card.toml"
    bad.write_text('name = "x"\ntask = "detect"\nfamily = "nope"\n')
    with pytest.raises(CardError, match=r"bad\.card\.toml"):
        read_card(bad)


def test_least_recently_used_model_is_unloaded_past_the_budget(tmp_path: Path) -> None:
    for name, family, file, side in [
        ("a-model", "yolox", "yolox_nano/yolox_nano.onnx", 416),
        ("b-model", "detr", "deimv2_atto/deimv2_atto_coco_int8.onnx", 320),
    ]:
        (tmp_path / f"{name}.card.toml").write_text(
            f'name = "{name}"\ntask = "detect"\nfamily = "{family}"\nfile = "{file}"\n'
            f"input_size = [{side}, {side}]\n"
            'labels = "coco80"\nmemory_mb = 60\n'
        )
    registry = ModelRegistry(
        Settings(model_dirs=[MODELS], model_card_paths=[tmp_path], model_memory_budget_mb=100)
    )
    registry.model("a-model")
    registry.model("b-model")
    assert registry.loaded_names() == ["b-model"]
    registry.model("a-model")
    assert registry.loaded_names() == ["a-model"]


def test_fixed_batch_graph_is_made_batchable_with_identical_outputs() -> None:
    registry = _registry(MODELS)
    yolox = registry.model("yolox-nano").model
    assert yolox.batchable
    probe = np.random.default_rng(1).random((3, 3, 416, 416), dtype=np.float32) * 255
    together = yolox.run(probe)
    for index in range(3):
        (alone,) = yolox.run(probe[index : index + 1])
        np.testing.assert_allclose(together[index][0], alone[0], atol=1e-4)


def test_graph_that_fails_at_batch_two_runs_items_one_by_one() -> None:
    """DEIMv2's export declares a dynamic batch but fails beyond 1: it must still serve batches."""
    registry = _registry(MODELS)
    deim = registry.model("deimv2-atto")
    assert not deim.model.batchable
    images = [
        decode_image(coco_image(n), max_pixels=10**8)
        for n in ("000000000139.jpg", "000000000632.jpg")
    ]
    params = DecodeParams(score_threshold=0.3)
    items = [deim.preprocess(DetectRequest(image, params)) for image in images]
    joint = deim.run_batch(items)
    for item, dets in zip(items, joint, strict=True):
        (alone,) = deim.run_batch([item])
        np.testing.assert_allclose(dets.boxes, alone.boxes)
