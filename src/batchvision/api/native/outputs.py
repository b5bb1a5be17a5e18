"""The native surface's conventions for skill outputs: skills keep boxes in pixels; batchvision's
own API also gives each detect box as fractions of the image (`box_normalized`, x1 y1 x2 y2) and
each animals annotation as MegaDetector's `bbox` (normalised x, y, width, height)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from batchvision.core.types import ItemResult, normalized_xywh, normalized_xyxy

Convert = Callable[[Mapping[str, Any], int, int], dict[str, Any]]


def _detect(output: Mapping[str, Any], width: int, height: int) -> dict[str, Any]:
    objects = [
        {**item, "box_normalized": normalized_xyxy(item["box"], width, height)}
        for item in output["objects"]
    ]
    return {**output, "objects": objects}


def _animals(output: Mapping[str, Any], width: int, height: int) -> dict[str, Any]:
    annotations = [
        {**item, "bbox": normalized_xywh(item["box"], width, height)}
        for item in output["annotations"]
    ]
    return {**output, "annotations": annotations}


_CONVERSIONS: dict[str, Convert] = {"detect": _detect, "animals": _animals}


def native_outputs(result: ItemResult) -> dict[str, Any]:
    """Every skill output of one image in the native API's form."""
    if result.image is None:
        return dict(result.outputs)
    width, height = int(result.image["width"]), int(result.image["height"])
    return {
        skill: _CONVERSIONS[skill](output, width, height) if skill in _CONVERSIONS else output
        for skill, output in result.outputs.items()
    }
