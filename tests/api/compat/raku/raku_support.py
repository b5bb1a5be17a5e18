"""What the Raku Sight tests share: the page's own Python client code (run verbatim, only the
base URL changed), a server with the stand-in VLM and 127.0.0.1 allowed for URLs, and helpers."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import COCO_IMAGES, LiveServer, make_settings, start_server
from local_http import Route, serve_routes

# The page's examples post to https://sightapi.raku.so; tests set this to the live server.
BASE = {"url": ""}
PAGE_FILES = {
    "img1.jpg": "000000000139.jpg",
    "img2.jpg": "000000000285.jpg",
    "img3.jpg": "000000000724.jpg",
}
TRUTH = json.loads((COCO_IMAGES.parent / "labels.json").read_text())
QUERY = "find me the serial number from the images"


# --- the page's Python examples, verbatim but for the base URL ------------------------------


def predict_batch(
    api_key: str,
    query: str | None,
    file_paths: list[str],
    metadata: list[dict],
) -> dict:
    files = [("files", open(p, "rb")) for p in file_paths]  # noqa: SIM115 (the page's code)
    # metadata entries must be JSON strings
    data = {
        "api_key": api_key,
        "metadata": [json.dumps(m) for m in metadata],
    }
    if query:
        data["query"] = query
    with httpx.Client() as client:
        response = client.post(
            f"{BASE['url']}/api/v1/inference/predict/batch",
            data=data,
            files=files,
        )
        response.raise_for_status()
        return response.json()


def predict_batch_v2(api_key: str, query: str, data: list[dict]) -> dict:
    payload = {
        "api_key": api_key,
        "query": query,
        "data": data,
    }
    with httpx.Client() as client:
        response = client.post(
            f"{BASE['url']}/api/v1/inference/predict/batch/v2",
            json=payload,
        )
        response.raise_for_status()
        return response.json()


# --- servers and helpers -------------------------------------------------------------------


def page_files(folder: Path) -> list[str]:
    """The page's `./img1.jpg` … as real COCO photos."""
    paths = []
    for name, source in PAGE_FILES.items():
        shutil.copyfile(COCO_IMAGES / source, folder / name)
        paths.append(str(folder / name))
    return paths


def truth_labels(name: str) -> set[str]:
    return {o["class"] for o in TRUTH[PAGE_FILES.get(name, name)]["objects"]}


def labels(entry: dict[str, Any]) -> set[str]:
    return {o["label"] for o in entry["yolo"]["objects"]}


def raku_server(tmp: Path, vlm_url: str | None, **overrides: Any) -> LiveServer:
    settings: dict[str, Any] = {"url_allow_hosts": ["127.0.0.1"], "fetch_timeout_s": 2}
    if vlm_url is not None:
        settings.update(vlm_url=vlm_url, vlm_model="qwen2.5vl:7b")
    settings.update(overrides)
    return start_server(make_settings(tmp, **settings))


def detail(response: httpx.Response, status: int, code: str) -> str:
    """Assert a request-level error in the page's shape: `{"detail": {"message", "code"}}`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail"} and set(body["detail"]) == {"message", "code"}, body
    assert body["detail"]["code"] == code, body
    message: str = body["detail"]["message"]
    assert message and "Traceback" not in message
    return message


def multipart(files: list[tuple[str, bytes]], metadata: list[str], **fields: str) -> dict[str, Any]:
    """httpx keyword arguments for a v1 form."""
    data: dict[str, Any] = {"metadata": metadata, **fields}
    return {"data": data, "files": [("files", (n, b, "image/jpeg")) for n, b in files]}


@pytest.fixture(scope="module")
def images_base() -> Iterator[str]:
    routes: dict[str, Route] = {
        f"/{name}": (
            lambda h, s=source: h.send(
                200, (COCO_IMAGES / s).read_bytes(), Content_Type="image/jpeg"
            )
        )
        for name, source in PAGE_FILES.items()
    }
    routes["/redirect-private"] = lambda h: h.redirect("http://10.0.0.1/x.jpg")
    routes["/text"] = lambda h: h.send(200, b"<html>no</html>", Content_Type="text/html")
    with serve_routes(routes) as url:
        yield url
