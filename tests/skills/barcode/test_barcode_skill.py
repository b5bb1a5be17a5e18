"""The `barcode` skill in-process: format names, UPC-A naming, coordinates of reduced-scale
images, and that every zxing-cpp call runs on the engine's bounded CPU pool."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zxingcpp
from PIL import Image

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import DecodedImage, ImageInput, Task
from batchvision.pipeline import Pipeline
from batchvision.skills import SKILL_TYPES
from batchvision.skills.barcode import (
    SUPPORTED_FORMATS,
    BarcodeParams,
    BarcodeSkill,
    read_barcodes,
    read_options,
    resolve_formats,
)
from conftest import make_settings

F = zxingcpp.BarcodeFormat


def symbol_pixels(fmt: zxingcpp.BarcodeFormat, text: str, scale: int, pad: int = 40) -> np.ndarray:
    picture = np.asarray(zxingcpp.create_barcode(text, fmt).to_image(scale=scale))
    canvas = np.full((picture.shape[0] + 2 * pad, picture.shape[1] + 2 * pad), 255, np.uint8)
    canvas[pad : pad + picture.shape[0], pad : pad + picture.shape[1]] = picture
    return np.repeat(canvas[:, :, None], 3, axis=2)


def decoded(
    pixels: np.ndarray, width: int | None = None, height: int | None = None
) -> DecodedImage:
    h, w = pixels.shape[:2]
    return DecodedImage(pixels, width or w, height or h, "PNG", pixels.nbytes)


def read(pixels: np.ndarray, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = read_barcodes(
        decoded(pixels), read_options(BarcodeParams(**params))
    )["barcodes"]
    return found


def test_the_skill_is_registered() -> None:
    assert SKILL_TYPES["barcode"] is BarcodeSkill


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("QRCode", F.QRCode),
        ("qrcode", F.QRCode),
        ("QR Code", F.QRCode),
        ("qr_code", F.QRCode),
        ("EAN-13", F.EAN13),
        ("ean13", F.EAN13),
        ("UPC-A", F.UPCA),
        ("Data Matrix", F.DataMatrix),
        ("Pharmazentralnummer", F.PZN),
        ("DataBarExpanded", F.DataBarExp),
        ("MicroQRCode", F.MicroQRCode),
        ("alllinear", F.AllLinear),
    ],
)
def test_format_names_are_case_and_punctuation_insensitive(
    name: str, expected: zxingcpp.BarcodeFormat
) -> None:
    assert resolve_formats([name]) == (expected,)


def test_unknown_formats_are_invalid_parameters_naming_the_valid_ones() -> None:
    with pytest.raises(BatchVisionError) as caught:
        resolve_formats(["QRCode", "Code 11", "EAN-14"])
    assert caught.value.code is ErrorCode.INVALID_PARAMETER
    assert "'Code 11'" in caught.value.message and "'EAN-14'" in caught.value.message
    assert "'QRCode'" not in caught.value.message
    for name in SUPPORTED_FORMATS:
        assert name in caught.value.message


def test_supported_formats_cover_what_zxing_cpp_reads() -> None:
    readable = zxingcpp.barcode_formats_list(zxingcpp.BarcodeFormats([F.AllReadable]))
    assert {fmt.name for fmt in readable} <= set(SUPPORTED_FORMATS)
    assert {"QRCode", "EAN13", "UPCA", "Code128", "DataMatrix", "PDF417", "Aztec"} <= set(
        SUPPORTED_FORMATS
    )
    assert "AllCreatable" not in SUPPORTED_FORMATS


def test_upc_a_is_named_upc_a_unless_only_ean13_is_asked_for() -> None:
    upca = symbol_pixels(F.UPCA, "036000291452", 3)
    [found] = read(upca)
    assert (found["format"], found["symbology"]) == ("UPCA", "EANUPC")
    assert found["text"] == "0036000291452"  # zxing-cpp 3's HRI: 13 digits
    assert [b["format"] for b in read(upca, formats=["EANUPC"])] == ["UPCA"]
    assert [b["format"] for b in read(upca, formats=["EAN13", "UPCA"])] == ["UPCA"]
    assert [b["format"] for b in read(upca, formats=["UPCA"])] == ["UPCA"]
    assert [b["format"] for b in read(upca, formats=["EAN13"])] == ["EAN13"]
    assert read(upca, formats=["EAN8"]) == []


def test_an_ean13_not_starting_with_zero_stays_ean13() -> None:
    ean = symbol_pixels(F.EAN13, "5901234123457", 3)
    assert [(b["format"], b["text"]) for b in read(ean)] == [("EAN13", "5901234123457")]
    assert read(ean, formats=["UPCA"]) == []


def test_positions_are_in_original_pixels_when_the_pixels_are_reduced() -> None:
    full = symbol_pixels(F.QRCode, "scale me", 8)
    [at_full] = read(full)
    half = np.asarray(Image.fromarray(full).reduce(2))
    # What a draft decode gives: half the pixels, the original size
    image = decoded(half, width=full.shape[1], height=full.shape[0])
    [at_half] = read_barcodes(image, read_options(BarcodeParams()))["barcodes"]
    assert at_half["text"] == "scale me"
    for (x, y), (fx, fy) in zip(at_half["polygon"], at_full["polygon"], strict=True):
        assert abs(x - fx) <= 4 and abs(y - fy) <= 4, (at_half["polygon"], at_full["polygon"])


def test_pixels_that_are_not_contiguous_are_read() -> None:
    pixels = symbol_pixels(F.DataMatrix, "strided", 6)
    wide = np.zeros((pixels.shape[0], pixels.shape[1] * 2, 3), np.uint8)
    wide[:, ::2] = pixels
    view = wide[:, ::2]
    assert not view.flags.c_contiguous
    assert [b["text"] for b in read(view)] == ["strided"]


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_every_zxing_call_runs_on_the_engines_cpu_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    real = zxingcpp.read_barcodes

    def spy(*args: Any, **kwargs: Any) -> list[zxingcpp.Barcode]:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(zxingcpp, "read_barcodes", spy)  # the skill calls it by module
    images = [symbol_pixels(F.QRCode, f"pooled {i}", 4) for i in range(3)]
    # and one with nothing to find: try_harder's extra passes run there too
    images.append(np.full((120, 160, 3), 230, np.uint8))

    async def go() -> list[Any]:
        pipeline = Pipeline(make_settings(tmp_path, worker_threads=2))
        calls: list[str] = []
        run_cpu = pipeline.engine.run_cpu

        async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(getattr(fn, "__name__", repr(fn)))
            return await run_cpu(fn, *args, **kwargs)

        monkeypatch.setattr(pipeline.engine, "run_cpu", counting)
        try:
            tasks = pipeline.prepare_tasks([Task("barcode")])
            inputs = [
                ImageInput(index=i, filename=f"{i}.png", data=png_bytes(p))
                for i, p in enumerate(images)
            ]
            results = await pipeline.analyze(inputs, tasks)
        finally:
            await pipeline.close()
        assert calls.count("read_barcodes") == len(images)
        return [r.outputs["barcode"]["barcodes"] for r in results]

    outputs = asyncio.run(go())
    assert [[b["text"] for b in found] for found in outputs] == [
        ["pooled 0"],
        ["pooled 1"],
        ["pooled 2"],
        [],
    ]
    # three readable images: one pass each; the blank one: all three try_harder passes
    assert len(threads) == 3 + 3
    assert all(name.startswith("bv-cpu") for name in threads), threads
