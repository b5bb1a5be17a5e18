"""The native API's small routes: health, readiness, skills, models, OpenAPI, errors and
request ids."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from batchvision.models.ocr import LANGUAGES, PPOCR_LANGUAGES
from batchvision.models.ocr.tesseract import find_tessdata
from conftest import MODELS, LiveServer, coco_image

CARD_NAMES = {"yolox-nano", "deimv2-atto", "yolov8n-int8-agpl"}
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


def _models(client: httpx.Client) -> dict[str, dict[str, object]]:
    response = client.get("/v1/models")
    assert response.status_code == 200
    return {m["name"]: m for m in response.json()["models"]}


def test_healthz(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["content-type"].startswith("application/json")


_UNCONFIGURED_VLM = {
    "configured": False,
    "detail": "no server configured: set BATCHVISION_VLM_URL "
    "(and BATCHVISION_VLM_PROTOCOL, BATCHVISION_VLM_MODEL)",
}


def test_readyz_reports_loaded_models(serve: Callable[..., LiveServer]) -> None:
    live = serve()
    with live.client() as client:
        before = client.get("/readyz")
        assert before.status_code == 200
        ready = before.json()
        # No VLM backend is configured here: it is listed, and readiness does not hang on it.
        assert ready.pop("backends") == {"vlm": _UNCONFIGURED_VLM}
        assert ready == {"status": "ready", "in_flight_images": 0, "loaded_models": []}
        analyzed = client.post(
            "/v1/analyze", files=[("images", ("a.jpg", coco_image(), "image/jpeg"))]
        )
        assert analyzed.status_code == 200
        after = client.get("/readyz")
        models = _models(client)
    assert after.status_code == 200
    assert after.json() == {
        "status": "ready",
        "backends": {"vlm": _UNCONFIGURED_VLM},
        "in_flight_images": 0,
        "loaded_models": ["yolox-nano"],
    }
    assert models["yolox-nano"]["loaded"] is True
    assert models["deimv2-atto"]["loaded"] is False


def test_skills_lists_detect_and_metadata(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = client.get("/v1/skills")
    assert response.status_code == 200
    skills = {s["name"]: s for s in response.json()["skills"]}
    assert {"detect", "metadata"} <= set(skills)
    for skill in skills.values():
        assert skill["description"]
        assert skill["params"]["type"] == "object"
    detect = skills["detect"]["params"]["properties"]
    assert {"model", "threshold", "classes", "max_detections", "nms_iou"} <= set(detect)
    assert detect["threshold"]["minimum"] == 0
    assert detect["threshold"]["maximum"] == 1
    assert detect["model"]["default"] == "yolox-nano"
    assert skills["detect"]["params"].get("additionalProperties") is False
    assert skills["metadata"]["params"].get("properties", {}) == {}


def test_models_installed_with_shared_dir(live_server: LiveServer) -> None:
    with live_server.client() as client:
        models = _models(client)
    assert set(models) >= CARD_NAMES
    nano = models["yolox-nano"]
    assert nano["state"] == "installed"
    assert nano["task"] == "detect"
    assert nano["license"] == "Apache-2.0"
    assert nano["input_size"] == [416, 416]
    assert nano["classes"] == 80
    assert nano["path"] == str(MODELS / "yolox_nano" / "yolox_nano.onnx")
    assert str(nano["sha256"]).startswith("695e750a")
    assert models["yolov8n-int8-agpl"]["license"] == "AGPL-3.0"
    local = {name: m for name, m in models.items() if m["task"] != "vlm"}
    assert all(m["state"] == "installed" for m in local.values())
    # the default vision-language backend is a server to configure, listed as missing till then
    assert models["vlm"]["state"] == "missing" and "BATCHVISION_VLM_URL" in models["vlm"]["detail"]


def test_models_lists_the_ocr_engines_with_their_language_packs(live_server: LiveServer) -> None:
    tessdata = find_tessdata()
    assert tessdata is not None, "tests need Debian's tesseract-ocr language packs"
    packs = {path.stem for path in tessdata.glob("*.traineddata")}
    with live_server.client() as client:
        models = _models(client)
    tesseract, ppocr = models["tesseract"], models["ppocr"]
    for model, family in ((tesseract, "tesseract"), (ppocr, "ppocr")):
        assert (model["task"], model["family"], model["state"]) == ("ocr", family, "installed")
        assert model["path"] is None and model["input_size"] is None
        assert model["loaded"] is False
    # Tesseract reads exactly the languages whose packs are installed here
    assert tesseract["languages"] == [c for c, lang in LANGUAGES.items() if lang.tesseract in packs]
    assert {"en", "ru"} <= set(tesseract["languages"])
    assert "tesseract" in tesseract["detail"].lower()
    assert ppocr["languages"] == sorted(PPOCR_LANGUAGES)
    assert "rapidocr" in ppocr["detail"]
    assert models["yolox-nano"]["languages"] is None


def test_models_missing_with_empty_dir(serve: Callable[..., LiveServer], tmp_path: Path) -> None:
    empty = tmp_path / "empty-models"
    empty.mkdir()
    live = serve(model_dirs=[empty])
    with live.client() as client:
        models = _models(client)
    assert set(models) >= CARD_NAMES
    for model in (models[name] for name in CARD_NAMES):
        assert model["state"] == "missing"
        assert model["path"] is None
        assert model["loaded"] is False
        assert model["url"]  # where `models pull` would fetch it from


def test_checksum_mismatch_is_reported_and_refused(
    serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    models_dir = tmp_path / "tampered"
    (models_dir / "yolox_nano").mkdir(parents=True)
    original = (MODELS / "yolox_nano" / "yolox_nano.onnx").read_bytes()
    (models_dir / "yolox_nano" / "yolox_nano.onnx").write_bytes(original[:-1] + b"\x00")
    shutil.copytree(MODELS / "deimv2_atto", models_dir / "deimv2_atto")
    live = serve(model_dirs=[models_dir])
    with live.client() as client:
        models = _models(client)
        refused = client.post(
            "/v1/analyze", files=[("images", ("a.jpg", coco_image(), "image/jpeg"))]
        )
        other = client.post(
            "/v1/analyze",
            files=[("images", ("a.jpg", coco_image(), "image/jpeg"))],
            data={"tasks": '[{"skill": "detect", "params": {"model": "deimv2-atto"}}]'},
        )
    assert models["yolox-nano"]["state"] == "checksum_mismatch"
    assert models["deimv2-atto"]["state"] == "installed"
    assert models["yolov8n-int8-agpl"]["state"] == "missing"
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "model_unavailable"
    assert "sha256" in error["message"]
    assert "batchvision models pull yolox-nano" in error["message"]
    assert other.status_code == 200
    assert other.json()["results"][0]["status"] == "ok"


def test_openapi_documents_analyze(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["info"]["title"] == "batchvision"
    analyze = spec["paths"]["/v1/analyze"]["post"]
    content = analyze["requestBody"]["content"]
    assert set(content) >= {"multipart/form-data", "application/json"}
    assert "images" in content["multipart/form-data"]["schema"]["properties"]
    assert "tasks" in content["application/json"]["schema"]["properties"]
    for path in ("/v1/skills", "/v1/models", "/healthz", "/readyz"):
        assert "get" in spec["paths"][path]


def test_docs_page(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "openapi.json" in response.text


def test_unknown_route_is_json_404(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not Found"}}
    assert GENERATED_ID.match(response.headers["x-request-id"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/analyze"),
        ("DELETE", "/v1/analyze"),
        ("POST", "/healthz"),
        ("PUT", "/v1/skills"),
    ],
)
def test_wrong_method_is_json_405(live_server: LiveServer, method: str, path: str) -> None:
    with live_server.client() as client:
        response = client.request(method, path)
    assert response.status_code == 405
    body = response.json()
    assert body["error"]["code"] == "method_not_allowed"
    assert body["error"]["message"]
    assert "allow" in response.headers
    assert response.headers.get("x-request-id")


@pytest.mark.parametrize("path", ["/healthz", "/v1/skills", "/v1/missing"])
def test_request_id_echoed_when_well_formed(live_server: LiveServer, path: str) -> None:
    with live_server.client() as client:
        response = client.get(path, headers={"X-Request-ID": "abc-123"})
        long_ok = client.get(path, headers={"X-Request-ID": "a.b:c_d-" + "9" * 120})
    assert response.headers["x-request-id"] == "abc-123"
    assert long_ok.headers["x-request-id"] == "a.b:c_d-" + "9" * 120
    # exactly one id header, not the client's plus ours
    assert response.headers.get_list("x-request-id") == ["abc-123"]


@pytest.mark.parametrize(
    "bad_id", ["x" * 300, "has spaces in it", "semi;colon", 'quote"d', "", "ünïcode"]
)
def test_request_id_replaced_when_malformed(live_server: LiveServer, bad_id: str) -> None:
    with live_server.client() as client:
        response = client.get("/healthz", headers={"X-Request-ID": bad_id.encode("utf-8")})
    assert response.status_code == 200
    issued = response.headers.get_list("x-request-id")
    assert len(issued) == 1
    assert issued[0] != bad_id
    assert GENERATED_ID.match(issued[0])


def test_every_response_gets_a_fresh_request_id(live_server: LiveServer) -> None:
    with live_server.client() as client:
        ids = {client.get("/healthz").headers["x-request-id"] for _ in range(5)}
        error = client.post("/v1/analyze", content=b"x", headers={"content-type": "text/plain"})
    assert len(ids) == 5
    assert all(GENERATED_ID.match(i) for i in ids)
    assert error.status_code == 415
    assert GENERATED_ID.match(error.headers["x-request-id"])


def test_unexpected_failure_is_generic_500_with_request_id(
    serve: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (simulated by making the pipeline raise) must give the generic JSON 500, still
    carrying the request id, and leave the server and the connection usable."""
    live = serve()
    pipeline = live.server.config.app.state.services.pipeline

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(pipeline, "analyze", broken)
    with live.client() as client:
        response = client.post(
            "/v1/analyze",
            files=[("images", ("a.jpg", coco_image(), "image/jpeg"))],
            headers={"X-Request-ID": "fault-1"},
        )
        assert response.status_code == 500
        assert response.json() == {
            "error": {"code": "internal_error", "message": "internal server error"}
        }
        assert "secret" not in response.text
        assert "Traceback" not in response.text
        assert response.headers["x-request-id"] == "fault-1"
        # the same keep-alive connection still works
        assert client.get("/healthz").status_code == 200
    monkeypatch.undo()
    with live.client() as client:
        ok = client.post("/v1/analyze", files=[("images", ("a.jpg", coco_image(), "image/jpeg"))])
    assert ok.status_code == 200
