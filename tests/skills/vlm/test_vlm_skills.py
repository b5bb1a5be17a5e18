"""The vision-language skills end to end: the real app over HTTP, the stand-in VLM server."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from batchvision.core.types import DecodedImage
from batchvision.intake.decode import decode_image
from batchvision.pipeline import Pipeline
from batchvision.skills.caption import CaptionParams, CaptionSkill
from batchvision.skills.query import QueryParams, QuerySkill
from conftest import LiveServer, coco_image, make_settings
from vlm_standin import VlmStandin, run_standin, square_image

SQUARE = (400, 300, 600, 500)  # on a 1600x1200 image: sent at 768 px it is 192..288 x 144..240


def analyze(live: LiveServer, data: bytes, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    image = {"data": base64.b64encode(data).decode()}
    with live.client() as client:
        response = client.post("/v1/analyze", json={"images": [image], "tasks": tasks})
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    return dict(result)


def vlm_server(
    serve: Callable[..., LiveServer], standin: VlmStandin, **settings: Any
) -> LiveServer:
    return serve(vlm_url=standin.url, vlm_model="qwen2.5vl:7b", vlm_api_key="sekret", **settings)


def test_caption_reaches_the_backend_with_the_image_prompt_and_settings(
    serve: Callable[..., LiveServer], vlm_standin: VlmStandin
) -> None:
    live = vlm_server(serve, vlm_standin, vlm_grounding="norm1000")
    settings = {"temperature": 0.2, "top_p": 0.9, "max_tokens": 50}
    result = analyze(
        live,
        square_image(1600, 1200, SQUARE),
        [{"skill": "caption", "params": {"length": "short", "settings": settings}}],
    )
    output = result["outputs"]["caption"]
    assert output["model"] == "vlm"
    # sent at vlm_image_side 768, and its mean colour is the grey plus 1/48 of red square
    assert output["caption"].startswith("768x576 mean (")
    assert "one short sentence" in output["caption"]
    assert output["usage"]["input_tokens"] > 100 and output["usage"]["output_tokens"] > 0
    [request] = vlm_standin.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sekret"
    assert {k: request["body"][k] for k in settings} == settings
    assert request["body"]["model"] == "qwen2.5vl:7b"


def test_usage_is_absent_when_the_backend_reports_none(serve: Callable[..., LiveServer]) -> None:
    with run_standin(report_usage=False) as standin:
        live = vlm_server(serve, standin)
        result = analyze(live, square_image(64, 48, (0, 0, 8, 8)), [{"skill": "caption"}])
    assert "usage" not in result["outputs"]["caption"]
    assert result["outputs"]["caption"]["caption"].startswith("56x56 mean")  # qwen: multiples of 28


@pytest.mark.parametrize("grounding", ["qwen2.5-vl", "norm1000"])
def test_open_vocabulary_detect_and_point_come_back_in_original_pixels(
    serve: Callable[..., LiveServer], grounding: str
) -> None:
    with run_standin(grounding=grounding) as standin:
        live = vlm_server(serve, standin, vlm_grounding=grounding)
        tasks = [
            {"skill": "detect", "params": {"object": "red square"}},
            {"skill": "point", "params": {"object": "red square"}},
        ]
        result = analyze(live, square_image(1600, 1200, SQUARE), tasks)
        prompts = [r["body"]["prompt"] for r in standin.requests]
    [obj] = result["outputs"]["detect"]["objects"]
    assert obj["label"] == "red square" and obj["class_id"] == -1 and obj["score"] == 1.0
    assert obj["box"] == pytest.approx(list(SQUARE), abs=6)  # JPEG edges at 768 px, mapped back
    [point] = result["outputs"]["point"]["points"]
    assert point == pytest.approx({"x": 500, "y": 400}, abs=6)
    assert all('"red square"' in p for p in prompts)


def test_moondream_protocol_end_to_end(
    serve: Callable[..., LiveServer], vlm_standin: VlmStandin
) -> None:
    live = vlm_server(serve, vlm_standin, vlm_protocol="moondream")
    tasks = [
        {"skill": "caption", "params": {"length": "long"}},
        {"skill": "query", "params": {"question": "what colour?", "reasoning": True}},
        {"skill": "detect", "params": {"object": "square"}},
        {"skill": "point", "params": {"object": "square"}},
    ]
    result = analyze(live, square_image(1600, 1200, SQUARE), tasks)
    outputs = result["outputs"]
    assert outputs["caption"]["caption"].startswith("a long caption of 768x576")
    assert outputs["query"]["answer"].startswith("what colour? -> 768x576")
    assert outputs["query"]["reasoning"].startswith("reasoned about 768x576")
    assert outputs["query"]["usage"] == {"input_tokens": 700, "output_tokens": 12}
    assert outputs["detect"]["objects"][0]["box"] == pytest.approx(list(SQUARE), abs=6)
    assert outputs["point"]["points"][0] == pytest.approx({"x": 500, "y": 400}, abs=6)
    assert {r["md_auth"] for r in vlm_standin.requests} == {"sekret"}
    assert sorted(r["path"] for r in vlm_standin.requests) == [
        "/v1/caption",
        "/v1/detect",
        "/v1/point",
        "/v1/query",
    ]


def test_a_coco_class_runs_on_the_local_detector_unless_the_vlm_is_named(
    serve: Callable[..., LiveServer], vlm_standin: VlmStandin
) -> None:
    live = vlm_server(serve, vlm_standin)
    room = coco_image("000000000139.jpg")
    local = analyze(live, room, [{"skill": "detect", "params": {"object": "TV"}}])
    assert local["outputs"]["detect"]["model"] == "yolox-nano"
    assert {o["label"] for o in local["outputs"]["detect"]["objects"]} == {"tv"}
    points = analyze(live, room, [{"skill": "point", "params": {"object": "person"}}])
    assert (
        points["outputs"]["point"]["model"] == "yolox-nano" and points["outputs"]["point"]["points"]
    )
    assert vlm_standin.requests == []
    named = analyze(live, room, [{"skill": "detect", "params": {"object": "tv", "model": "vlm"}}])
    assert named["outputs"]["detect"]["model"] == "vlm" and len(vlm_standin.requests) == 1


def test_an_unparseable_answer_fails_that_item_quoting_the_model(
    serve: Callable[..., LiveServer], vlm_standin: VlmStandin
) -> None:
    live = vlm_server(serve, vlm_standin)
    vlm_standin.fail_next("prose")
    result = analyze(
        live,
        square_image(200, 200, (10, 10, 50, 50)),
        [{"skill": "detect", "params": {"object": "square"}}],
    )
    [error] = result["errors"]
    assert error["code"] == "processing_error" and "There is a red square" in error["message"]


def test_without_a_configured_backend_vlm_requests_are_model_unavailable(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve()
    with live.client() as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        image = {"data": base64.b64encode(square_image(64, 64, (0, 0, 8, 8))).decode()}
        for task in (
            {"skill": "caption"},
            {"skill": "detect", "params": {"object": "zebra crossing"}},
        ):
            response = client.post("/v1/analyze", json={"images": [image], "tasks": [task]})
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert (
                error["code"] == "model_unavailable" and "BATCHVISION_VLM_URL" in error["message"]
            )
    assert models["vlm"]["state"] == "missing" and "BATCHVISION_VLM_URL" in models["vlm"]["detail"]


def test_each_vlm_call_costs_credits_per_vlm_call_beside_the_image(
    serve: Callable[..., LiveServer], vlm_standin: VlmStandin
) -> None:
    live = vlm_server(serve, vlm_standin, auth="required", credits_per_vlm_call=3)
    store = KeyStore(make_engine(live.settings))
    key = store.create("vlm-buyer", credits=100)
    image = {"data": base64.b64encode(square_image(64, 64, (0, 0, 8, 8))).decode()}
    bad = {"data": "bm90IGFuIGltYWdl"}  # fails before inference: handed back whole
    tasks = [{"skill": "caption"}, {"skill": "query", "params": {"question": "what?"}}, "metadata"]
    with live.client() as client:
        response = client.post(
            "/v1/analyze",
            json={"images": [image, bad], "tasks": tasks},
            headers={"Authorization": f"Bearer {key.secret}"},
        )
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["ok", "error"]
    info = store.get(key.info.id)
    assert info is not None and info.credits == 100 - (1 + 2 * 3)  # one image, two VLM calls


def test_a_vlm_call_that_failed_is_handed_back_and_the_image_still_paid(
    serve: Callable[..., LiveServer], vlm_standin: VlmStandin
) -> None:
    live = vlm_server(serve, vlm_standin, auth="required", credits_per_vlm_call=3, vlm_attempts=1)
    store = KeyStore(make_engine(live.settings))
    key = store.create("vlm-unlucky", credits=100)
    vlm_standin.fail_next("500")
    image = {"data": base64.b64encode(square_image(64, 64, (0, 0, 8, 8))).decode()}
    with live.client() as client:
        response = client.post(
            "/v1/analyze",
            json={"images": [image], "tasks": ["caption", "metadata"]},
            headers={"Authorization": f"Bearer {key.secret}"},
        )
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert [e["skill"] for e in result["errors"]] == ["caption"], result
    info = store.get(key.info.id)
    assert info is not None and info.credits == 100 - 1  # the image; not the failed call


def _decoded(data: bytes) -> DecodedImage:
    return decode_image(data, max_pixels=10**8, target_side=None)


def test_one_query_over_several_images_and_streams(tmp_path: Path, vlm_standin: VlmStandin) -> None:
    pipeline = Pipeline(make_settings(tmp_path, vlm_url=vlm_standin.url))
    query = pipeline.skills["query"]
    caption = pipeline.skills["caption"]
    assert isinstance(query, QuerySkill) and isinstance(caption, CaptionSkill)
    images = [
        _decoded(square_image(100, 100, (0, 0, 10, 10))),
        _decoded(square_image(300, 200, (0, 0, 9, 9))),
    ]

    async def go() -> tuple[Any, str, str]:
        answer = await query.ask(images, QueryParams(question="how many?"))
        chunks = [c async for c in caption.stream(images[0], CaptionParams(length="short"))]
        asked = [c async for c in query.stream(images[1:], QueryParams(question="size?"))]
        await pipeline.close()
        return answer, "".join(chunks), "".join(asked)

    answer, streamed, asked = asyncio.run(go())
    assert answer["answer"].startswith("112x112 mean") and "; 308x196 mean" in answer["answer"]
    assert streamed.startswith("112x112 mean") and "one short sentence" in streamed
    assert asked.startswith("308x196 mean") and asked.endswith("size?")


def test_a_stream_cut_in_the_middle_is_an_error(tmp_path: Path, vlm_standin: VlmStandin) -> None:
    from batchvision.core.errors import BatchVisionError

    pipeline = Pipeline(make_settings(tmp_path, vlm_url=vlm_standin.url, vlm_protocol="moondream"))
    caption = pipeline.skills["caption"]
    assert isinstance(caption, CaptionSkill)
    vlm_standin.fail_next("cut")
    image = _decoded(square_image(100, 100, (0, 0, 10, 10)))

    async def go() -> list[str]:
        got: list[str] = []
        try:
            async for chunk in caption.stream(image, CaptionParams()):
                got.append(chunk)
        finally:
            await pipeline.close()
        return got

    with pytest.raises(BatchVisionError, match="ended before completed"):
        asyncio.run(go())


def test_skills_are_listed_with_their_parameter_schemas(live_server: LiveServer) -> None:
    with live_server.client() as client:
        skills = {s["name"]: s for s in client.get("/v1/skills").json()["skills"]}
    assert "question" in skills["query"]["params"]["properties"]
    assert "length" in skills["caption"]["params"]["properties"]
    assert "object" in skills["point"]["params"]["properties"]
    assert "object" in skills["detect"]["params"]["properties"]
