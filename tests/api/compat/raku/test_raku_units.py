"""The Raku Sight surface's pieces on their own: the `detail` error body, the request and result
shapes, and the annotated image drawn on real photos."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from batchvision.api.compat.raku import annotate, wire
from batchvision.api.compat.raku.errors import RakuErrors, wire_status
from batchvision.api.surface import WireError
from batchvision.core.errors import BatchVisionError, ErrorCode
from conftest import COCO_IMAGES, coco_image
from vlm_standin import square_image

MAX_PIXELS = 100_000_000


@pytest.mark.parametrize(
    ("status", "code", "shown"),
    [
        (400, ErrorCode.INVALID_REQUEST, 400),
        (422, ErrorCode.INVALID_PARAMETER, 400),
        (415, ErrorCode.UNSUPPORTED_FORMAT, 400),
        (401, ErrorCode.UNAUTHORIZED, 401),
        (402, ErrorCode.INSUFFICIENT_CREDITS, 402),
        (403, ErrorCode.FORBIDDEN, 403),
        (404, ErrorCode.NOT_FOUND, 404),
        (413, ErrorCode.PAYLOAD_TOO_LARGE, 413),
        (429, ErrorCode.RATE_LIMITED, 429),
        (500, ErrorCode.INTERNAL_ERROR, 500),
        (503, ErrorCode.OVERLOADED, 503),
    ],
)
def test_every_error_is_a_detail_object_with_message_and_code(
    status: int, code: ErrorCode, shown: int
) -> None:
    response = RakuErrors().render(WireError(status, code, "what went wrong", {"Retry-After": "2"}))
    assert response.status_code == shown == wire_status(status)
    assert json.loads(bytes(response.body)) == {
        "detail": {"message": "what went wrong", "code": code.value}
    }
    assert response.headers["retry-after"] == "2"


def test_metadata_entries_are_json_objects_of_booleans_one_per_file() -> None:
    flags = wire.parse_metadata(['{"is_yolo": true, "is_llm": false}', '{"is_llm": true}'], 2)
    assert [(f.is_yolo, f.is_llm) for f in flags] == [(True, False), (False, True)]
    assert wire.parse_flags('{"is_yolo": true, "extra": 1}', 0).is_yolo


@pytest.mark.parametrize(
    ("texts", "files", "says"),
    [
        (['{"is_yolo": true}'], 2, "got 1 metadata for 2 files"),
        (["not json"], 1, "metadata[0]: must be a JSON object"),
        (["[true]"], 1, "metadata[0]: must be a JSON object"),
        (['{"is_yolo": "true"}'], 1, "metadata[0].is_yolo"),
        (['{"is_yolo": true}', '{"is_llm": 1}'], 2, "metadata[1].is_llm"),
    ],
)
def test_bad_metadata_is_a_400_naming_the_entry(texts: list[str], files: int, says: str) -> None:
    with pytest.raises(BatchVisionError) as caught:
        wire.parse_metadata(texts, files)
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    assert says in caught.value.message


def test_query_blank_means_none_and_a_long_one_is_refused() -> None:
    assert wire.parse_query(None) is None
    assert wire.parse_query("  ") is None
    assert wire.parse_query(" what is this? ") == "what is this?"
    with pytest.raises(BatchVisionError, match="at most 4000"):
        wire.parse_query("x" * 4001)


def test_url_batch_counts_files_before_validating_them() -> None:
    many = {"api_key": "k", "data": [{"image_url": "x"}] * 51}
    with pytest.raises(BatchVisionError) as caught:
        wire.parse_url_batch(many)
    assert caught.value.code is ErrorCode.TOO_MANY_IMAGES
    with pytest.raises(BatchVisionError, match=r"data\.0\.is_yolo"):
        wire.parse_url_batch({"data": [{"image_url": "x", "is_yolo": "yes"}]})
    with pytest.raises(BatchVisionError, match="data"):
        wire.parse_url_batch({"data": []})


def test_yolo_part_gives_pixel_and_normalised_boxes() -> None:
    detect = {"objects": [{"label": "dog", "class_id": 16, "score": 0.9, "box": [10, 20, 60, 80]}]}
    [item] = wire.yolo_part(detect, 100, 200)["objects"]
    assert item == {
        "label": "dog",
        "class_id": 16,
        "confidence": 0.9,
        "box": [10, 20, 60, 80],
        "box_normalized": [0.1, 0.1, 0.6, 0.4],
    }


def test_text_is_black_on_light_colours_and_white_on_dark_ones() -> None:
    assert annotate.text_colour((255, 215, 0)) == annotate.BLACK
    assert annotate.text_colour((31, 119, 180)) == annotate.WHITE
    assert annotate.line_width(4000, 3000) > annotate.line_width(640, 480)


def _decoded(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def test_boxes_are_drawn_in_their_class_colour_with_a_label_background() -> None:
    box = [200, 150, 400, 350]
    png = annotate.annotated_png(
        square_image(800, 600, (0, 0, 1, 1)),
        [{"label": "cat", "class_id": 15, "confidence": 0.8, "box": box}],
        (800, 600),
        MAX_PIXELS,
    )
    pixels = _decoded(png)
    assert pixels.shape == (600, 800, 3)
    colour = np.array(annotate.colour_for(15))
    assert np.abs(pixels[250, 200].astype(int) - colour).max() < 12  # the left edge
    assert np.abs(pixels[250, 300].astype(int) - 128).max() < 12  # inside: the image
    label = pixels[130:150, 202:230].reshape(-1, 3).astype(int)  # above the box
    assert (np.abs(label - colour).max(axis=1) < 12).mean() > 0.4  # mostly its background


def _near_colour(pixels: np.ndarray, x: float, y: float, class_id: int) -> bool:
    colour = np.array(annotate.colour_for(class_id))
    row = pixels[round(y), max(0, round(x) - 2) : round(x) + 3].astype(int)
    return bool((np.abs(row - colour).max(axis=1) < 16).any())


def test_a_coco_photo_gets_its_labelled_boxes_drawn() -> None:
    labels = json.loads((COCO_IMAGES.parent / "labels.json").read_text())
    name = "000000000139.jpg"
    truth = labels[name]
    objects = [
        {"label": o["class"], "class_id": o["class_id"], "confidence": 1.0, "box": o["bbox_xyxy"]}
        for o in truth["objects"]
    ]
    png = annotate.annotated_png(
        coco_image(name), objects, (truth["width"], truth["height"]), MAX_PIXELS
    )
    pixels = _decoded(png)
    assert pixels.shape[:2] == (truth["height"], truth["width"])
    drawn = [
        _near_colour(pixels, o["box"][2], (o["box"][1] + o["box"][3]) / 2, o["class_id"])
        for o in objects
    ]
    # each box's right edge, in its class colour (a neighbour's label may cover a small one)
    assert sum(drawn) >= 0.8 * len(objects) and len(objects) >= 10


def test_a_large_image_is_scaled_down_with_its_boxes() -> None:
    box = [1500, 1000, 2400, 1800]
    data = square_image(3000, 2000, (0, 0, 1, 1))
    objects = [{"label": "car", "class_id": 2, "confidence": 0.5, "box": box}]
    pixels = _decoded(annotate.annotated_png(data, objects, (3000, 2000), MAX_PIXELS))
    assert pixels.shape[:2] == (853, annotate.MAX_SIDE)
    scale = annotate.MAX_SIDE / 3000
    assert _near_colour(pixels, box[0] * scale, 1400 * scale, 2)
    assert not _near_colour(pixels, 1000 * scale, 1400 * scale, 2)
