"""Raku Sight result assets with blob_store=s3 (a real moto server): stored in the bucket under
the prefix, served through the signed links, and purged from the bucket after their retention."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from raku_support import multipart

from conftest import LiveServer, coco_image
from s3_server import new_bucket, s3_client, s3_server

V1 = "/api/v1/inference/predict/batch"
SIGN = "/api/v1/inference/assets/signed-url"
PHOTO = coco_image("000000000139.jpg")  # 640x426
PREFIX = "raku-site/"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server() as url:
        yield url


def bucket_keys(endpoint: str, bucket: str) -> list[str]:
    answer = s3_client(endpoint).list_objects_v2(Bucket=bucket, Prefix=PREFIX + "results/")
    return sorted(str(entry["Key"]) for entry in answer.get("Contents", []))


def signed_url(live: LiveServer, path: str) -> str:
    with live.client() as client:
        response = client.post(SIGN, json={"api_key": "k", "object_path": path})
    assert response.status_code == 200, response.text
    url: str = response.json()["signed_url"]
    return url


def test_assets_live_in_the_bucket_are_served_signed_and_purged(
    serve: Callable[..., LiveServer], endpoint: str
) -> None:
    bucket = new_bucket(endpoint)
    live = serve(
        blob_store="s3",
        s3_bucket=bucket,
        s3_prefix=PREFIX,
        s3_endpoint_url=endpoint,
        raku_asset_retention_hours=8 / 3600,
        job_sweep_interval_s=0.2,
    )
    with live.client() as client:
        yolo = json.dumps({"is_yolo": True})
        response = client.post(V1, **multipart([("room.jpg", PHOTO)], [yolo], api_key="k"))
    assert response.status_code == 200, response.text
    entry: dict[str, Any] = response.json()["result"][0]
    image_path, json_path = entry["assets"]["annotated_image"], entry["assets"]["output_json"]
    stored = bucket_keys(endpoint, bucket)
    assert PREFIX + image_path in stored
    assert PREFIX + json_path in stored
    assert not (live.settings.data_dir / "blobs").exists()

    png = httpx.get(signed_url(live, image_path), timeout=30)
    assert png.status_code == 200
    assert Image.open(io.BytesIO(png.content)).size == (640, 426)
    output = httpx.get(signed_url(live, json_path), timeout=30)
    assert output.json() == {k: v for k, v in entry.items() if k != "assets"}

    deadline = time.monotonic() + 25
    while bucket_keys(endpoint, bucket) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert bucket_keys(endpoint, bucket) == []
