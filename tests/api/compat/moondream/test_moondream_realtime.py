"""Moondream's real-time API (`/v1/caption`, `/v1/query`, `/v1/detect`, `/v1/point`) driven by
Moondream's OFFICIAL Python client (`moondream==2.6.1`, `md.vl(endpoint=…)`), over real HTTP
against the real app, with the stand-in vision-language server (tests/vlm_standin.py) speaking
Moondream's REST protocol behind it and the real local detector for COCO classes."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import moondream as md
import pytest
from moondream.types import Base64EncodedImage
from PIL import Image

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import LiveServer, coco_image, error_of, make_settings, start_server
from local_http import RouteHandler, serve_routes
from vlm_standin import VlmStandin, run_standin, square_image

SQUARE = (400, 300, 600, 500)  # on 1600x1200: the backend sees it at 768 px
SQUARE_FRACTIONS = (0.25, 0.25, 0.375, 0.41667)
CREDITS = 1000
PER_VLM_CALL = 3


@pytest.fixture(scope="module")
def standin() -> Iterator[VlmStandin]:
    with run_standin() as server:
        yield server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, standin: VlmStandin) -> Iterator[LiveServer]:
    server = _start(tmp_path_factory.mktemp("realtime"), vlm_url=standin.url)
    yield server
    server.stop()


def _start(tmp: Path, **overrides: Any) -> LiveServer:
    with pytest.MonkeyPatch.context() as patch:  # a developer's BATCHVISION_* must not leak in
        for name in [n for n in os.environ if n.startswith("BATCHVISION_")]:
            patch.delenv(name)
        values: dict[str, Any] = {
            "auth": "required",
            "vlm_protocol": "moondream",
            "vlm_api_key": "backend-key",
            "credits_per_vlm_call": PER_VLM_CALL,
            "url_allow_hosts": ["127.0.0.1"],
        }
        settings = make_settings(tmp, **{**values, **overrides})
    return start_server(settings)


class Account:
    def __init__(self, live: LiveServer, name: str) -> None:
        self.store = KeyStore(make_engine(live.settings))
        created = self.store.create(name, credits=CREDITS)
        self.id, self.secret = created.info.id, created.secret
        self.model = md.vl(endpoint=f"{live.url}/v1", api_key=self.secret)

    @property
    def spent(self) -> int:
        info = self.store.get(self.id)
        assert info is not None and info.credits is not None
        return CREDITS - info.credits

    def settled(self, images: int = 1, timeout_s: float = 10.0) -> dict[str, int]:
        """The key's usage today once `images` settled images are recorded in it (a stream is
        settled just after its last event, so a client can be faster than its settlement)."""
        deadline = time.monotonic() + timeout_s
        today = {"images": 0, "credits": 0}
        while today["images"] < images and time.monotonic() < deadline:
            rows = self.store.usage(self.id)
            today = {k: rows[0][k] for k in today} if rows else today
            time.sleep(0.05)
        return today

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Moondream-Auth": self.secret}


@pytest.fixture
def account(live: LiveServer, request: pytest.FixtureRequest) -> Account:
    return Account(live, f"realtime-{uuid.uuid4().hex[:12]}")


def _picture() -> Image.Image:
    return Image.open(io.BytesIO(square_image(1600, 1200, SQUARE)))


def _new_requests(standin: VlmStandin, before: int) -> list[dict[str, Any]]:
    return standin.requests[before:]


def _data_url(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [json.loads(line.removeprefix("data: ")) for line in lines]


def _http_error(call: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
    """What the official client's urllib raised: the status and the JSON error body."""
    with pytest.raises(urllib.error.HTTPError) as raised:
        call()
    body = json.loads(raised.value.read())
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return raised.value.code, body["error"]


# --- the official client, every skill --------------------------------------------------------


def test_caption_reaches_the_backend_with_its_length_and_known_settings(
    account: Account, standin: VlmStandin
) -> None:
    before = len(standin.requests)
    settings: Any = {"temperature": 0.2, "max_tokens": 40, "seed": 7}  # seed: not ours, ignored
    caption = account.model.caption(_picture(), length="short", settings=settings)["caption"]
    assert caption.startswith("a short caption of 768x576 mean (")
    [sent] = _new_requests(standin, before)
    assert sent["path"] == "/v1/caption" and sent["md_auth"] == "backend-key"
    assert sent["body"]["settings"] == {"temperature": 0.2, "max_tokens": 40}
    assert account.spent == 1 + PER_VLM_CALL


def test_a_streamed_caption_arrives_as_several_chunks_of_the_same_text(
    account: Account, standin: VlmStandin
) -> None:
    whole = account.model.caption(_picture())["caption"]
    chunks = list(account.model.caption(_picture(), stream=True)["caption"])
    *words, last = chunks  # the client yields the final event's empty chunk too
    assert len(words) == len(whole.split(" ")) > 3 and last == ""  # one event per backend chunk
    assert "".join(chunks) == whole
    assert standin.requests[-1]["body"]["stream"] is True
    assert account.spent == 2 * (1 + PER_VLM_CALL)


def test_a_streamed_caption_is_server_sent_events_ending_with_completed(
    live: LiveServer, account: Account
) -> None:
    body = {"image_url": _data_url(square_image(64, 48, (0, 0, 8, 8))), "stream": True}
    with (
        httpx.Client(base_url=live.url, timeout=30) as client,
        client.stream("POST", "/v1/caption", json=body, headers=account.headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response)
    assert all(e["completed"] is False and e["chunk"] for e in events[:-1])
    assert events[-1] == {"chunk": "", "completed": True}
    assert "".join(e["chunk"] for e in events).startswith("a normal caption of 64x48")


def test_chunks_are_forwarded_as_the_backend_produces_them(
    live: LiveServer, account: Account, standin: VlmStandin
) -> None:
    body = {"image_url": _data_url(square_image(64, 48, (0, 0, 8, 8))), "stream": True}
    events: list[str] = []
    standin.state.chunk_gap_s = 0.2  # ten words: the last one 1.8 s after the first
    ended_before = standin.state.streams_ended
    try:
        with (
            httpx.Client(base_url=live.url, timeout=30) as client,
            client.stream("POST", "/v1/caption", json=body, headers=account.headers) as response,
        ):
            for line in response.iter_lines():
                if line and not events:
                    # Causal, not timed: the first event is here while the backend is still
                    # writing the rest of its stream.
                    assert standin.state.streams_ended == ended_before
                if line:
                    events.append(line)
    finally:
        standin.state.chunk_gap_s = 0.0
    assert len(events) == 11  # ten chunks and the final event: one event per chunk
    assert standin.state.streams_ended == ended_before + 1


def test_a_client_that_hangs_up_mid_stream_is_charged_and_settled(
    live: LiveServer, account: Account, standin: VlmStandin
) -> None:
    body = {"image_url": _data_url(square_image(64, 48, (0, 0, 8, 8))), "stream": True}
    standin.state.chunk_gap_s = 0.3
    try:
        with (
            httpx.Client(base_url=live.url, timeout=30) as client,
            client.stream("POST", "/v1/caption", json=body, headers=account.headers) as response,
        ):
            first = next(response.iter_lines())
        # The connection is closed here, with most of the caption still to come.
        assert json.loads(first.removeprefix("data: "))["chunk"] == "a"
        assert account.settled() == {"images": 1, "credits": 1 + PER_VLM_CALL}
    finally:
        standin.state.chunk_gap_s = 0.0
    assert account.spent == 1 + PER_VLM_CALL


def test_query_with_reasoning_and_streamed(account: Account, standin: VlmStandin) -> None:
    answered = account.model.query(_picture(), "what colour?", reasoning=True)
    assert answered["answer"].startswith("what colour? -> 768x576 mean")
    reasoning: Any = answered["reasoning"]
    assert reasoning["text"].startswith("reasoned about 768x576") and reasoning["grounding"] == []
    assert standin.requests[-1]["body"]["reasoning"] is True
    plain = account.model.query(_picture(), "and now?")
    assert "reasoning" not in plain and standin.requests[-1]["body"]["reasoning"] is False
    chunks = list(account.model.query(_picture(), "streamed?", stream=True)["answer"])
    assert len(chunks) > 3 and "".join(chunks).startswith("streamed? -> 768x576 mean")
    assert account.spent == 3 * (1 + PER_VLM_CALL)


def test_detect_and_point_on_a_phrase_find_the_square_on_the_backend(
    account: Account, standin: VlmStandin
) -> None:
    before = len(standin.requests)
    [box] = account.model.detect(_picture(), "red square")["objects"]
    x_min, y_min, x_max, y_max = SQUARE_FRACTIONS
    found = [box["x_min"], box["y_min"], box["x_max"], box["y_max"]]  # type: ignore[typeddict-item]
    assert found == pytest.approx([x_min, y_min, x_max, y_max], abs=0.005)
    [point] = account.model.point(_picture(), "red square")["points"]
    assert point == pytest.approx({"x": 0.3125, "y": 1 / 3}, abs=0.005)
    sent = _new_requests(standin, before)
    assert [r["path"] for r in sent] == ["/v1/detect", "/v1/point"]
    assert all(r["body"]["object"] == "red square" for r in sent)
    assert account.spent == 2 * (1 + PER_VLM_CALL)


def test_a_coco_class_is_found_by_the_local_detector_at_no_vlm_cost(
    live: LiveServer, account: Account, standin: VlmStandin
) -> None:
    room = coco_image("000000000139.jpg")
    before = len(standin.requests)
    objects = account.model.detect(Image.open(io.BytesIO(room)), "person")["objects"]
    points = account.model.point(Image.open(io.BytesIO(room)), "person")["points"]
    people = account.model.detect(Image.open(io.BytesIO(room)), "People")["objects"]
    assert people == objects  # the batch lines' synonyms and plurals name the class too
    assert _new_requests(standin, before) == []  # the backend never saw them
    assert account.spent == 3  # the image's credit each, no vision-language call
    # The same boxes as the native API's detector, as fractions of the image.
    image = {"data": base64.b64encode(room).decode()}
    task = {"skill": "detect", "params": {"object": "person"}}
    with live.client() as client:
        response = client.post(
            "/v1/analyze",
            json={"images": [image], "tasks": [task]},
            headers={"Authorization": f"Bearer {account.secret}"},
        )
    [result] = response.json()["results"]
    width, height = result["image"]["width"], result["image"]["height"]
    native = [o["box"] for o in result["outputs"]["detect"]["objects"]]
    assert len(native) == len(objects) >= 1
    for box, obj in zip(native, objects, strict=True):
        assert [obj["x_min"], obj["x_max"]] == pytest.approx(  # type: ignore[typeddict-item]
            [box[0] / width, box[2] / width], abs=0.005
        )
        assert [obj["y_min"], obj["y_max"]] == pytest.approx(  # type: ignore[typeddict-item]
            [box[1] / height, box[3] / height], abs=0.005
        )
    centres = [((b[0] + b[2]) / 2 / width, (b[1] + b[3]) / 2 / height) for b in native]
    found = [coordinate for p in points for coordinate in (p["x"], p["y"])]
    assert found == pytest.approx([c for centre in centres for c in centre], abs=0.005)


def test_an_http_image_url_is_fetched_by_the_server(account: Account, standin: VlmStandin) -> None:
    picture = square_image(800, 600, (200, 150, 300, 250))
    fetched: list[str] = []

    def square(handler: RouteHandler) -> None:
        handler.send(200, picture, Content_Type="image/jpeg")

    with serve_routes({"/square.jpg": square}, hits=fetched) as base:
        image = Base64EncodedImage(image_url=f"{base}/square.jpg")  # the client passes it as is
        [box] = account.model.detect(image, "square")["objects"]
    assert fetched == ["/square.jpg"]
    assert box["x_min"] == pytest.approx(0.25, abs=0.01)  # type: ignore[typeddict-item]
    assert box["y_max"] == pytest.approx(250 / 600, abs=0.01)  # type: ignore[typeddict-item]


def test_an_openai_protocol_backend_serves_the_same_api(tmp_path: Path) -> None:
    with run_standin() as openai_server:
        server = _start(tmp_path, vlm_url=openai_server.url, vlm_protocol="openai")
        try:
            account = Account(server, "openai")
            answered = account.model.query(_picture(), "what is it?", reasoning=True)
            chunks = list(account.model.query(_picture(), "and streamed?", stream=True)["answer"])
        finally:
            server.stop()
        paths = {r["path"] for r in openai_server.requests}
    reasoning: Any = answered["reasoning"]
    assert reasoning["text"].startswith("I looked at 1 image(s)")
    # Sent at the Qwen2.5-VL size nearest 768 px (multiples of 28), the answer after "Answer:".
    assert answered["answer"] == reasoning["text"].split(": ", 1)[1].removesuffix(".")
    assert answered["answer"].startswith("756x588 mean (")
    assert len(chunks) > 3 and "".join(chunks).endswith("| and streamed?")
    assert paths == {"/v1/chat/completions"}


# --- errors ---------------------------------------------------------------------------------------


def test_a_bad_key_is_401_in_the_error_shape(live: LiveServer, account: Account) -> None:
    stranger = md.vl(endpoint=f"{live.url}/v1", api_key="md_not_a_key")
    status, error = _http_error(lambda: stranger.caption(_picture()))
    assert status == 401 and error["code"] == "unauthorized"
    keyless = md.vl(endpoint=f"{live.url}/v1")
    status, error = _http_error(lambda: keyless.point(_picture(), "square"))
    assert status == 401 and error["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/v1/query", {"image_url": "IMAGE"}, "question"),
        ("/v1/caption", {}, "image_url"),
        ("/v1/detect", {"image_url": "IMAGE"}, "object"),
        ("/v1/point", {"image_url": "IMAGE", "object": "   "}, "object"),
        ("/v1/caption", {"image_url": "IMAGE", "length": "epic"}, "length"),
        ("/v1/caption", {"image_url": "IMAGE", "settings": {"top_p": 2}}, "top_p"),
        ("/v1/query", {"image_url": "IMAGE", "question": "q", "stream": "yes"}, "stream"),
        ("/v1/caption", {"image_url": "ftp://127.0.0.1/x.jpg"}, "image_url"),
    ],
)
def test_a_missing_or_bad_field_is_400_naming_it(
    live: LiveServer, account: Account, path: str, body: dict[str, Any], named: str
) -> None:
    image = _data_url(square_image(64, 64, (0, 0, 8, 8)))
    sent = {k: (image if v == "IMAGE" else v) for k, v in body.items()}
    with live.client() as client:
        response = client.post(path, json=sent, headers=account.headers)
    assert named in error_of(response, 400, "invalid_request")
    assert account.spent == 0


def test_an_image_that_does_not_decode_is_400_and_costs_nothing(
    live: LiveServer, account: Account
) -> None:
    broken = "data:image/jpeg;base64," + base64.b64encode(b"not an image").decode()
    with live.client() as client:
        for body in ({"image_url": broken}, {"image_url": broken, "stream": True}):
            response = client.post("/v1/caption", json=body, headers=account.headers)
            error_of(response, 400, "image_decode_failed")
    assert account.spent == 0


def test_a_stream_cut_by_the_backend_ends_with_an_error_event(
    live: LiveServer, account: Account, standin: VlmStandin
) -> None:
    standin.fail_next("cut")
    body = {"image_url": _data_url(square_image(64, 48, (0, 0, 8, 8))), "stream": True}
    with (
        httpx.Client(base_url=live.url, timeout=30) as client,
        client.stream("POST", "/v1/caption", json=body, headers=account.headers) as response,
    ):
        assert response.status_code == 200
        events = _events(response)
    *chunks, last = events
    assert [e["chunk"] for e in chunks] == ["a", " normal"]  # the stand-in cuts after two words
    assert last["completed"] is True and last["chunk"] == ""
    assert last["error"]["code"] == "processing_error"
    assert "stream" in last["error"]["message"]
    # The official client reads up to the last event and stops, with the text it had.
    standin.fail_next("cut")
    streamed = account.model.query(_picture(), "cut?", stream=True)["answer"]
    assert "".join(streamed) == "cut? ->"
    # The images decoded: charged; the calls did not answer: handed back, as on analyze.
    assert account.settled(images=2) == {"images": 2, "credits": 2}
    assert account.spent == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_backend_that_is_down_is_502_then_503_once_its_circuit_opens(tmp_path: Path) -> None:
    down = _start(
        tmp_path,
        vlm_url=f"http://127.0.0.1:{_closed_port()}/v1",
        vlm_attempts=2,
        vlm_retry_base_s=0.01,
        vlm_breaker_failures=4,  # the two calls below fail twice each
    )
    try:
        account = Account(down, "down")
        for call in (
            lambda: account.model.caption(_picture()),
            lambda: list(account.model.caption(_picture(), stream=True)["caption"]),
        ):
            status, error = _http_error(call)
            assert status == 502 and error["code"] == "processing_error"
            assert "failed after 2 attempts: connection failed" in error["message"]
        status, error = _http_error(lambda: account.model.detect(_picture(), "red square"))
        assert status == 503 and error["code"] == "model_unavailable"
        assert "circuit open" in error["message"]
        # As /v1/analyze bills: the images decoded, the calls that did not answer are free.
        assert account.spent == 3
        # A COCO class never needed the backend.
        assert account.model.detect(Image.open(io.BytesIO(coco_image())), "tv")["objects"]
    finally:
        down.stop()


def test_without_a_configured_backend_vlm_requests_are_503_model_unavailable(
    tmp_path: Path,
) -> None:
    bare = _start(tmp_path)
    try:
        account = Account(bare, "bare")
        status, error = _http_error(lambda: account.model.query(_picture(), "anyone?"))
        assert status == 503 and error["code"] == "model_unavailable"
        assert "BATCHVISION_VLM_URL" in error["message"]
        assert account.spent == 0  # refused before any work
    finally:
        bare.stop()


def test_a_key_short_of_credits_is_402_before_the_backend_is_called(
    live: LiveServer, standin: VlmStandin
) -> None:
    store = KeyStore(make_engine(live.settings))
    poor = store.create("poor", credits=PER_VLM_CALL)  # an image with a VLM call costs more
    model = md.vl(endpoint=f"{live.url}/v1", api_key=poor.secret)
    before = len(standin.requests)
    for call in (
        lambda: model.caption(_picture()),
        lambda: list(model.caption(_picture(), stream=True)["caption"]),
    ):
        status, error = _http_error(call)
        assert status == 402 and error["code"] == "insufficient_credits"
    assert _new_requests(standin, before) == []
    info = store.get(poor.info.id)
    assert info is not None and info.credits == PER_VLM_CALL
    # The local detector costs only the image's credit: still affordable.
    assert model.detect(Image.open(io.BytesIO(coco_image())), "tv")["objects"]


def test_the_image_rate_limit_of_the_key_applies_to_streams_too(live: LiveServer) -> None:
    store = KeyStore(make_engine(live.settings))
    limited = store.create("limited", credits=CREDITS, images_per_minute=2)
    model = md.vl(endpoint=f"{live.url}/v1", api_key=limited.secret)
    assert model.caption(_picture())["caption"]
    assert "".join(model.caption(_picture(), stream=True)["caption"])
    status, error = _http_error(
        lambda: list(model.query(_picture(), "a third?", stream=True)["answer"])
    )
    assert status == 429 and error["code"] == "rate_limited"
