"""EXIF facts worth returning: capture time, camera, GPS. Malformed EXIF is ignored, never fatal."""

from __future__ import annotations

import logging
import math
import re
import warnings
from datetime import datetime
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

_IFD_EXIF = 0x8769
_IFD_GPS = 0x8825
_TAG_MAKE = 0x010F
_TAG_MODEL = 0x0110
_TAG_DATETIME = 0x0132
_TAG_DATETIME_ORIGINAL = 0x9003
_TAG_OFFSET_TIME_ORIGINAL = 0x9011
_OFFSET = re.compile(r"[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]")


def extract_metadata(image: Image.Image) -> dict[str, Any]:
    """Only the fields the image really has."""
    # Pillow warns ("Corrupt EXIF data") on every odd camera; the fields it cannot parse are
    # simply left out, so the warnings would only be noise in the server log.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            exif = image.getexif()
        except Exception:
            return {}
        found: dict[str, Any] = {}
        for section in (_capture_time, _camera, _gps):
            try:
                found.update(section(exif))
            except Exception as exc:  # odd firmware: keep the sections that parse
                log.debug("ignoring malformed EXIF: %s", exc)
        return found


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    cleaned = value.replace("\x00", "").strip()
    return cleaned or None


def _capture_time(exif: Image.Exif) -> dict[str, Any]:
    sub = exif.get_ifd(_IFD_EXIF)
    raw = _text(sub.get(_TAG_DATETIME_ORIGINAL)) or _text(exif.get(_TAG_DATETIME))
    if raw is None or len(raw) < 19:
        return {}
    try:  # also refuses the blank "    :  :     :  :  " and "0000:00:00 00:00:00" placeholders
        moment = datetime.strptime(raw[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return {}
    iso = moment.isoformat()
    offset = _text(sub.get(_TAG_OFFSET_TIME_ORIGINAL))
    if offset and _OFFSET.fullmatch(offset):
        iso += offset
    return {"capture_time": iso}


def _camera(exif: Image.Exif) -> dict[str, Any]:
    found = {}
    make = _text(exif.get(_TAG_MAKE))
    model = _text(exif.get(_TAG_MODEL))
    if make:
        found["camera_make"] = make
    if model:
        found["camera_model"] = model
    return found


def _rational(value: object) -> float:
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ValueError("non-finite rational")
    return number


def _degrees(dms: object, ref: object, negative_ref: str) -> float | None:
    if not isinstance(dms, tuple) or len(dms) != 3:
        return None
    degrees, minutes, seconds = (_rational(v) for v in dms)
    value = degrees + minutes / 60.0 + seconds / 3600.0
    return -value if _text(ref) == negative_ref else value


def _gps(exif: Image.Exif) -> dict[str, Any]:
    gps = exif.get_ifd(_IFD_GPS)
    if not gps:
        return {}
    latitude = _degrees(gps.get(2), gps.get(1), "S")
    longitude = _degrees(gps.get(4), gps.get(3), "W")
    if latitude is None or longitude is None:
        return {}
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return {}
    found: dict[str, Any] = {
        "gps": {"latitude": round(latitude, 7), "longitude": round(longitude, 7)}
    }
    if 6 in gps:
        try:
            altitude = _rational(gps[6])
        except (TypeError, ValueError):  # a malformed altitude loses only the altitude
            return found
        below_sea = gps.get(5) in (1, b"\x01")
        found["gps"]["altitude"] = round(-altitude if below_sea else altitude, 2)
    return found
