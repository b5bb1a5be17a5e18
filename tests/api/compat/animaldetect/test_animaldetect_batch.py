"""AnimalDetect `POST /api/v1/batch-detect` (and `-urban`) over real HTTP with the real models.

The seed page's Node.js request in multipart and JSON, the response shape field by field, every
parameter at and past its boundaries, the combined-size limits (413), metadata with and without
EXIF, a corrupt image inside a batch, the stored-result GET (scoping and expiry), and auth and
credits through the accounts layer.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import itertools
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from batchvision.accounts.keys import KeyStore
from batchvision.api.compat.animaldetect.tables import DetectResult
from batchvision.core.db import make_engine
from conftest import EVALDATA, MODELS, LiveServer, coco_image, error_of, make_settings, start_server

BATCH = "/api/v1/batch-detect"
URBAN = "/api/v1/batch-detect-urban"
TRAPS = EVALDATA / "camera_traps" / "images"
MIB = 1024 * 1024
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TAXONOMY_KEYS = {"id", "class", "order", "family", "genus", "species"}
MODEL_ID = "yolox-nano"
MODEL_VERSION = "yolox-nano-speciesnet-taxonomy"
# The seed's form, value for value (its two files are camera-trap photos here).
SEED_FIELDS = {
    "country": "USA",
    "threshold": "0.2",
    "classify": "true",
    "smooth_herd": "true",
    "latitude": "56.834",
    "longitude": "9.994",
    "metadata": "true",
}
CATTLE = "speciesnet_domestic_cattle.jpg"  # 3 cows; 2 are only "mammal" without smoothing
NACTI = "md_nacti.jpg"  # EXIF capture time and camera
GROUSE = "md_sage-grouse-raw.jpg"  # EXIF with GPS
DOMESTIC_CATTLE = "mammalia;artiodactyla;bovidae;bos;taurus"

_names = itertools.count()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(make_settings(tmp_path_factory.mktemp("ad"), auth="required"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def engine(live: LiveServer) -> Iterator[Engine]:
    engine = make_engine(live.settings)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def keys(engine: Engine) -> KeyStore:
    return KeyStore(engine)


@pytest.fixture
def client(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client() as client:
        yield client


def new_key(keys: KeyStore, credits: int | None = None) -> tuple[str, dict[str, str]]:
    """A fresh key's name and the Bearer header the seed's client sends."""
    name = f"ad-{next(_names)}"
    secret = keys.create(name, credits=credits).secret
    return name, {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def auth(keys: KeyStore) -> dict[str, str]:
    return new_key(keys)[1]


def trap(name: str) -> bytes:
    data: bytes = (TRAPS / name).read_bytes()
    return data


def png(size: tuple[int, int] = (160, 120)) -> bytes:
    """A small PNG: no EXIF at all."""
    image = Image.open(io.BytesIO(coco_image())).convert("RGB").resize(size)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def padded(size: int) -> bytes:
    """A valid JPEG of exactly `size` bytes (decoders ignore bytes after the end marker)."""
    data: bytes = coco_image()
    return data + b"\0" * (size - len(data))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post_form(
    client: httpx.Client,
    images: list[tuple[str, bytes]],
    fields: dict[str, str],
    headers: dict[str, str],
    *,
    route: str = BATCH,
) -> httpx.Response:
    files = [("images", (name, data, "application/octet-stream")) for name, data in images]
    if not files:  # httpx only sends multipart when there is a file; force it for 0 images
        return client.post(route, files={"note": (None, b"x")}, data=fields, headers=headers)
    return client.post(route, files=files, data=fields, headers=headers)


def post_json(
    client: httpx.Client,
    images: list[bytes],
    headers: dict[str, str],
    *,
    route: str = BATCH,
    **fields: Any,
) -> httpx.Response:
    return client.post(route, json={"images": [b64(i) for i in images], **fields}, headers=headers)


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def labels(item: dict[str, Any]) -> list[str]:
    return [a["label"] for a in item["annotations"]]


# --- the seed's request ------------------------------------------------------------------------


def assert_seed_shape(body: dict[str, Any], filenames: list[str | None]) -> None:
    assert list(body) == ["id", "expires_at", "results", "info"]
    assert str(uuid.UUID(body["id"], version=4)) == body["id"]
    assert ISO_MS.match(body["expires_at"])
    expires = dt.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    ttl = expires - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=24) - dt.timedelta(minutes=1) < ttl <= dt.timedelta(hours=24)
    assert body["info"] == {
        "total_processed": len(filenames),
        "total_time_ms": body["info"]["total_time_ms"],
        "model_version": MODEL_VERSION,
        "model_id": MODEL_ID,
        "country_processed": "USA",
        "threshold_applied": 0.2,
        "geofence": body["info"]["geofence"],
    }
    geofence = body["info"]["geofence"]
    assert (geofence["country"], geofence["applied"], geofence["has_base_rules"]) == (
        "USA",
        True,
        False,
    )
    assert "geofence_fixes.csv" in geofence["note"]  # says the full rules are not installed
    # The seed sends country USA with a point in Denmark: no US town is near, so no state.
    assert geofence["region"] is None
    assert "country-wide" in geofence["note"]
    assert isinstance(body["info"]["total_time_ms"], int) and body["info"]["total_time_ms"] > 0
    assert [item["index"] for item in body["results"]] == list(range(len(filenames)))
    assert [item["filename"] for item in body["results"]] == filenames
    for item in body["results"]:
        assert list(item) == ["index", "filename", "annotations", "metadata", "info"]
        assert set(item["info"]) == {
            "processing_time_ms",
            "model_version",
            "model_id",
            "threshold_applied",
        }
        assert item["info"]["model_version"] == MODEL_VERSION
        assert item["info"]["model_id"] == MODEL_ID
        assert item["info"]["threshold_applied"] == 0.2
        assert isinstance(item["info"]["processing_time_ms"], int)
        for annotation in item["annotations"]:
            assert_annotation(annotation, threshold=0.2)


def assert_annotation(annotation: dict[str, Any], threshold: float) -> None:
    assert list(annotation) == ["id", "bbox", "score", "label", "taxonomy"]
    uuid.UUID(annotation["id"])
    x, y, w, h = annotation["bbox"]
    assert 0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x + 1e-6 and 0 < h <= 1 - y + 1e-6
    assert threshold <= annotation["score"] <= 1
    assert isinstance(annotation["label"], str) and annotation["label"]
    assert set(annotation["taxonomy"]) == TAXONOMY_KEYS


def test_seed_request_multipart(client: httpx.Client, auth: dict[str, str]) -> None:
    body = ok(post_form(client, [(CATTLE, trap(CATTLE)), (NACTI, trap(NACTI))], SEED_FIELDS, auth))
    assert_seed_shape(body, [CATTLE, NACTI])
    cattle, nacti = body["results"]
    # smooth_herd=true: the two cows COCO only calls "mammal" take the herd's precise label.
    assert labels(cattle) == ["domestic cattle"] * 3
    assert cattle["annotations"][0]["taxonomy"]["species"] == "taurus"
    assert len({a["id"] for a in cattle["annotations"] + nacti["annotations"]}) == 4
    assert cattle["metadata"]["image_width"] == 2048
    assert nacti["metadata"]["camera_make"] == "RECONYX"


def test_seed_request_as_json_gives_the_same_detections(
    client: httpx.Client, auth: dict[str, str]
) -> None:
    images = [trap(CATTLE), trap(NACTI)]
    native: dict[str, Any] = {
        "threshold": 0.2,
        "classify": True,
        "smooth_herd": True,
        "metadata": True,
    }
    geo: dict[str, Any] = {"country": "USA", "latitude": 56.834, "longitude": 9.994}
    body = ok(post_json(client, images, auth, **native, **geo))
    assert_seed_shape(body, [None, None])
    form = ok(post_form(client, [(CATTLE, images[0]), (NACTI, images[1])], SEED_FIELDS, auth))

    def strip(result: dict[str, Any]) -> list[Any]:
        return [{k: v for k, v in a.items() if k != "id"} for a in result["annotations"]]

    assert [strip(r) for r in body["results"]] == [strip(r) for r in form["results"]]
    assert [r["metadata"] for r in body["results"]] == [r["metadata"] for r in form["results"]]
    assert body["id"] != form["id"]


def test_smooth_herd_and_classify_change_the_labels(
    client: httpx.Client, auth: dict[str, str]
) -> None:
    cattle = [(CATTLE, trap(CATTLE))]
    plain = ok(post_form(client, cattle, {"smooth_herd": "false"}, auth))["results"][0]
    assert {"domestic cattle", "mammal"} <= set(labels(plain))  # unsmoothed: mixed precision
    coarse = ok(post_form(client, cattle, {"classify": "0"}, auth))
    assert coarse["info"]["model_version"] == MODEL_ID  # no taxonomy in detector-only mode
    (item,) = coarse["results"]
    assert len(item["annotations"]) >= 3
    assert set(labels(item)) == {"animal"}
    assert all(a["taxonomy"] is None for a in item["annotations"])
    default = ok(post_json(client, [trap(CATTLE)], auth))  # classify defaults to true
    assert default["info"]["threshold_applied"] == 0.2
    assert default["info"]["country_processed"] is None
    assert "geofence" not in default["info"]  # nothing to say without a country
    assert "domestic cattle" in labels(default["results"][0])
    assert "metadata" not in default["results"][0]


def test_urban_profile_exempts_domestic_taxa_from_the_geofence(tmp_path: Path) -> None:
    """With a SpeciesNet fixes file that blocks domestic cattle in GBR, batch-detect rolls the
    cow up and batch-detect-urban keeps it."""
    data = tmp_path / "models" / "speciesnet_data"
    data.mkdir(parents=True)
    for source in (MODELS / "speciesnet_data").iterdir():
        (data / source.name).symlink_to(source)
    (data / "geofence_fixes.csv").unlink()
    fixes = (MODELS / "speciesnet_data" / "geofence_fixes.csv").read_text()
    (data / "geofence_fixes.csv").write_text(fixes + f"{DOMESTIC_CATTLE},block,GBR,\n")
    server = start_server(make_settings(tmp_path, model_dirs=[data.parent, MODELS]))
    images = [(CATTLE, trap(CATTLE))]
    try:
        with server.client() as client:
            wild = ok(post_form(client, images, {"country": "GBR"}, {}))["results"][0]
            urban = ok(post_form(client, images, {"country": "GBR"}, {}, route=URBAN))
            usa = ok(post_form(client, images, {"country": "USA"}, {}))["results"][0]
    finally:
        server.stop()
    assert "domestic cattle" in labels(usa)
    assert "domestic cattle" not in labels(wild)
    assert "domestic cattle" in labels(urban["results"][0])
    assert len(wild["annotations"]) == len(urban["results"][0]["annotations"])


def test_urban_route_serves_the_same_batch(client: httpx.Client, auth: dict[str, str]) -> None:
    images = [(CATTLE, trap(CATTLE))]
    fields = {"country": "GB", "smooth_herd": "true"}
    urban = ok(post_form(client, images, fields, auth, route=URBAN))
    assert urban["info"]["country_processed"] == "GBR"
    assert labels(urban["results"][0]) == ["domestic cattle"] * 3
    assert ISO_MS.match(urban["expires_at"])


# --- parameters at and past their boundaries ----------------------------------------------


@pytest.mark.parametrize("count", [1, 10])
def test_image_count_within_limits(client: httpx.Client, auth: dict[str, str], count: int) -> None:
    small = png()
    form = ok(post_form(client, [(f"{i}.png", small) for i in range(count)], {}, auth))
    assert [r["index"] for r in form["results"]] == list(range(count))
    assert [r["filename"] for r in form["results"]] == [f"{i}.png" for i in range(count)]
    assert form["info"]["total_processed"] == count
    assert len(ok(post_json(client, [small] * count, auth))["results"]) == count


@pytest.mark.parametrize("count", [0, 11])
def test_image_count_outside_limits_is_400(
    client: httpx.Client, keys: KeyStore, count: int
) -> None:
    name, auth = new_key(keys, credits=20)
    small = png((32, 32))
    form = post_form(client, [(f"{i}.png", small) for i in range(count)], {}, auth)
    assert "10" in error_of(form, 400, "invalid_request")
    assert "10" in error_of(post_json(client, [small] * count, auth), 400, "invalid_request")
    assert keys.by_name(name).credits == 20  # refused requests cost nothing


@pytest.mark.parametrize("threshold", [0.01, 0.99])
def test_threshold_at_its_bounds(
    client: httpx.Client, auth: dict[str, str], threshold: float
) -> None:
    body = ok(post_form(client, [("c.jpg", coco_image())], {"threshold": str(threshold)}, auth))
    assert body["info"]["threshold_applied"] == threshold
    (item,) = body["results"]
    assert item["info"]["threshold_applied"] == threshold
    for annotation in item["annotations"]:
        assert_annotation(annotation, threshold)
    as_json = ok(post_json(client, [coco_image()], auth, threshold=threshold))
    assert labels(as_json["results"][0]) == labels(item)


def test_lower_threshold_finds_more(client: httpx.Client, auth: dict[str, str]) -> None:
    low = ok(post_json(client, [coco_image()], auth, threshold=0.01))["results"][0]
    high = ok(post_json(client, [coco_image()], auth, threshold=0.99))["results"][0]
    assert len(low["annotations"]) > len(high["annotations"])


@pytest.mark.parametrize("threshold", ["0.009", "1.0", "abc", "nan", "-0.5"])
def test_bad_threshold_in_form_is_400(
    client: httpx.Client, auth: dict[str, str], threshold: str
) -> None:
    response = post_form(client, [("a.png", png())], {"threshold": threshold}, auth)
    assert "threshold" in error_of(response, 400, "invalid_request")


@pytest.mark.parametrize("threshold", [0.009, 1.0, 1, True, "abc", [0.2], 10**400, "1e999"])
def test_bad_threshold_in_json_is_400(
    client: httpx.Client, auth: dict[str, str], threshold: Any
) -> None:
    response = post_json(client, [png()], auth, threshold=threshold)
    assert "threshold" in error_of(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("fields", "word"),
    [
        ({"latitude": "56.8", "country": "USA"}, "longitude"),
        ({"longitude": "9.9", "country": "USA"}, "longitude"),
        ({"country": "Atlantis"}, "Atlantis"),
        ({"latitude": "90.5", "longitude": "9.9", "country": "USA"}, "latitude"),
        ({"latitude": "north", "longitude": "9.9", "country": "USA"}, "latitude"),
        ({"longitude": "-180.1", "latitude": "1", "country": "USA"}, "longitude"),
        ({"classify": "yes"}, "classify"),
        ({"smooth_herd": "2"}, "smooth_herd"),
        ({"metadata": "maybe"}, "metadata"),
    ],
)
def test_invalid_form_fields_are_400(
    client: httpx.Client, auth: dict[str, str], fields: dict[str, str], word: str
) -> None:
    response = post_form(client, [("a.png", png())], fields, auth)
    assert word in error_of(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "fields",
    [
        {"country": 840},
        {"classify": "on"},
        {"metadata": 2},
        {"latitude": True, "longitude": 2.0},
        {"latitude": 1.0, "country": "USA"},
    ],
)
def test_invalid_json_fields_are_400(
    client: httpx.Client, auth: dict[str, str], fields: dict[str, Any]
) -> None:
    error_of(post_json(client, [png()], auth, **fields), 400, "invalid_request")


@pytest.mark.parametrize(
    ("send", "message"),
    [
        ({"threshold": "abc"}, "threshold: Input should be a valid number"),
        ({"threshold": "0.995"}, "threshold: Input should be less than or equal to 0.99"),
        ({"classify": "yes"}, "classify: must be true, false, 1 or 0"),
        ({"latitude": "north", "longitude": "200"}, "latitude: Input should be a valid number"),
        ({"latitude": "north", "longitude": "200"}, "longitude: Input should be less than"),
        ({"latitude": "1", "country": "USA"}, "latitude and longitude must be sent together"),
    ],
)
def test_errors_name_the_field_and_the_reason(
    client: httpx.Client, auth: dict[str, str], send: dict[str, str], message: str
) -> None:
    assert message in error_of(
        post_form(client, [("a.png", png())], send, auth), 400, "invalid_request"
    )
    as_json = post_json(client, [png()], auth, **send)
    assert message in error_of(as_json, 400, "invalid_request")


def test_json_images_must_be_base64_strings(client: httpx.Client, auth: dict[str, str]) -> None:
    response = client.post(BATCH, json={"images": [b64(png()), 7]}, headers=auth)
    assert error_of(response, 400, "invalid_request") == "images.1: Input should be a valid string"
    missing = client.post(BATCH, json={"threshold": 0.5}, headers=auth)
    assert error_of(missing, 400, "invalid_request") == "images: Field required"


@pytest.mark.parametrize(
    ("fields", "sent"),
    [
        ({"latitude": "56.8", "longitude": "9.9"}, "latitude and longitude"),
        ({"latitude": "56.8"}, "latitude"),
        ({"longitude": "-9.9"}, "longitude"),
    ],
)
def test_area_hint_without_country_is_ignored_with_a_note(
    client: httpx.Client, auth: dict[str, str], fields: dict[str, str], sent: str
) -> None:
    """The page: latitude/longitude are "used only when ... `country` [is] also present".
    Without a country they change nothing, are no error, and `info.notes` says why."""
    image = coco_image()
    plain = ok(post_form(client, [("a.jpg", image)], {}, auth))
    hinted = ok(post_form(client, [("a.jpg", image)], fields, auth))
    (note,) = hinted["info"]["notes"]
    assert note.startswith(f"{sent} ignored: ") and "country" in note
    assert "notes" not in plain["info"]
    assert hinted["info"]["country_processed"] is None and "geofence" not in hinted["info"]
    assert labels(hinted["results"][0]) == labels(plain["results"][0])
    numbers = {name: float(value) for name, value in fields.items()}
    assert ok(post_json(client, [image], auth, **numbers))["info"]["notes"] == [note]
    stored = ok(client.get(f"{BATCH}/{hinted['id']}", headers=auth))
    assert stored["info"]["notes"] == [note]


@pytest.mark.parametrize(
    ("fields", "word"),
    [({"latitude": "north"}, "latitude"), ({"longitude": "181", "latitude": "1"}, "longitude")],
)
def test_an_unused_area_hint_must_still_be_a_point(
    client: httpx.Client, auth: dict[str, str], fields: dict[str, str], word: str
) -> None:
    response = post_form(client, [("a.png", png())], fields, auth)
    assert word in error_of(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("country", "cca3"), [("us", "USA"), ("DK", "DNK"), ("Denmark", "DNK"), ("", None)]
)
def test_country_normalises_to_cca3(
    client: httpx.Client, auth: dict[str, str], country: str, cca3: str | None
) -> None:
    body = ok(post_form(client, [("a.png", png())], {"country": country}, auth))
    assert body["info"]["country_processed"] == cca3


def test_area_hint_with_country_is_accepted(client: httpx.Client, auth: dict[str, str]) -> None:
    fields = {"latitude": "-90", "longitude": "180", "country": "NZ"}
    assert ok(post_form(client, [("a.png", png())], fields, auth))["info"]["country_processed"]


@pytest.mark.parametrize(
    ("request_kwargs", "status"),
    [
        ({"content": b"images=1", "headers": {"content-type": "text/plain"}}, 400),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
        ({"json": [b64(b"x")]}, 400),
        ({"json": {"images": b64(b"x")}}, 400),
        ({"json": {"images": [1, 2]}}, 400),
        ({"files": {"photo": ("a.png", b"x")}}, 400),
    ],
)
def test_malformed_bodies_are_400(
    client: httpx.Client, auth: dict[str, str], request_kwargs: dict[str, Any], status: int
) -> None:
    headers = {**auth, **request_kwargs.pop("headers", {})}
    response = client.post(BATCH, headers=headers, **request_kwargs)
    error_of(response, status, "invalid_request")


# --- combined size limits ---------------------------------------------------------------------


def test_batch_detect_accepts_exactly_10_mib(client: httpx.Client, auth: dict[str, str]) -> None:
    half = padded(5 * MIB)
    body = ok(post_form(client, [("a.jpg", half), ("b.jpg", half)], {"metadata": "1"}, auth))
    assert [r["metadata"]["file_size"] for r in body["results"]] == [5 * MIB, 5 * MIB]


def test_batch_detect_refuses_past_10_mib(client: httpx.Client, keys: KeyStore) -> None:
    name, auth = new_key(keys, credits=5)
    images = [("a.jpg", padded(5 * MIB)), ("b.jpg", padded(5 * MIB + 1))]
    assert "10485760" in error_of(post_form(client, images, {}, auth), 413, "payload_too_large")
    one = [("big.jpg", padded(10 * MIB + 1))]
    error_of(post_form(client, one, {}, auth), 413, "payload_too_large")
    as_json = post_json(client, [data for _, data in images], auth)
    error_of(as_json, 413, "payload_too_large")
    assert keys.by_name(name).credits == 5


def test_oversize_body_is_refused_while_it_arrives(live: LiveServer, auth: dict[str, str]) -> None:
    """No Content-Length (chunked) and the body never finished: the 413 comes back once the cap
    is passed, so the server did not wait for (or buffer) the rest."""
    head = (
        b"POST /api/v1/batch-detect HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: " + auth["Authorization"].encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=XyZ\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    part = b'--XyZ\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n\r\n'
    block = b"\0" * (256 * 1024)
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head + b"%x\r\n%s\r\n" % (len(part), part))
        for _ in range(43):  # 10.75 MiB: past the 10 MiB cap and its envelope, never finished
            sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
        reply = sock.recv(4096)
        while b"}}" not in reply:  # the JSON body may arrive after the headers
            more = sock.recv(4096)
            assert more, reply
            reply += more
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert b"payload_too_large" in reply


def test_urban_limit_is_5_mib(client: httpx.Client, auth: dict[str, str]) -> None:
    at_limit = [("a.jpg", padded(5 * MIB))]
    assert ok(post_form(client, at_limit, {}, auth, route=URBAN))["info"]["total_processed"] == 1
    past = [("a.jpg", padded(3 * MIB)), ("b.jpg", padded(2 * MIB + 1))]
    assert "5242880" in error_of(
        post_form(client, past, {}, auth, route=URBAN), 413, "payload_too_large"
    )
    assert ok(post_form(client, past, {}, auth))["info"]["total_processed"] == 2


# --- metadata -----------------------------------------------------------------------------------


def test_metadata_holds_only_what_each_image_has(
    client: httpx.Client, auth: dict[str, str]
) -> None:
    small = png()
    images = [(NACTI, trap(NACTI)), (GROUSE, trap(GROUSE)), ("plain.png", small)]
    nacti, grouse, plain = ok(post_form(client, images, {"metadata": "true"}, auth))["results"]
    assert nacti["metadata"] == {
        "image_width": 600,
        "image_height": 450,
        "file_size": len(trap(NACTI)),
        "capture_time": "2016-02-20T08:13:15",
        "camera_make": "RECONYX",
        "camera_model": "HC550 HYPERFIRE",
    }
    assert grouse["metadata"] == {
        "image_width": 1920,
        "image_height": 1080,
        "file_size": len(trap(GROUSE)),
        "capture_time": "2023-06-20T13:09:04",
        "camera_make": "BUSHNELL",
        "gps_latitude": 42.9463889,
        "gps_longitude": -116.5230556,
        "gps_altitude": 231.0,
    }
    assert plain["metadata"] == {"image_width": 160, "image_height": 120, "file_size": len(small)}


@pytest.mark.parametrize("flag", [None, "false", "0"])
def test_no_metadata_unless_asked(
    client: httpx.Client, auth: dict[str, str], flag: str | None
) -> None:
    fields = {} if flag is None else {"metadata": flag}
    (item,) = ok(post_form(client, [(NACTI, trap(NACTI))], fields, auth))["results"]
    assert list(item) == ["index", "filename", "annotations", "info"]


# --- one bad image ----------------------------------------------------------------------------


def test_corrupt_image_fails_alone_and_is_not_charged(client: httpx.Client, keys: KeyStore) -> None:
    name, auth = new_key(keys, credits=3)
    images = [(CATTLE, trap(CATTLE)), ("broken.jpg", b"\xff\xd8\xff not really"), ("p.png", png())]
    body = ok(post_form(client, images, {"metadata": "true"}, auth))
    good, broken, small = body["results"]
    assert list(broken) == ["index", "filename", "annotations", "error", "info"]
    assert broken["error"]["code"] == "image_decode_failed"
    assert broken["error"]["message"]
    assert broken["annotations"] == []
    assert broken["filename"] == "broken.jpg"
    assert broken["info"]["model_id"] == MODEL_ID
    assert "error" not in good and "error" not in small
    assert len(good["annotations"]) == 3
    assert body["info"]["total_processed"] == 2
    assert keys.by_name(name).credits == 1  # 3 reserved, the unreadable one refunded


def test_bad_base64_fails_alone(client: httpx.Client, auth: dict[str, str]) -> None:
    payload = {"images": [b64(png()), "not base64 !!"]}
    good, bad = ok(client.post(BATCH, json=payload, headers=auth))["results"]
    assert bad["error"]["code"] == "invalid_request"
    assert bad["annotations"] == [] and "error" not in good


# --- auth and credits --------------------------------------------------------------------------


def test_missing_or_unknown_key_is_401(client: httpx.Client) -> None:
    # The native surface's hint (curl and CLI) is not AnimalDetect's: its page's plain message.
    assert error_of(post_json(client, [png()], {}), 401, "unauthorized") == "missing API key"
    wrong = {"Authorization": "Bearer bv_00000000_" + "x" * 43}
    error_of(post_json(client, [png()], wrong), 401, "unauthorized")
    error_of(client.get(f"{BATCH}/{uuid.uuid4()}"), 401, "unauthorized")


def test_out_of_credits_is_402_and_charges_nothing(client: httpx.Client, keys: KeyStore) -> None:
    name, auth = new_key(keys, credits=1)
    small = png()
    error_of(post_json(client, [small, small], auth), 402, "insufficient_credits")
    assert keys.by_name(name).credits == 1
    ok(post_json(client, [small], auth))
    assert keys.by_name(name).credits == 0
    error_of(post_json(client, [small], auth, route=URBAN), 402, "insufficient_credits")


def test_rate_limited_key_is_429(client: httpx.Client, keys: KeyStore) -> None:
    secret = keys.create(f"ad-{next(_names)}", images_per_minute=2).secret
    auth = {"Authorization": f"Bearer {secret}"}
    small = png((32, 32))
    ok(post_json(client, [small, small], auth))
    response = post_json(client, [small], auth)
    error_of(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1


# --- stored results ----------------------------------------------------------------------------


def test_stored_result_is_served_to_its_key_only(client: httpx.Client, keys: KeyStore) -> None:
    _, auth = new_key(keys)
    _, other = new_key(keys)
    body = ok(post_form(client, [(CATTLE, trap(CATTLE))], SEED_FIELDS, auth, route=URBAN))
    for route in (BATCH, URBAN):
        assert ok(client.get(f"{route}/{body['id']}", headers=auth)) == body
    error_of(client.get(f"{BATCH}/{body['id']}", headers=other), 404, "not_found")
    error_of(client.get(f"{BATCH}/{uuid.uuid4()}", headers=auth), 404, "not_found")
    error_of(client.get(f"{BATCH}/not-a-uuid%00", headers=auth), 404, "not_found")
    assert ok(client.get(f"{BATCH}/{body['id'].upper()}", headers=auth)) == body


def test_expired_result_is_gone_and_purged_on_next_write(
    client: httpx.Client, auth: dict[str, str], engine: Engine
) -> None:
    body = ok(post_json(client, [png()], auth))
    with Session(engine) as session, session.begin():
        row = session.get(DetectResult, body["id"])
        assert row is not None and row.route == "batch-detect"
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        session.execute(
            update(DetectResult).where(DetectResult.id == body["id"]).values(expires_at=past)
        )
    error_of(client.get(f"{BATCH}/{body['id']}", headers=auth), 404, "not_found")
    ok(post_json(client, [png()], auth))
    with Session(engine) as session:
        count = session.scalar(select(func.count()).where(DetectResult.id == body["id"]))
    assert count == 0


def test_ttl_setting_sets_expires_at(tmp_path: Path) -> None:
    server = start_server(make_settings(tmp_path, detect_result_ttl_hours=0.5))
    try:
        with server.client() as client:
            body = ok(post_json(client, [png((32, 32))], {}))
            stored = ok(client.get(f"{BATCH}/{body['id']}"))
    finally:
        server.stop()
    expires = dt.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    left = expires - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=29) < left <= dt.timedelta(minutes=30)
    assert stored == body


def test_the_server_sweep_purges_expired_results_without_new_requests(tmp_path: Path) -> None:
    server = start_server(make_settings(tmp_path, job_sweep_interval_s=0.2))
    try:
        with server.client() as client:
            body = ok(post_json(client, [png((32, 32))], {}))
        engine = make_engine(server.settings)
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        with Session(engine) as session, session.begin():
            session.execute(
                update(DetectResult).where(DetectResult.id == body["id"]).values(expires_at=past)
            )
        deadline = time.monotonic() + 10
        while True:  # no request is made: only the periodic sweep can delete the row
            with Session(engine) as session:
                count = session.scalar(select(func.count()).where(DetectResult.id == body["id"]))
            if count == 0:
                break
            assert time.monotonic() < deadline, "the expired row was not swept"
            time.sleep(0.1)
        engine.dispose()
    finally:
        server.stop()
