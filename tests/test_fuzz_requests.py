"""Nothing a client sends produces a 500: seeded random bodies, shapes and headers, real server."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import httpx

from conftest import LiveServer, coco_image

SEED = 20261121
_SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    10**30,
    "",
    "x",
    "detect",
    "metadata",
    "data:image/png;base64,",
    "%%%",
    "\x00",
    "😀" * 3,
    float("1e308"),
]


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return rng.choice(_SCALARS)
    if roll < 0.75:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = [
        "data",
        "url",
        "id",
        "skill",
        "params",
        "threshold",
        "classes",
        "model",
        "images",
        "tasks",
        "max_detections",
        "nms_iou",
        "filename",
    ]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _random_image_entry(rng: random.Random, good: str) -> Any:
    choice = rng.randint(0, 6)
    if choice == 0:
        return {"data": good, "id": rng.choice([None, "a", 7, True, [1]])}
    if choice == 1:
        return {"data": good[: rng.randint(0, len(good))]}
    if choice == 2:
        return {
            "url": rng.choice(["http://", "ftp://x", "http://[::1", "http://0/", "", "http://a b"])
        }
    if choice == 3:
        return {"data": good, "url": "http://example.invalid/"}
    return _random_value(rng)


def _random_task(rng: random.Random) -> Any:
    params = {
        rng.choice(
            ["threshold", "classes", "max_detections", "model", "nms_iou", "bogus"]
        ): _random_value(rng)
        for _ in range(rng.randint(0, 3))
    }
    return rng.choice(
        [
            {"skill": rng.choice(["detect", "metadata", "nope", ""]), "params": params},
            rng.choice(["detect", "metadata", "", 5]),
            _random_value(rng),
        ]
    )


def _json_body(rng: random.Random, good: str) -> Any:
    if rng.random() < 0.15:
        return _random_value(rng)
    body: dict[str, Any] = {
        "images": [_random_image_entry(rng, good) for _ in range(rng.randint(0, 4))]
    }
    if rng.random() < 0.8:
        body["tasks"] = [_random_task(rng) for _ in range(rng.randint(0, 3))]
    return body


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code == 503, response.text
    assert "Traceback" not in response.text
    body = response.json()
    if response.status_code >= 400:
        assert set(body) == {"error"}
        assert isinstance(body["error"]["code"], str)
        assert isinstance(body["error"]["message"], str)
    else:
        assert body["summary"]["images"] == len(body["results"])
        assert [r["index"] for r in body["results"]] == list(range(len(body["results"])))
        for result in body["results"]:
            assert result["status"] in {"ok", "partial", "error"}


def test_random_json_bodies_never_cause_a_server_error(live_server: LiveServer) -> None:
    rng = random.Random(SEED)
    good = base64.b64encode(coco_image()).decode()
    with live_server.client() as client:
        for _ in range(150):
            body = _json_body(rng, good)
            _check(
                client.post(
                    "/v1/analyze",
                    content=json.dumps(body),
                    headers={"content-type": "application/json"},
                )
            )
        assert client.get("/healthz").status_code == 200


def test_random_multipart_and_raw_bodies_never_cause_a_server_error(
    live_server: LiveServer,
) -> None:
    rng = random.Random(SEED + 1)
    photo = coco_image()
    with live_server.client() as client:
        for _ in range(80):
            files = [
                (
                    "images",
                    (
                        rng.choice(["a.jpg", "", "../x", "\u2603.png"]),
                        photo[: rng.randint(0, len(photo))],
                        "image/jpeg",
                    ),
                )
                for _ in range(rng.randint(0, 3))
            ]
            data = {
                "tasks": rng.choice(
                    [
                        "detect",
                        "[",
                        "[{}]",
                        '[{"skill":"detect","params":[]}]',
                        "metadata,,detect",
                        '"detect"',
                        "null",
                        "x" * 70000,
                    ]
                )
            }
            _check(client.post("/v1/analyze", files=files or None, data=data))
        for _ in range(60):
            raw = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
            content_type = rng.choice(
                [
                    "multipart/form-data; boundary=xyz",
                    "multipart/form-data",
                    "application/json",
                    "text/plain",
                    "",
                    "multipart/form-data; boundary=" + "b" * 300,
                    "image/jpeg",
                ]
            )
            _check(client.post("/v1/analyze", content=raw, headers={"content-type": content_type}))
        assert client.get("/healthz").status_code == 200
