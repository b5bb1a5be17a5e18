"""Every error on a `/vision/` path is a google.rpc Status `{code, message, details}`: unknown
paths, wrong methods, a body that is not JSON, an oversized body, an overloaded server and a bug
alike, over real HTTP; a 5xx carries no internal detail."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from yandex_support import ROUTE, assert_rpc_error, b64, post, render, spec, words_of

from batchvision.api.compat.yandex.errors import RPC_CODES, RpcCode
from batchvision.core.errors import ErrorCode
from conftest import LiveServer


def _body() -> bytes:
    return json.dumps({"analyzeSpecs": [spec(b64(render("typed", size=(200, 80))))]}).encode()


def _rpc(response: httpx.Response, status: int, code: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert_rpc_error(body, code)
    message: str = body["message"]
    return message


@pytest.mark.parametrize("path", ["/vision", "/vision/", "/vision/v1/nope", "/vision/v2/x/y"])
def test_unknown_paths_under_vision_are_not_found(live_server: LiveServer, path: str) -> None:
    with live_server.client() as client:
        response = client.post(path, json={"analyzeSpecs": []})
    _rpc(response, 404, 5)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_a_wrong_method_on_batch_analyze_is_unimplemented(
    live_server: LiveServer, method: str
) -> None:
    with live_server.client() as client:
        response = client.request(method, ROUTE)
    _rpc(response, 405, 12)
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",  # what `curl -d @body.json` sends without -H
        "multipart/form-data; boundary=x",
        "application/xml",
    ],
)
def test_a_body_that_is_not_json_is_415_invalid_argument(
    live_server: LiveServer, content_type: str
) -> None:
    with live_server.client() as client:
        response = client.post(ROUTE, content=_body(), headers={"content-type": content_type})
    assert "application/json" in _rpc(response, 415, 3)


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json"},
        {"content-type": "Application/JSON; charset=utf-8"},
        {"content-type": "application/vnd.api+json"},
        {},  # no Content-Type at all: read as JSON, as a gRPC gateway does
    ],
)
def test_json_bodies_are_read_whatever_json_type_they_name(
    live_server: LiveServer, headers: dict[str, str]
) -> None:
    with live_server.client() as client:
        response = client.post(ROUTE, content=_body(), headers=headers)
    assert response.status_code == 200, response.text
    feature_result = response.json()["results"][0]["results"][0]
    assert [w.lower() for w in words_of(feature_result)] == ["typed"]


def test_an_oversized_body_is_413_invalid_argument(serve: Callable[..., LiveServer]) -> None:
    live = serve(max_request_bytes=4096)
    with live.client() as client:
        declared = post(client, {"analyzeSpecs": [spec("A" * 8192)]})
        streamed = client.post(
            ROUTE,
            content=iter([b'{"analyzeSpecs": [', b" " * 8192, b"]}"]),
            headers={"content-type": "application/json"},
        )
    for response in (declared, streamed):
        assert "4096" in _rpc(response, 413, 3)


def test_overload_is_503_unavailable_with_retry_after(serve: Callable[..., LiveServer]) -> None:
    """Eight clients at once against room for two images: some are refused with UNAVAILABLE and
    the engine's advice (a 5xx whose message is meant for the client), the rest are served."""
    live = serve(max_queued_images=2, retry_after_s=3)
    body = {"analyzeSpecs": [spec(b64(render("busy " * 12, size=(1600, 120))))] * 2}
    callers = 8
    barrier = threading.Barrier(callers)

    def request(_: int) -> httpx.Response:
        with live.client() as own:
            own.get("/healthz")  # connect first so the barrier lines up the POSTs themselves
            barrier.wait(timeout=30)
            return post(own, body)

    with ThreadPoolExecutor(callers) as pool:
        responses = list(pool.map(request, range(callers)))
    refused = [r for r in responses if r.status_code == 503]
    assert refused, [r.status_code for r in responses]
    assert any(r.status_code == 200 for r in responses)
    for response in refused:
        assert "retry" in _rpc(response, 503, 14)
        assert response.headers["retry-after"] == "3"


def test_a_bug_is_a_bare_500_internal_and_the_server_goes_on(
    serve: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure batchvision did not expect (simulated by making the pipeline raise) answers
    INTERNAL with a generic message: no exception text, no traceback."""
    live = serve()
    pipeline = live.server.config.app.state.services.pipeline

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internal detail at /srv/batchvision/ocr.py")

    monkeypatch.setattr(pipeline, "analyze", broken)
    with live.client() as client:
        response = client.post(ROUTE, content=_body(), headers={"content-type": "application/json"})
        assert _rpc(response, 500, 13) == "internal server error"
        assert "secret" not in response.text
        assert "Traceback" not in response.text
        monkeypatch.undo()
        again = client.post(ROUTE, content=_body(), headers={"content-type": "application/json"})
    assert again.status_code == 200, again.text


def test_every_error_code_has_a_google_rpc_code() -> None:
    assert set(RPC_CODES) == set(ErrorCode)
    assert RPC_CODES[ErrorCode.NOT_FOUND] is RpcCode.NOT_FOUND
    assert RPC_CODES[ErrorCode.METHOD_NOT_ALLOWED] is RpcCode.UNIMPLEMENTED
    assert RPC_CODES[ErrorCode.UNSUPPORTED_FORMAT] is RpcCode.INVALID_ARGUMENT
    assert RPC_CODES[ErrorCode.INTERNAL_ERROR] is RpcCode.INTERNAL
