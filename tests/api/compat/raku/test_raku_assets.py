"""Result assets over real HTTP: each prediction's annotated PNG and JSON output, signed links
that need no key until they expire (403 after, and for any tampering), another key's asset
(404), and the retention purge."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from PIL import Image
from raku_support import detail, multipart

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import LiveServer, coco_image

V1 = "/api/v1/inference/predict/batch"
SIGN = "/api/v1/inference/assets/signed-url"
YOLO = json.dumps({"is_yolo": True})
PHOTO = coco_image("000000000139.jpg")  # 640x426


def predict(live: LiveServer, key: str = "k") -> dict[str, Any]:
    with live.client() as client:
        response = client.post(V1, **multipart([("room.jpg", PHOTO)], [YOLO], api_key=key))
    assert response.status_code == 200, response.text
    entry: dict[str, Any] = response.json()["result"][0]
    return entry


def sign(live: LiveServer, path: str, key: str = "k", **extra: Any) -> httpx.Response:
    with live.client() as client:
        return client.post(SIGN, json={"api_key": key, "object_path": path, **extra})


def download(url: str) -> httpx.Response:
    return httpx.get(url, timeout=30)  # no key: the signature is the credential


def test_signed_links_serve_the_annotated_image_and_the_json_output_without_a_key(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve()
    entry = predict(live)
    image_path = entry["assets"]["annotated_image"]
    assert image_path.startswith("results/") and image_path.endswith("/0-annotated.png")
    signed = sign(live, image_path)
    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert body["object_path"] == image_path and body["expires_in"] == 3600
    assert body["signed_url"].startswith(f"{live.url}/api/v1/inference/assets/{image_path}?")
    png = download(body["signed_url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.format == "PNG" and image.size == (640, 426)
    output = download(
        sign(live, entry["assets"]["output_json"], expires_in=60).json()["signed_url"]
    )
    assert output.headers["content-type"] == "application/json"
    assert output.json() == {k: v for k, v in entry.items() if k != "assets"}


def _tampered(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | changes
    return parts._replace(query=urlencode(query)).geturl()


def test_a_link_is_refused_with_403_once_expired_or_when_tampered_with(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve()
    entry = predict(live)
    url = sign(live, entry["assets"]["annotated_image"], expires_in=3).json()["signed_url"]
    later = int(dict(parse_qsl(urlsplit(url).query))["expires"]) + 1000
    signature = dict(parse_qsl(urlsplit(url).query))["signature"]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    other_file = url.replace("0-annotated.png", "0-output.json")
    for bad in (_tampered(url, signature=flipped), _tampered(url, expires=str(later)), other_file):
        detail(download(bad), 403, "forbidden")
    detail(download(url.split("?")[0]), 403, "forbidden")
    assert download(url).status_code == 200
    time.sleep(3.2)
    assert "expired" in detail(download(url), 403, "forbidden")


@pytest.mark.parametrize("expires_in", [0, 86_401, "60", 1.5, True])
def test_expires_in_outside_one_second_to_a_day_is_400(
    serve: Callable[..., LiveServer], expires_in: Any
) -> None:
    live = serve()
    path = predict(live)["assets"]["output_json"]
    assert "expires_in" in detail(sign(live, path, expires_in=expires_in), 400, "invalid_request")
    assert sign(live, path, expires_in=86_400).status_code == 200


def test_only_the_key_that_made_an_asset_may_sign_it(serve: Callable[..., LiveServer]) -> None:
    live = serve(auth="required")
    store = KeyStore(make_engine(live.settings))
    mine, theirs = store.create("mine").secret, store.create("theirs").secret
    admin = store.create("admin", is_admin=True).secret
    path = predict(live, mine)["assets"]["annotated_image"]
    assert sign(live, path, mine).status_code == 200
    detail(sign(live, path, theirs), 404, "not_found")
    assert sign(live, path, admin).status_code == 200
    for unknown in ("results/0123/0-annotated.png", "jobs/x/input.jsonl", "../../etc/passwd"):
        detail(sign(live, unknown, mine), 404, "not_found")
    detail(sign(live, path, "wrong"), 401, "unauthorized")
    with live.client() as client:
        missing_key = client.post(SIGN, json={"object_path": path})
    detail(missing_key, 400, "invalid_request")


def test_assets_past_their_retention_are_refused_then_purged(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(raku_asset_retention_hours=2 / 3600, job_sweep_interval_s=0.2)
    entry = predict(live)
    path = entry["assets"]["annotated_image"]
    url = sign(live, path).json()["signed_url"]
    folder = Path(live.settings.data_dir) / "blobs" / path.rsplit("/", 1)[0]
    assert (folder / "0-annotated.png").is_file()
    deadline = time.monotonic() + 10
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not folder.exists()
    detail(sign(live, path), 404, "not_found")
    detail(download(url), 404, "not_found")
