"""Grounding: Qwen2.5-VL's resize, and coordinates read strictly and mapped back to pixels."""

from __future__ import annotations

import math

import pytest

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.models.vlm.calls import PreparedCall, SentImage, VlmAnswer, to_pixels
from batchvision.models.vlm.grounding import (
    QWEN_MAX_PIXELS,
    QWEN_MIN_PIXELS,
    fit_side,
    native_boxes,
    parse_json_answer,
    read_boxes,
    read_points,
    sent_size,
    smart_resize,
)


def test_smart_resize_matches_qwen_for_a_full_hd_frame() -> None:
    # round to 28s gives 1092x1932 = 2.1 MP > max, so both sides are floored after scaling
    assert smart_resize(1080, 1920) == (728, 1316)


def test_smart_resize_rounds_small_images_to_multiples_of_28() -> None:
    assert smart_resize(426, 640) == (420, 644)
    assert smart_resize(10, 10) == (56, 56)  # enlarged to the minimum pixel count


@pytest.mark.parametrize("height", [1, 29, 100, 427, 768, 1080, 4000])
@pytest.mark.parametrize("width", [3, 56, 333, 640, 1920, 6000])
def test_smart_resize_keeps_its_invariants(height: int, width: int) -> None:
    if max(height, width) / min(height, width) > 200:
        with pytest.raises(BatchVisionError):
            smart_resize(height, width)
        return
    h_bar, w_bar = smart_resize(height, width)
    assert h_bar % 28 == 0 and w_bar % 28 == 0
    assert QWEN_MIN_PIXELS <= h_bar * w_bar <= QWEN_MAX_PIXELS
    if min(height, width) >= 56:  # thinner images are padded up to whole 28-pixel patches
        # the aspect ratio is kept up to the one-patch rounding of each side
        pixels = min(max(height * width, QWEN_MIN_PIXELS), QWEN_MAX_PIXELS)
        scale = math.sqrt(pixels / (height * width))
        assert abs(w_bar - width * scale) <= 28 and abs(h_bar - height * scale) <= 28


def test_sent_size_fits_the_side_first_then_resizes_for_qwen() -> None:
    assert fit_side((4000, 3000), 768) == (768, 576)
    assert fit_side((300, 200), 768) == (300, 200)  # never enlarged
    assert sent_size((4000, 3000), 768, "norm1000") == (768, 576)
    assert sent_size((4000, 3000), 768, "qwen2.5-vl") == (756, 588)


def test_qwen_pixels_map_back_exactly_to_the_original() -> None:
    sent = (756, 588)
    boxes = read_boxes('[{"bbox_2d": [189, 147, 378, 294], "label": "cat"}]', "qwen2.5-vl", sent)
    call = PreparedCall("detect", (SentImage("", sent, (4000, 3000)),))
    result = to_pixels(VlmAnswer(boxes=boxes), call, "m")
    assert result.boxes == (pytest.approx((1000.0, 750.0, 2000.0, 1500.0)),)


def test_norm1000_and_points_and_fences() -> None:
    text = '```json\n[{"bbox_2d": [100, 250, 500, 1000]}]\n```'
    assert read_boxes(text, "norm1000", (640, 480)) == ((0.1, 0.25, 0.5, 1.0),)
    assert read_points('{"point_2d": [320, 120]}', "qwen2.5-vl", (640, 480)) == ((0.5, 0.25),)
    assert read_boxes("[]", "qwen2.5-vl", (10, 10)) == ()


@pytest.mark.parametrize(
    "text",
    [
        "I see a cat at 10, 20, 30, 40.",
        '[{"bbox_2d": [1, 2, 3]}]',
        '[{"bbox_2d": [1, 2, 3, true]}]',
        '[{"box": [1, 2, 3, 4]}]',
        '[{"bbox_2d": [50, 2, 10, 4]}]',
        '[{"bbox_2d": [0, 0, 5000, 10]}]',
        '```json\n[{"bbox_2d": [1, 2, 3, 4]}]',
        '"just a string"',
    ],
)
def test_an_answer_that_does_not_parse_is_a_processing_error_quoting_it(text: str) -> None:
    with pytest.raises(BatchVisionError) as caught:
        read_boxes(text, "qwen2.5-vl", (640, 480))
    assert caught.value.code is ErrorCode.PROCESSING_ERROR
    assert repr(text[:200]) in caught.value.message


def test_only_200_characters_of_a_long_answer_are_quoted() -> None:
    text = "no boxes here " * 100
    with pytest.raises(BatchVisionError) as caught:
        parse_json_answer(text)
    assert repr(text[:200]) in caught.value.message
    assert text[:201] not in caught.value.message


def test_native_boxes_are_fractions_and_checked() -> None:
    rows = [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.3, "y_max": 0.4}]
    assert native_boxes(rows, "raw") == ((0.1, 0.2, 0.3, 0.4),)
    with pytest.raises(BatchVisionError):
        native_boxes([{"x_min": 0.1, "y_min": 0.2, "x_max": 3.0, "y_max": 0.4}], "raw")
    with pytest.raises(BatchVisionError):
        native_boxes("a square", "raw")
