"""`POST /v1/analyze` end to end: the real app over real HTTP, real ONNX models, real COCO
photos."""

from __future__ import annotations

import base64
import json
import random
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchvision.models.cards import shipped_labels
from conftest import COCO_IMAGES, LiveServer, coco_image, coco_names, error_of

COCO80 = set(shipped_labels("coco80"))
ROOM = "000000000139.jpg"  # a living room: a person, two tvs, chairs, a clock ...


# --- helpers ----------------------------------------------------------------------------------


def post_multipart(
    client: httpx.Client, images: list[tuple[str, bytes]], tasks: Any = None
) -> httpx.Response:
    files = [("images", (name, data, "image/jpeg")) for name, data in images]
    data = (
        {} if tasks is None else {"tasks": tasks if isinstance(tasks, str) else json.dumps(tasks)}
    )
    return client.post("/v1/analyze", files=files, data=data)


def post_json(
    client: httpx.Client, images: list[dict[str, Any]], tasks: Any = None
) -> httpx.Response:
    body: dict[str, Any] = {"images": images}
    if tasks is not None:
        body["tasks"] = tasks
    return client.post("/v1/analyze", json=body)


def detect_task(**params: Any) -> list[dict[str, Any]]:
    return [{"skill": "detect", "params": params}]


def ok_json(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def objects_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    assert result["status"] == "ok", result
    objects: list[dict[str, Any]] = result["outputs"]["detect"]["objects"]
    return objects


def labels_of(result: dict[str, Any]) -> set[str]:
    return {o["label"] for o in objects_of(result)}


def check_detections(result: dict[str, Any], threshold: float = 0.25) -> list[dict[str, Any]]:
    """Every box lies inside the image, normalised boxes match pixel ones, labels are COCO names,
    scores respect the threshold."""
    width, height = result["image"]["width"], result["image"]["height"]
    objects = objects_of(result)
    for obj in objects:
        x1, y1, x2, y2 = obj["box"]
        assert 0 <= x1 <= x2 <= width, obj
        assert 0 <= y1 <= y2 <= height, obj
        expected = [x1 / width, y1 / height, x2 / width, y2 / height]
        assert obj["box_normalized"] == pytest.approx(expected, abs=1e-4)
        assert obj["label"] in COCO80
        assert 0 <= obj["class_id"] < 80
        assert threshold <= obj["score"] <= 1.0
    return objects


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# --- formats ----------------------------------------------------------------------------------


def test_multipart_finds_person_and_tv(live_server: LiveServer) -> None:
    with live_server.client() as client:
        body = ok_json(post_multipart(client, [(ROOM, coco_image(ROOM))], detect_task()))
    assert body["summary"] == {"images": 1, "succeeded": 1, "failed": 0}
    [result] = body["results"]
    assert result["filename"] == ROOM
    assert result["image"] == {
        "width": 640,
        "height": 426,
        "format": "JPEG",
        "file_size": len(coco_image(ROOM)),
    }
    objects = check_detections(result)
    assert {"person", "tv"} <= {o["label"] for o in objects}
    assert result["outputs"]["detect"]["model"] == "yolox-nano"
    # the big tv on the left (ground truth 7.0, 167.8, 156.4, 262.6) is found where it is
    tvs = [o for o in objects if o["label"] == "tv"]
    assert max(iou(o["box"], [7.0, 167.8, 156.4, 262.6]) for o in tvs) > 0.7


def test_json_base64_and_data_uri_match_multipart(live_server: LiveServer) -> None:
    data = coco_image(ROOM)
    encoded = base64.b64encode(data).decode()
    with live_server.client() as client:
        multipart = ok_json(post_multipart(client, [(ROOM, data)], detect_task()))
        as_json = ok_json(
            post_json(
                client,
                [
                    {"data": encoded, "id": "plain"},
                    {"data": f"data:image/jpeg;base64,{encoded}", "id": "uri", "filename": "x.jpg"},
                    encoded,  # a bare string is accepted too
                ],
                detect_task(),
            )
        )
    expected = multipart["results"][0]["outputs"]["detect"]
    assert [r["id"] for r in as_json["results"]] == ["plain", "uri", None]
    assert as_json["results"][1]["filename"] == "x.jpg"
    for result in as_json["results"]:
        check_detections(result)
        assert {"person", "tv"} <= labels_of(result)
        assert result["outputs"]["detect"] == expected


def test_tasks_as_comma_string_and_default(live_server: LiveServer) -> None:
    with live_server.client() as client:
        both = ok_json(post_multipart(client, [(ROOM, coco_image(ROOM))], "detect, metadata"))
        default = ok_json(post_multipart(client, [(ROOM, coco_image(ROOM))]))
    assert [t["skill"] for t in both["tasks"]] == ["detect", "metadata"]
    assert set(both["results"][0]["outputs"]) == {"detect", "metadata"}
    assert [t["skill"] for t in default["tasks"]] == ["detect"]
    assert "person" in labels_of(default["results"][0])


# --- parameters -------------------------------------------------------------------------------


def test_classes_filter(live_server: LiveServer) -> None:
    with live_server.client() as client:
        body = ok_json(
            post_multipart(
                client, [(ROOM, coco_image(ROOM))], detect_task(classes=["person", "TV"])
            )
        )
    labels = [o["label"] for o in objects_of(body["results"][0])]
    assert labels
    assert set(labels) == {"person", "tv"}
    assert body["tasks"][0]["params"]["classes"] == ["person", "TV"]


def test_max_detections_and_threshold(live_server: LiveServer) -> None:
    image = [(ROOM, coco_image(ROOM))]
    with live_server.client() as client:
        low = ok_json(post_multipart(client, image, detect_task(threshold=0.05)))
        capped = ok_json(
            post_multipart(client, image, detect_task(threshold=0.05, max_detections=3))
        )
        high = ok_json(post_multipart(client, image, detect_task(threshold=0.6)))
    all_low = check_detections(low["results"][0], threshold=0.05)
    assert len(all_low) > 3
    top3 = check_detections(capped["results"][0], threshold=0.05)
    assert len(top3) == 3
    # the cap keeps the best-scoring ones
    best = sorted((o["score"] for o in all_low), reverse=True)[:3]
    assert sorted((o["score"] for o in top3), reverse=True) == best
    strict = check_detections(high["results"][0], threshold=0.6)
    assert 0 < len(strict) < len(all_low)
    assert all(o["score"] >= 0.6 for o in strict)
    assert [o for o in all_low if o["score"] >= 0.6] == strict


def test_unknown_class_is_invalid_parameter(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = post_multipart(
            client, [(ROOM, coco_image(ROOM))], detect_task(classes=["unicorn"])
        )
    assert "unicorn" in error_of(response, 422, "invalid_parameter")


def test_unknown_skill(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = post_multipart(client, [(ROOM, coco_image(ROOM))], [{"skill": "levitate"}])
        as_string = post_multipart(client, [(ROOM, coco_image(ROOM))], "detect,levitate")
    assert "levitate" in error_of(response, 400, "unknown_skill")
    assert "detect" in error_of(as_string, 400, "unknown_skill")  # names what is available


@pytest.mark.parametrize(
    "tasks",
    [
        "detect,detect",
        [{"skill": "detect"}, {"skill": "detect", "params": {"model": "deimv2-atto"}}],
    ],
)
def test_same_skill_twice_is_refused(live_server: LiveServer, tasks: Any) -> None:
    """Outputs are keyed by skill name, so a second detect would silently replace the first."""
    with live_server.client() as client:
        response = post_multipart(client, [(ROOM, coco_image(ROOM))], tasks)
    assert "detect" in error_of(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "params",
    [
        {"threshold": 2},
        {"threshold": True},
        {"threshold": "0.5"},
        {"threshold": "high"},
        {"max_detections": 0},
        {"nms_iou": 0},
        {"classes": []},
        {"colour": "red"},  # unknown parameter names are refused, not ignored
        {"model": "no-such-model"},
    ],
)
def test_bad_params_are_invalid_parameter(live_server: LiveServer, params: dict[str, Any]) -> None:
    with live_server.client() as client:
        response = post_multipart(client, [(ROOM, coco_image(ROOM))], detect_task(**params))
    error_of(response, 422, "invalid_parameter")


def test_params_not_an_object(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = post_json(
            client,
            [{"data": base64.b64encode(coco_image(ROOM)).decode()}],
            [{"skill": "detect", "params": [1, 2]}],
        )
    error_of(response, 422, "invalid_parameter")


def test_missing_model_is_model_unavailable(
    serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    empty = tmp_path / "no-models"
    empty.mkdir()
    live = serve(model_dirs=[empty])
    with live.client() as client:
        response = post_multipart(
            client, [(ROOM, coco_image(ROOM))], detect_task(model="deimv2-atto")
        )
        default = post_multipart(client, [(ROOM, coco_image(ROOM))])
        metadata_only = post_multipart(client, [(ROOM, coco_image(ROOM))], "metadata")
    message = error_of(response, 503, "model_unavailable")
    assert "batchvision models pull deimv2-atto" in message
    assert "batchvision models pull yolox-nano" in error_of(default, 503, "model_unavailable")
    # a skill that needs no model still works on that server
    assert ok_json(metadata_only)["results"][0]["outputs"]["metadata"]["width"] == 640


# --- accuracy against COCO ground truth -------------------------------------------------------

COMMON_CLASSES = frozenset(
    {
        "person", "bicycle", "car", "motorcycle", "bus", "truck", "train", "airplane",
        "dog", "cat", "horse", "elephant", "bear", "zebra", "giraffe", "cow", "sheep",
        "tv", "laptop", "bed", "couch", "toilet", "refrigerator", "pizza",
    }
)  # fmt: skip
MIN_AREA = 5000.0


def test_detections_match_coco_labels(live_server: LiveServer) -> None:
    labels = json.loads((COCO_IMAGES.parent / "labels.json").read_text())
    names = coco_names(10)
    files = [(name, coco_image(name)) for name in names]
    with live_server.client() as client:
        body = ok_json(post_multipart(client, files, detect_task()))
    matched = total = 0
    for name, result in zip(names, body["results"], strict=True):
        truth = labels[name]
        assert (result["image"]["width"], result["image"]["height"]) == (
            truth["width"],
            truth["height"],
        )
        predictions = check_detections(result)
        for obj in truth["objects"]:
            x1, y1, x2, y2 = obj["bbox_xyxy"]
            if obj["class"] not in COMMON_CLASSES or (x2 - x1) * (y2 - y1) <= MIN_AREA:
                continue
            total += 1
            same_class = [p["box"] for p in predictions if p["label"] == obj["class"]]
            if any(iou(box, obj["bbox_xyxy"]) >= 0.5 for box in same_class):
                matched += 1
    assert total >= 15, "too few ground-truth objects for a meaningful recall"
    recall = matched / total
    print(f"yolox-nano recall on {names[0]}..{names[-1]}: {matched}/{total} = {recall:.3f}")
    assert recall >= 0.6


# --- ordering, ids, metadata, timings ---------------------------------------------------------


def test_results_in_request_order_with_ids(live_server: LiveServer) -> None:
    names = coco_names(5)
    images = [
        {"data": base64.b64encode(coco_image(n)).decode(), "id": f"img-{i}", "filename": n}
        for i, n in enumerate(names)
    ]
    images[2]["id"] = 42  # integer ids are echoed as strings
    with live_server.client() as client:
        body = ok_json(post_json(client, images, [{"skill": "detect"}, {"skill": "metadata"}]))
    results = body["results"]
    assert [r["index"] for r in results] == list(range(5))
    assert [r["id"] for r in results] == ["img-0", "img-1", "42", "img-3", "img-4"]
    assert [r["filename"] for r in results] == names
    assert body["summary"] == {"images": 5, "succeeded": 5, "failed": 0}
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])  # the generated request id
    assert body["timings_ms"]["total"] > 0
    for name, result in zip(names, results, strict=True):
        assert result["status"] == "ok"
        assert result["errors"] == []
        meta = result["outputs"]["metadata"]
        assert meta["format"] == "JPEG"
        assert meta["file_size"] == len(coco_image(name))
        assert (meta["width"], meta["height"]) == (
            result["image"]["width"],
            result["image"]["height"],
        )
        assert set(result["timings_ms"]) >= {"decode", "detect", "metadata"}
        assert all(v >= 0 for v in result["timings_ms"].values())


def test_response_id_is_request_id(live_server: LiveServer) -> None:
    with live_server.client(headers={"X-Request-ID": "analyze-123"}) as client:
        response = post_multipart(client, [(ROOM, coco_image(ROOM))])
    assert ok_json(response)["id"] == "analyze-123"
    assert response.headers["x-request-id"] == "analyze-123"


# --- batch grouping must not change results (MegaDetector-style) ------------------------------


def _detect_outputs(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [r["outputs"]["detect"] for r in body["results"]]


def assert_same_detections(a: dict[str, Any], b: dict[str, Any], where: str) -> None:
    assert a["model"] == b["model"]
    assert [o["label"] for o in a["objects"]] == [o["label"] for o in b["objects"]], where
    for x, y in zip(a["objects"], b["objects"], strict=True):
        assert x["box"] == pytest.approx(y["box"], abs=1e-3), where
        assert x["score"] == pytest.approx(y["score"], abs=1.0001e-4), where


def _batcher_runs(live: LiveServer) -> int:
    pipeline = live.server.config.app.state.services.pipeline
    runs: int = pipeline.engine.batcher("yolox-nano").batches_run
    return runs


@pytest.mark.parametrize("max_batch_size", [8, 1])
def test_regrouping_gives_identical_results(
    serve: Callable[..., LiveServer], max_batch_size: int
) -> None:
    live = serve(max_batch_size=max_batch_size, max_wait_ms=20)
    names = coco_names(12)
    data = {n: coco_image(n) for n in names}
    tasks = detect_task(threshold=0.2)

    with live.client() as client:
        one = _detect_outputs(ok_json(post_multipart(client, [(n, data[n]) for n in names], tasks)))
        assert len(one) == 12
        runs_after_one = _batcher_runs(live)

        threes: list[dict[str, Any]] = []
        for start in range(0, 12, 4):
            chunk = names[start : start + 4]
            threes += _detect_outputs(
                ok_json(post_multipart(client, [(n, data[n]) for n in chunk], tasks))
            )

        order = list(range(12))
        random.Random(1234).shuffle(order)
        shuffled_body = ok_json(
            post_multipart(client, [(names[i], data[names[i]]) for i in order], tasks)
        )
        assert [r["filename"] for r in shuffled_body["results"]] == [names[i] for i in order]
        shuffled = [{}] * 12
        for i, output in zip(order, _detect_outputs(shuffled_body), strict=True):
            shuffled[i] = output

    barrier = threading.Barrier(12)

    def single(name: str) -> dict[str, Any]:
        with live.client() as own:
            barrier.wait(timeout=30)
            return _detect_outputs(ok_json(post_multipart(own, [(name, data[name])], tasks)))[0]

    before_singles = _batcher_runs(live)
    with ThreadPoolExecutor(12) as pool:
        singles = list(pool.map(single, names))
    single_runs = _batcher_runs(live) - before_singles

    for i, name in enumerate(names):
        assert one[i]["objects"], f"{name}: nothing detected, the comparison would be vacuous"
        for label, other in (
            ("3x4", threes[i]),
            ("shuffled", shuffled[i]),
            ("singles", singles[i]),
        ):
            assert_same_detections(one[i], other, f"{name} {label}")

    if max_batch_size == 1:
        # every model call took exactly one image
        assert runs_after_one == 12
        assert single_runs == 12
    else:
        # 12 images need at least two model calls of at most 8; concurrent requests merge
        assert 2 <= runs_after_one < 12
        assert single_runs < 12


# --- concurrency ------------------------------------------------------------------------------


def test_concurrent_requests_all_succeed(live_server: LiveServer) -> None:
    names = coco_names(32)
    pairs = [names[i : i + 2] for i in range(0, 32, 2)]
    barrier = threading.Barrier(len(pairs))

    def request(pair: list[str]) -> dict[str, Any]:
        with live_server.client() as client:
            barrier.wait(timeout=30)
            return ok_json(post_multipart(client, [(n, coco_image(n)) for n in pair]))

    with ThreadPoolExecutor(len(pairs)) as pool:
        bodies = list(pool.map(request, pairs))
    assert len(bodies) == 16
    for pair, body in zip(pairs, bodies, strict=True):
        assert [r["filename"] for r in body["results"]] == pair
        assert body["summary"] == {"images": 2, "succeeded": 2, "failed": 0}
        for result in body["results"]:
            check_detections(result)
    assert sum(len(objects_of(r)) for b in bodies for r in b["results"]) > 32


# --- other detectors --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["yolov8n-int8-agpl", "deimv2-atto"])
def test_other_models(live_server: LiveServer, model: str) -> None:
    with live_server.client() as client:
        body = ok_json(post_multipart(client, [(ROOM, coco_image(ROOM))], detect_task(model=model)))
    result = body["results"][0]
    assert result["outputs"]["detect"]["model"] == model
    objects = check_detections(result)
    assert objects
    if model == "yolov8n-int8-agpl":
        assert "person" in {o["label"] for o in objects}
    with live_server.client() as client:
        loaded = client.get("/readyz").json()["loaded_models"]
    assert model in loaded


@pytest.mark.parametrize(
    "tasks",
    [
        [{"skill": "s" * 1_000_000}],  # unknown skill
        detect_task(model="m" * 1_000_000),  # unknown model
        detect_task(classes=["c" * 1_000_000]),  # unknown class
        [{"skill": "detect", "params": {"k" * 1_000_000: 1}}],  # unknown parameter
        [{"skill": "animals", "params": {"classifier": "a" * 1_000_000}}],  # unknown classifier
    ],
)
def test_errors_echo_at_most_200_characters_of_client_text(
    live_server: LiveServer, tasks: list[dict[str, Any]]
) -> None:
    image = {"id": "a", "data": base64.b64encode(coco_image()).decode()}
    with live_server.client() as client:
        response = post_json(client, [image], tasks)
    assert 400 <= response.status_code < 500, response.text[:300]
    message = response.json()["error"]["message"]
    assert len(response.content) < 2_000  # was over 1 MB: the whole name, echoed
    assert "more characters)" in message
