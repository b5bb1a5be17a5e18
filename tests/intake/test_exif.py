"""Tests for the EXIF facts `decode_image` returns as `metadata`: capture time, camera and GPS.

Images are generated here; the real camera-trap photos are read from ../shared/evaldata.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, features

from batchvision.intake.decode import decode_image
from conftest import EVALDATA

CAMERA_TRAPS = EVALDATA / "camera_traps" / "images"
IFD_EXIF = 0x8769
IFD_GPS = 0x8825


def with_exif(exif: Image.Exif | bytes, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (90, 120, 60)).save(buf, fmt, exif=exif)
    return buf.getvalue()


def metadata_of(data: bytes) -> dict[str, Any]:
    image = decode_image(data, max_pixels=10**8)
    assert image.pixels.shape[2] == 3  # decoding always succeeds
    return image.metadata


def reconyx_exif(**gps_overrides: Any) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Reconyx"
    exif[0x0110] = "HyperFire 2"
    exif[0x0132] = "2030:01:01 00:00:00"  # DateTime (last edit): DateTimeOriginal wins
    sub = exif.get_ifd(IFD_EXIF)
    sub[0x9003] = "2024:05:06 07:08:09"
    sub[0x9011] = "+02:00"
    gps = exif.get_ifd(IFD_GPS)
    gps.update(
        {
            1: "N",
            2: (56.0, 50.0, 2.4),
            3: "W",
            4: (9.0, 59.0, 38.4),
            5: 0,
            6: 123.5,
        }
    )
    for key, value in gps_overrides.items():
        tag = int(key.removeprefix("tag"))
        if value is None:
            gps.pop(tag, None)
        else:
            gps[tag] = value
    return exif


EXPECTED = {
    "capture_time": "2024-05-06T07:08:09+02:00",
    "camera_make": "Reconyx",
    "camera_model": "HyperFire 2",
    "gps": {"latitude": 56.834, "longitude": -9.994, "altitude": 123.5},
}


def test_full_exif_from_jpeg() -> None:
    meta = metadata_of(with_exif(reconyx_exif()))
    assert meta == EXPECTED
    assert meta["gps"]["latitude"] == pytest.approx(56 + 50 / 60 + 2.4 / 3600)
    assert meta["gps"]["longitude"] == pytest.approx(-(9 + 59 / 60 + 38.4 / 3600))


@pytest.mark.parametrize(
    "fmt",
    [
        "PNG",
        "WEBP",
        "HEIF",
        pytest.param(
            "AVIF", marks=pytest.mark.skipif(not features.check("avif"), reason="no AVIF")
        ),
    ],
)
def test_full_exif_from_other_formats(fmt: str) -> None:
    assert metadata_of(with_exif(reconyx_exif(), fmt)) == EXPECTED


def test_tiff_camera_fields() -> None:
    """Pillow's TIFF writer keeps IFD0 (camera, DateTime) but drops the Exif and GPS sub-IFDs,
    so the capture time falls back to DateTime."""
    meta = metadata_of(with_exif(reconyx_exif(), "TIFF"))
    assert meta == {
        "capture_time": "2030-01-01T00:00:00",
        "camera_make": "Reconyx",
        "camera_model": "HyperFire 2",
    }


def test_southern_eastern_hemisphere_below_sea_level() -> None:
    exif = reconyx_exif(tag1="S", tag3="E", tag5=1)
    assert metadata_of(with_exif(exif))["gps"] == {
        "latitude": -56.834,
        "longitude": 9.994,
        "altitude": -123.5,
    }


def test_gps_without_altitude() -> None:
    meta = metadata_of(with_exif(reconyx_exif(tag5=None, tag6=None)))
    assert meta["gps"] == {"latitude": 56.834, "longitude": -9.994}


def test_no_exif_gives_empty_metadata() -> None:
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, fmt)
        assert metadata_of(buf.getvalue()) == {}, fmt


def test_empty_exif_gives_empty_metadata() -> None:
    assert metadata_of(with_exif(Image.Exif())) == {}


def test_datetime_fallback() -> None:
    """Without DateTimeOriginal, the IFD0 DateTime is the capture time."""
    exif = Image.Exif()
    exif[0x0132] = "2019:12:31 23:59:58"
    assert metadata_of(with_exif(exif)) == {"capture_time": "2019-12-31T23:59:58"}


def test_only_camera_fields() -> None:
    exif = Image.Exif()
    exif[0x0110] = "  E8\x00\x00"
    assert metadata_of(with_exif(exif)) == {"camera_model": "E8"}


# ----------------------------------------------------------------------------- malformed


def capture_time_for(value: str, offset: str | None = None) -> str | None:
    exif = Image.Exif()
    exif[0x010F] = "Make"
    sub = exif.get_ifd(IFD_EXIF)
    sub[0x9003] = value
    if offset is not None:
        sub[0x9011] = offset
    meta = metadata_of(with_exif(exif))
    assert meta["camera_make"] == "Make"  # the other fields survive
    result: str | None = meta.get("capture_time")
    return result


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "garbage garbage garbage",
        "0000:00:00 00:00:00",
        "    :  :     :  :  ",
        "2024/05/06 07:08:09",
        "2024:13:06 07:08:09",
        "2024:02:30 07:08:09",
        "2024:05:06 25:08:09",
        "2024:05:06 xx:yy:zz",  # regression: a valid date with a garbage clock was passed on
        "2024:05:06T07:08:09",
        "",
    ],
)
def test_malformed_capture_time_is_omitted(value: str) -> None:
    assert capture_time_for(value) is None


def test_capture_time_trailing_data_and_nulls() -> None:
    assert capture_time_for("2024:05:06 07:08:09\x00\x00") == "2024-05-06T07:08:09"
    assert capture_time_for("2024:05:06 07:08:09.123") == "2024-05-06T07:08:09"


@pytest.mark.parametrize(
    ("offset", "suffix"),
    [("+02:00", "+02:00"), ("-09:30", "-09:30"), ("+ab:cd", ""), ("02:00", ""), ("+2:00", "")],
)
def test_offset_only_when_well_formed(offset: str, suffix: str) -> None:
    assert capture_time_for("2024:05:06 07:08:09", offset) == "2024-05-06T07:08:09" + suffix


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"tag2": (56.0, 50.0)}, id="latitude-two-parts"),
        pytest.param({"tag4": 9.5}, id="longitude-single-value"),
        pytest.param({"tag2": (200.0, 0.0, 0.0)}, id="latitude-200-degrees"),
        pytest.param({"tag4": (181.0, 0.0, 0.0)}, id="longitude-181-degrees"),
        pytest.param({"tag2": None}, id="latitude-missing"),
    ],
)
def test_malformed_gps_is_omitted(overrides: dict[str, Any]) -> None:
    meta = metadata_of(with_exif(reconyx_exif(**overrides)))
    assert "gps" not in meta
    assert {k: meta[k] for k in ("capture_time", "camera_make", "camera_model")} == {
        k: EXPECTED[k] for k in ("capture_time", "camera_make", "camera_model")
    }


Entry = tuple[int, int, int, bytes]  # tag, TIFF type, count, the value's bytes
ASCII, SHORT, LONG, RATIONAL, SLONG = 2, 3, 4, 5, 9


def raw_exif(ifd0: list[Entry], gps: list[Entry] | None = None) -> bytes:
    """Little-endian EXIF written by hand, for the wrong types Pillow's writer refuses."""
    entries0 = len(ifd0) + (gps is not None)
    gps_at = 8 + 2 + 12 * entries0 + 4
    data_at = gps_at + (2 + 12 * len(gps) + 4 if gps is not None else 0)
    if gps is not None:
        ifd0 = [*ifd0, (IFD_GPS, LONG, 1, struct.pack("<I", gps_at))]
    data = bytearray()

    def ifd(entries: list[Entry]) -> bytes:
        out = struct.pack("<H", len(entries))
        for tag, kind, count, value in sorted(entries):
            if len(value) <= 4:
                out += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\x00")
            else:
                out += struct.pack("<HHII", tag, kind, count, data_at + len(data))
                data.extend(value)
        return out + struct.pack("<I", 0)

    body = ifd(ifd0) + (ifd(gps) if gps is not None else b"")
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + body + bytes(data)


def rationals(*pairs: tuple[int, int]) -> bytes:
    return b"".join(struct.pack("<II", n, d) for n, d in pairs)


def dms(degrees: int, minutes: int, seconds_x10: int) -> bytes:
    return rationals((degrees, 1), (minutes, 1), (seconds_x10, 10))


def gps_entries(**replace: Entry | None) -> list[Entry]:
    entries: dict[str, Entry | None] = {
        "lat_ref": (1, ASCII, 2, b"N\x00"),
        "lat": (2, RATIONAL, 3, dms(56, 50, 24)),
        "lon_ref": (3, ASCII, 2, b"W\x00"),
        "lon": (4, RATIONAL, 3, dms(9, 59, 384)),
        "alt": (6, RATIONAL, 1, rationals((2470, 20))),
    }
    entries.update(replace)
    return [entry for entry in entries.values() if entry is not None]


MAKE = (0x010F, ASCII, 4, b"Rec\x00")


def test_hand_written_gps_reads_like_pillows() -> None:
    assert metadata_of(with_exif(raw_exif([MAKE], gps_entries()))) == {
        "camera_make": "Rec",
        "gps": {"latitude": 56.834, "longitude": -9.994, "altitude": 123.5},
    }


@pytest.mark.parametrize(
    "replace",
    [
        pytest.param({"lat": (2, ASCII, 10, b"56,50,2.4\x00")}, id="latitude-as-text"),
        pytest.param({"lat": (2, RATIONAL, 3, rationals((1, 0), (0, 1), (0, 1)))}, id="zero-den"),
        pytest.param({"lat": (2, RATIONAL, 2, rationals((56, 1), (50, 1)))}, id="latitude-2-parts"),
        pytest.param({"lat": (2, RATIONAL, 3, dms(91, 0, 0))}, id="latitude-91"),
        pytest.param({"lon": (4, RATIONAL, 3, dms(200, 0, 0))}, id="longitude-200"),
        pytest.param({"lon": None}, id="longitude-missing"),
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hand_written_malformed_gps_is_omitted(replace: dict[str, Entry | None]) -> None:
    meta = metadata_of(with_exif(raw_exif([MAKE], gps_entries(**replace))))
    assert meta == {"camera_make": "Rec"}


@pytest.mark.parametrize(
    "altitude",
    [
        pytest.param((6, ASCII, 5, b"high\x00"), id="text"),
        pytest.param((6, RATIONAL, 1, rationals((5, 0))), id="zero-denominator"),
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_malformed_altitude_loses_only_the_altitude(altitude: Entry) -> None:
    """Regression: an unreadable altitude used to drop the whole GPS block."""
    meta = metadata_of(with_exif(raw_exif([MAKE], gps_entries(alt=altitude))))
    assert meta == {"camera_make": "Rec", "gps": {"latitude": 56.834, "longitude": -9.994}}


def test_broken_exif_ifd_pointer_keeps_camera_and_gps() -> None:
    """Regression: a failure while reading the capture time dropped the camera and GPS too."""
    negative_offset = (IFD_EXIF, SLONG, 1, struct.pack("<i", -5))
    meta = metadata_of(with_exif(raw_exif([MAKE, negative_offset], gps_entries())))
    assert meta == {"camera_make": "Rec", "gps": EXPECTED["gps"]}


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param((IFD_GPS, SLONG, 1, struct.pack("<i", -5)), id="negative-offset"),
        pytest.param((IFD_GPS, LONG, 1, struct.pack("<I", 10**6)), id="offset-past-end"),
        pytest.param((IFD_GPS, ASCII, 4, b"abc\x00"), id="pointer-as-text"),
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_broken_gps_pointer(entry: Entry) -> None:
    assert metadata_of(with_exif(raw_exif([MAKE, entry]))) == {"camera_make": "Rec"}


def test_make_of_wrong_type_is_omitted() -> None:
    make_as_short = (0x010F, SHORT, 1, struct.pack("<HH", 7, 0))
    model = (0x0110, ASCII, 4, b"PC8\x00")
    assert metadata_of(with_exif(raw_exif([make_as_short, model]))) == {"camera_model": "PC8"}


def test_datetime_of_wrong_type_is_omitted() -> None:
    datetime_as_long = (0x0132, LONG, 1, struct.pack("<I", 20240506))
    assert metadata_of(with_exif(raw_exif([MAKE, datetime_as_long]))) == {"camera_make": "Rec"}


# ----------------------------------------------------------------------------- real photos


def camera_trap_images() -> list[Path]:
    if not CAMERA_TRAPS.is_dir():
        return []
    return sorted(p for p in CAMERA_TRAPS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))


@pytest.mark.skipif(not camera_trap_images(), reason="evaldata not available")
def test_real_camera_trap_images() -> None:
    seen: dict[str, dict[str, Any]] = {}
    for path in camera_trap_images():
        data = path.read_bytes()
        image = decode_image(data, max_pixels=10**8, target_side=640)
        assert image.format == "JPEG", path.name
        assert image.pixels.shape[2] == 3
        assert max(image.pixels.shape[:2]) >= min(640, max(image.width, image.height))
        meta = image.metadata
        assert set(meta) <= {"capture_time", "camera_make", "camera_model", "gps"}, path.name
        if "capture_time" in meta:
            assert isinstance(meta["capture_time"], str)
            assert len(meta["capture_time"]) in (19, 25)
            assert meta["capture_time"][4] == "-" and meta["capture_time"][10] == "T"
        for key in ("camera_make", "camera_model"):
            if key in meta:
                assert isinstance(meta[key], str) and meta[key] == meta[key].strip()
                assert meta[key]
        if "gps" in meta:
            gps = meta["gps"]
            assert set(gps) <= {"latitude", "longitude", "altitude"}
            assert all(isinstance(v, float) for v in gps.values())
            assert -90 <= gps["latitude"] <= 90 and -180 <= gps["longitude"] <= 180
        seen[path.name] = meta

    # Facts in these files' raw EXIF tags (Make/Model are space-padded; GPS is 42°56'47" N,
    # 116°31'23" W, 231 m with no altitude ref; the Bushnell's Model is all spaces).
    if "md_nacti.jpg" in seen:
        assert seen["md_nacti.jpg"] == {
            "capture_time": "2016-02-20T08:13:15",
            "camera_make": "RECONYX",
            "camera_model": "HC550 HYPERFIRE",
        }
    if "md_sage-grouse-raw.jpg" in seen:
        assert seen["md_sage-grouse-raw.jpg"] == {
            "capture_time": "2023-06-20T13:09:04",
            "camera_make": "BUSHNELL",
            "gps": {
                "latitude": pytest.approx(42 + 56 / 60 + 47 / 3600),
                "longitude": pytest.approx(-(116 + 31 / 60 + 23 / 3600)),
                "altitude": 231.0,
            },
        }
    if "ena24_2595.jpg" in seen:
        assert seen["ena24_2595.jpg"] == {}
    assert sum("capture_time" in m for m in seen.values()) >= 5
