"""The malformed-input corpus through `POST /v1/analyze`: every bad item gets its stable error
code, its good neighbour still succeeds, and nothing a client sends produces a 500."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import LiveServer, coco_image, error_of, make_settings, start_server

GOOD = "000000000139.jpg"  # 161,811 bytes: under the module server's 200,000-byte image limit
BIG = "000000000285.jpg"  # 335,861 bytes: over it
MAX_IMAGE_BYTES = 200_000
MAX_REQUEST_BYTES = 1_000_000
MAX_IMAGES = 3
MAX_PIXELS = 20_000_000


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("malformed"),
        max_image_bytes=MAX_IMAGE_BYTES,
        max_request_bytes=MAX_REQUEST_BYTES,
        max_images_per_request=MAX_IMAGES,
        max_image_pixels=MAX_PIXELS,
    )
    live = start_server(settings)
    yield live
    live.stop()


@pytest.fixture
def client(strict_server: LiveServer) -> Iterator[httpx.Client]:
    with strict_server.client() as c:
        yield c


# --- the corpus -------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares `width`x`height` RGB pixels but carries a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def png_real_bomb() -> bytes:
    """A complete, valid 5000x5000 black PNG: tiny on the wire, 25 M pixels decoded."""
    return _encode(Image.new("L", (5000, 5000)), "PNG", optimize=False)


def coco_pil(name: str = GOOD) -> Image.Image:
    return Image.open(io.BytesIO(coco_image(name))).convert("RGB")


def cmyk_jpeg() -> bytes:
    return _encode(coco_pil().convert("CMYK"), "JPEG", quality=75)


def png_16bit() -> bytes:
    gray = np.asarray(coco_pil().convert("L"), dtype=np.uint16) * 257
    image = Image.fromarray(gray)
    assert image.mode.startswith("I")
    data = _encode(image, "PNG")
    assert data[24] == 16  # IHDR bit depth
    return data


def animated_gif() -> bytes:
    base = coco_pil().resize((320, 213))
    frames = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT), base]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(out.getvalue())).n_frames == 3
    return out.getvalue()


# --- helpers ----------------------------------------------------------------------------------


def checked(response: httpx.Response) -> httpx.Response:
    """Nothing a client sends may produce a 5xx-with-details or a stack trace."""
    assert response.status_code != 500, response.text
    assert "Traceback" not in response.text
    assert response.headers.get("x-request-id")
    return response


def post_files(client: httpx.Client, files: list[tuple[str, bytes]], tasks: str = "detect") -> Any:
    return checked(
        client.post(
            "/v1/analyze",
            files=[("images", (name, data, "application/octet-stream")) for name, data in files],
            data={"tasks": tasks},
        )
    )


def assert_good(result: dict[str, Any]) -> None:
    assert result["status"] == "ok", result
    assert result["errors"] == []
    labels = {o["label"] for o in result["outputs"]["detect"]["objects"]}
    assert "person" in labels


def assert_item_error(result: dict[str, Any], code: str) -> str:
    assert result["status"] == "error", result
    assert result["outputs"] == {}
    assert [e["code"] for e in result["errors"]] == [code]
    assert "Traceback" not in result["errors"][0]["message"]
    message: str = result["errors"][0]["message"]
    return message


def assert_still_healthy(client: httpx.Client) -> None:
    assert checked(client.get("/healthz")).json() == {"status": "ok"}
    body = post_files(client, [(GOOD, coco_image(GOOD))]).json()
    assert_good(body["results"][0])


# --- per-item problems, each in a batch with a good image ------------------------------------

BAD_ITEMS: dict[str, tuple[Callable[[], bytes], str]] = {
    "truncated_jpeg": (lambda: coco_image(GOOD)[:80_000], "image_decode_failed"),
    "jpeg_header_only": (lambda: coco_image(GOOD)[:600], "image_decode_failed"),
    "zero_bytes": (lambda: b"", "image_decode_failed"),
    "text_named_jpg": (lambda: b"hello, I am not a picture\n" * 20, "image_decode_failed"),
    "random_bytes": (lambda: np.random.default_rng(7).bytes(5000), "image_decode_failed"),
    "png_bomb_50000": (lambda: png_header_only(50_000, 50_000), "image_too_large"),
    "png_over_pixel_limit": (lambda: png_header_only(6000, 4000), "image_too_large"),
    "png_real_bomb": (png_real_bomb, "image_too_large"),
    "png_zero_width": (lambda: png_header_only(0, 10), "image_decode_failed"),
    "pdf": (lambda: b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "unsupported_format"),
    "svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg"/>', "unsupported_format"),
    "oversized": (lambda: coco_image(BIG), "image_too_large"),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(BAD_ITEMS))
@pytest.mark.parametrize("bad_first", [True, False])
def test_bad_item_multipart(client: httpx.Client, kind: str, bad_first: bool) -> None:
    make, code = BAD_ITEMS[kind]
    bad = (f"{kind}.jpg", make())
    good = (GOOD, coco_image(GOOD))
    files = [bad, good] if bad_first else [good, bad]
    response = post_files(client, files, "detect,metadata")
    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    bad_result, good_result = (results[0], results[1]) if bad_first else (results[1], results[0])
    assert bad_result["filename"] == f"{kind}.jpg"
    assert_item_error(bad_result, code)
    assert_good(good_result)
    assert good_result["outputs"]["metadata"]["width"] == 640
    assert body["summary"] == {"images": 2, "succeeded": 1, "failed": 1}
    assert_still_healthy(client)


def test_oversized_message_names_limit(client: httpx.Client) -> None:
    body = post_files(client, [("big.jpg", coco_image(BIG))]).json()
    assert str(MAX_IMAGE_BYTES) in assert_item_error(body["results"][0], "image_too_large")


@pytest.mark.parametrize(
    ("kind", "make"),
    [("cmyk_jpeg", cmyk_jpeg), ("png_16bit", png_16bit), ("animated_gif", animated_gif)],
)
def test_unusual_but_valid_images_succeed(
    client: httpx.Client, kind: str, make: Callable[[], bytes]
) -> None:
    response = post_files(client, [(kind, make()), (GOOD, coco_image(GOOD))], "detect,metadata")
    assert response.status_code == 200, response.text
    odd, good = response.json()["results"]
    assert odd["status"] == "ok", odd
    assert odd["errors"] == []
    expected_format = {"cmyk_jpeg": "JPEG", "png_16bit": "PNG", "animated_gif": "GIF"}[kind]
    assert odd["image"]["format"] == expected_format
    size = (320, 213) if kind == "animated_gif" else (640, 426)
    assert (odd["image"]["width"], odd["image"]["height"]) == size
    # the colours survived conversion well enough for the detector to see the person
    assert "person" in {o["label"] for o in odd["outputs"]["detect"]["objects"]}
    assert_good(good)


# --- JSON per-item problems -------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


JSON_BAD_ITEMS: dict[str, tuple[Any, str]] = {
    "invalid_base64": ({"data": "!!!this is not base64!!!"}, "invalid_request"),
    "urlsafe_with_junk": ({"data": "abc-_!!!defg"}, "invalid_request"),
    "non_ascii_base64": ({"data": "ÿÿÿÿ"}, "invalid_request"),
    "bad_padding": ({"data": "abcde"}, "invalid_request"),
    "data_uri_not_base64": ({"data": "data:image/png,hello"}, "invalid_request"),
    "data_and_url": ({"data": "aGVsbG8=", "url": "http://127.0.0.1/x.jpg"}, "invalid_request"),
    "neither": ({"id": "x"}, "invalid_request"),
    "data_not_string": ({"data": 12345}, "invalid_request"),
    "url_not_string": ({"url": ["a"]}, "invalid_request"),
    "not_an_object": (17, "invalid_request"),
    "filename_not_string": ({"data": _b64(coco_image(GOOD)), "filename": 3}, "invalid_request"),
    "base64_of_text": ({"data": _b64(b"just some text")}, "image_decode_failed"),
    "base64_empty": ({"data": ""}, "image_decode_failed"),
    "base64_oversized": ({"data": _b64(coco_image(BIG))}, "image_too_large"),
    "base64_truncated_jpeg": ({"data": _b64(coco_image(GOOD)[:20_000])}, "image_decode_failed"),
}


@pytest.mark.parametrize("kind", sorted(JSON_BAD_ITEMS))
def test_bad_item_json(client: httpx.Client, kind: str) -> None:
    entry, code = JSON_BAD_ITEMS[kind]
    good = {"data": _b64(coco_image(GOOD)), "id": "good"}
    response = checked(client.post("/v1/analyze", json={"images": [entry, good]}))
    assert response.status_code == 200, response.text
    bad_result, good_result = response.json()["results"]
    assert_item_error(bad_result, code)
    assert good_result["id"] == "good"
    assert_good(good_result)
    assert_still_healthy(client)


# --- request-level problems -------------------------------------------------------------------


def test_too_many_images(client: httpx.Client) -> None:
    small = coco_image("000000001503.jpg")
    files = [(f"{i}.jpg", small) for i in range(MAX_IMAGES + 1)]
    assert "3" in error_of(post_files(client, files), 413, "too_many_images")
    as_json = client.post("/v1/analyze", json={"images": [_b64(small)] * (MAX_IMAGES + 1)})
    error_of(checked(as_json), 413, "too_many_images")
    # exactly at the limit is fine
    at_limit = post_files(client, files[:MAX_IMAGES])
    assert at_limit.status_code == 200
    assert len(at_limit.json()["results"]) == MAX_IMAGES
    assert_still_healthy(client)


def test_body_over_max_request_bytes(client: httpx.Client) -> None:
    big = b"\xff\xd8" + b"\x00" * (MAX_REQUEST_BYTES + 10_000)
    # 450 kB is under the 1 MB body limit: read, and each (garbage) image fails on its own
    under = post_files(client, [("a.jpg", big[:150_000])] * 3)
    assert under.status_code == 200
    assert [r["errors"][0]["code"] for r in under.json()["results"]] == ["image_decode_failed"] * 3
    # declared by Content-Length: refused before it is read
    too_big = checked(
        client.post(
            "/v1/analyze",
            content=json.dumps({"images": [_b64(big)]}).encode(),
            headers={"content-type": "application/json"},
        )
    )
    error_of(too_big, 413, "payload_too_large")

    # no Content-Length (chunked): refused while streaming
    def chunks() -> Iterator[bytes]:
        yield b'{"images": ["'
        for _ in range(40):
            yield b"A" * 50_000
        yield b'"]}'

    chunked = checked(
        client.post("/v1/analyze", content=chunks(), headers={"content-type": "application/json"})
    )
    error_of(chunked, 413, "payload_too_large")

    def multipart_chunks() -> Iterator[bytes]:
        yield b'--XyZ\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n\r\n'
        for _ in range(40):
            yield b"A" * 50_000
        yield b"\r\n--XyZ--\r\n"

    multipart = checked(
        client.post(
            "/v1/analyze",
            content=multipart_chunks(),
            headers={"content-type": "multipart/form-data; boundary=XyZ"},
        )
    )
    error_of(multipart, 413, "payload_too_large")
    assert_still_healthy(client)


def test_oversized_form_field(client: httpx.Client) -> None:
    response = checked(
        client.post(
            "/v1/analyze",
            files=[("images", (GOOD, coco_image(GOOD), "image/jpeg"))],
            data={"tasks": "detect," * 20_000},
        )
    )
    error_of(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "image/jpeg", "application/x-www-form-urlencoded", None]
)
def test_wrong_content_type(client: httpx.Client, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = checked(client.post("/v1/analyze", content=coco_image(GOOD), headers=headers))
    error_of(response, 415, "unsupported_format")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "JSON"),
        (b"", "JSON"),
        (b"\xff\xfe\x00garbage", "JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),  # nesting deep enough to hit RecursionError
        (b'["a list", "not an object"]', "object"),
        (b'{"images": "000000000139.jpg"}', "images"),
        (b'{"images": {"0": "x"}}', "images"),
        (b'{"tasks": ["detect"]}', "images"),
        (b'{"images": []}', "image"),
        (b'{"images": null}', "images"),
    ],
)
def test_invalid_json_requests(client: httpx.Client, body: bytes, fragment: str) -> None:
    response = checked(
        client.post("/v1/analyze", content=body, headers={"content-type": "application/json"})
    )
    assert fragment in error_of(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "tasks",
    [
        '[{"skill": "detect"',  # broken JSON
        '{"skill": "detect"}',  # an object, not a list (and not a comma list either)
        '[{"params": {}}]',  # no skill name
        "[42]",
        ",,,",  # no task at all
    ],
)
def test_malformed_tasks(client: httpx.Client, tasks: str) -> None:
    response = post_files(client, [(GOOD, coco_image(GOOD))], tasks)
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"]["code"] in ("invalid_request", "unknown_skill")


def test_malformed_tasks_json_body(client: httpx.Client) -> None:
    image = _b64(coco_image("000000001503.jpg"))
    for tasks, code in [
        ({"skill": "detect"}, "invalid_request"),
        ([{"skill": 3}], "invalid_request"),
        ([], "invalid_request"),
        ([{"skill": "detect", "params": "threshold=0.5"}], "invalid_parameter"),
    ]:
        response = checked(client.post("/v1/analyze", json={"images": [image], "tasks": tasks}))
        assert response.status_code in (400, 422), (tasks, response.text)
        assert response.json()["error"]["code"] == code, tasks


@pytest.mark.parametrize(
    "template",
    [
        '{"images": [{"data": "IMAGE", "id": "\\ud800"}]}',
        '{"images": [{"data": "IMAGE", "filename": "a\\udfffb.jpg"}]}',
        '{"images": [{"data": "IMAGE"}], "tasks": [{"skill": "\\ud83d"}]}',
        '{"images": [{"data": "IMAGE"}], "tasks": [{"skill": "detect", "params": {"model": '
        '"\\ud800"}}]}',
        '{"images": [{"data": "IMAGE"}], "tasks": "detect,\\ud800"}',
        '{"images": [{"data": "IMAGE"}], "\\ud800": 1}',
    ],
)  # fmt: skip
def test_unpaired_surrogates_in_json(client: httpx.Client, template: str) -> None:
    """JSON may escape a lone surrogate; such text cannot be echoed back as UTF-8, so it must be
    refused as a client error, never break the response encoder."""
    body = template.replace("IMAGE", _b64(coco_image("000000001503.jpg")))
    response = checked(
        client.post(
            "/v1/analyze", content=body.encode(), headers={"content-type": "application/json"}
        )
    )
    assert "surrogate" in error_of(response, 400, "invalid_request")
    # a real astral character written as a surrogate pair is fine
    paired = '{"images": [{"data": "IMAGE", "id": "\\ud83d\\ude00"}]}'.replace(
        "IMAGE", _b64(coco_image("000000001503.jpg"))
    )
    ok = checked(
        client.post(
            "/v1/analyze", content=paired.encode(), headers={"content-type": "application/json"}
        )
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["results"][0]["id"] == "\U0001f600"
    assert_still_healthy(client)


def test_bad_image_ids(client: httpx.Client) -> None:
    image = _b64(coco_image("000000001503.jpg"))
    for bad_id in ["x" * 257, True, {"a": 1}, [1]]:
        response = checked(
            client.post("/v1/analyze", json={"images": [{"data": image, "id": bad_id}]})
        )
        assert error_of(response, 400, "invalid_request").startswith("images.0.id: ")
    at_limit = {"images": [{"data": image, "id": "x" * 256}, {"data": image, "id": 7}]}
    ok = checked(client.post("/v1/analyze", json=at_limit))
    assert [r["id"] for r in ok.json()["results"]] == ["x" * 256, "7"]  # integers as their text


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"images": [{"id": True}]}, 400, "images.0.id: must be a string or an integer"),
        ({"tasks": [{"params": {}}]}, 400, "tasks.0.skill: Field required"),
        ({"tasks": [{"skill": 3}]}, 400, "tasks.0.skill: Input should be a valid string"),
        ({"tasks": [42]}, 400, "tasks.0: must be a skill name or {skill, params}"),
        ({"tasks": {"skill": "detect"}}, 400, "tasks: Input should be a valid list"),
        ({"tasks": ["detect", {"skill": "metadata", "params": 1}]}, 422, "tasks.1.params: "),
        ({"images": "x.jpg"}, 400, "images: Input should be a valid list"),
    ],
)
def test_request_errors_name_the_field_and_the_reason(
    client: httpx.Client, body: dict[str, Any], status: int, message: str
) -> None:
    request = {"images": [_b64(coco_image("000000001503.jpg"))], **body}
    response = checked(client.post("/v1/analyze", json=request))
    code = "invalid_parameter" if status == 422 else "invalid_request"
    assert message in error_of(response, status, code)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"data": 12345}, "data: Input should be a valid string"),
        ({"id": "x"}, "image: needs exactly one of 'data' or 'url'"),
        (17, "image: must be a base64 string or an object"),
    ],
)
def test_image_errors_name_the_field_and_the_reason(
    client: httpx.Client, entry: Any, message: str
) -> None:
    response = checked(client.post("/v1/analyze", json={"images": [entry]}))
    assert response.status_code == 200, response.text
    assert assert_item_error(response.json()["results"][0], "invalid_request") == message


@pytest.mark.parametrize(
    ("tasks", "status", "code", "message"),
    [
        ('[{"skill": "detect"', 400, "invalid_request", "tasks: is not valid JSON"),
        ("[42]", 400, "invalid_request", "tasks.0: must be a skill name or {skill, params}"),
        ('[{"skill": "\\ud800"}]', 400, "invalid_request", "unpaired surrogate escape"),
        ('[{"skill": "detect", "params": [1]}]', 422, "invalid_parameter", "tasks.0.params: "),
    ],
)
def test_tasks_form_field_errors(
    client: httpx.Client, tasks: str, status: int, code: str, message: str
) -> None:
    """The multipart `tasks` text goes through the same model as the JSON body's; an escaped
    lone surrogate in it is refused like one in a JSON body (it used to reach the response
    encoder as an unknown skill name: a 500)."""
    response = post_files(client, [(GOOD, coco_image(GOOD))], tasks)
    assert message in error_of(response, status, code)


def test_malformed_multipart(client: httpx.Client) -> None:
    part = (
        b'--XyZ\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n\r\n'
        + coco_image(GOOD)
    )
    cases = {
        "no boundary": (b"whatever", "multipart/form-data"),
        "ends early": (part, "multipart/form-data; boundary=XyZ"),
        "garbage": (b"\x00\x01 not multipart at all", "multipart/form-data; boundary=XyZ"),
        "no images": (b"--XyZ--\r\n", "multipart/form-data; boundary=XyZ"),
        "huge boundary": (part, "multipart/form-data; boundary=" + "B" * 300),
    }
    for name, (body, content_type) in cases.items():
        response = checked(
            client.post("/v1/analyze", content=body, headers={"content-type": content_type})
        )
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"]["code"] == "invalid_request", name
    wrong_field = checked(
        client.post("/v1/analyze", files=[("photo", (GOOD, coco_image(GOOD), "image/jpeg"))])
    )
    assert "images" in error_of(wrong_field, 400, "invalid_request")
    assert_still_healthy(client)


# --- disconnects ------------------------------------------------------------------------------


def _raw_send(url: str, data: bytes) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)


def _wait_idle(client: httpx.Client) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ready = checked(client.get("/readyz"))
        if ready.json()["in_flight_images"] == 0:
            assert ready.status_code == 200
            return
        time.sleep(0.05)
    pytest.fail("images stayed in flight after the client went away")


def test_client_disconnects_mid_body(strict_server: LiveServer, client: httpx.Client) -> None:
    image = coco_image(GOOD)
    preamble = b'--XyZ\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n\r\n'
    head = (
        b"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=XyZ\r\n"
        b"Content-Length: %d\r\n\r\n" % (len(preamble) + len(image) + 100)
    )
    _raw_send(strict_server.url, head + preamble + image[: len(image) // 2])
    # JSON too, cut in the middle of a base64 string
    json_head = (
        b"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 500000\r\n\r\n"
    )
    _raw_send(strict_server.url, json_head + b'{"images": ["' + b"A" * 10_000)
    # and a complete request whose client leaves before the answer
    body = json.dumps({"images": [_b64(image)] * 2}).encode()
    full = (
        b"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    _raw_send(strict_server.url, full)
    _wait_idle(client)
    assert_still_healthy(client)


# --- overload ---------------------------------------------------------------------------------


def test_overload_gives_503_with_retry_after(
    serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    live = serve(max_queued_images=2, max_wait_ms=300, retry_after_s=3)
    image = coco_image(GOOD)
    callers = 8
    barrier = threading.Barrier(callers)

    def request(_: int) -> httpx.Response:
        with live.client() as own:
            own.get("/healthz")  # connect first so the barrier lines up the POSTs themselves
            barrier.wait(timeout=30)
            return checked(
                own.post(
                    "/v1/analyze",
                    files=[("images", ("a.jpg", image)), ("images", ("b.jpg", image))],
                )
            )

    with ThreadPoolExecutor(callers) as pool:
        responses = list(pool.map(request, range(callers)))
    refused = [r for r in responses if r.status_code == 503]
    served = [r for r in responses if r.status_code != 503]
    assert refused, [r.status_code for r in responses]
    assert served, "at least the first request must be admitted"
    for response in refused:
        assert "retry" in error_of(response, 503, "overloaded").lower()
        assert response.headers["retry-after"] == "3"
    for response in served:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["summary"] == {"images": 2, "succeeded": 2, "failed": 0}
        for result in body["results"]:
            assert_good(result)
    # capacity is given back: the server is idle and serves again
    with live.client() as client:
        ready = client.get("/readyz").json()
        assert ready["in_flight_images"] == 0
        assert ready["status"] == "ready"
        response = client.post("/v1/analyze", files=[("images", ("a.jpg", image))] * 2)
        assert response.status_code == 200


# --- formats told by decoder, metadata chunks, forged JPEG sizes ------------------------------


def forged_jpeg(width: int, height: int) -> bytes:
    """A real 64x64 JPEG whose SOF0 claims `width`x`height`: ~1 KB of data for megapixels."""
    data = bytearray(_encode(Image.new("RGB", (64, 64), (90, 120, 30)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_with_chunk(kind: bytes, payload: bytes) -> bytes:
    png = _encode(Image.new("RGB", (10, 10), (1, 2, 3)), "PNG")
    return png[:33] + _png_chunk(kind, payload) + png[33:]  # right after IHDR


HARDENED_ITEMS: dict[str, tuple[bytes, str, str]] = {
    # TGA starts 00 00 02 00, CUR's signature: it was refused as "CUR is not supported".
    "tga": (_encode(Image.new("RGB", (10, 10), (1, 2, 3)), "TGA"), "unsupported_format", "TGA"),
    "png_ztxt_over_limit": (
        png_with_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * 2_000_000)),
        "image_decode_failed",
        "text or ICC profile chunk",
    ),
    "png_iccp_over_limit": (
        png_with_chunk(b"iCCP", b"icc\0\0" + zlib.compress(b"a" * 2_000_000)),
        "image_decode_failed",
        "text or ICC profile chunk",
    ),
    # Decoded as 16 MP of gray before (under the module server's 20 MP limit).
    "jpeg_claiming_4000x4000": (forged_jpeg(4000, 4000), "image_decode_failed", "4000x4000"),
}


@pytest.mark.parametrize("kind", sorted(HARDENED_ITEMS))
def test_hardened_items_say_what_they_are(client: httpx.Client, kind: str) -> None:
    data, code, needle = HARDENED_ITEMS[kind]
    good = {"data": _b64(coco_image(GOOD)), "id": "good"}
    body = {"images": [{"data": _b64(data)}, good], "tasks": ["metadata"]}
    response = checked(client.post("/v1/analyze", json=body))
    assert response.status_code == 200, response.text
    bad_result, good_result = response.json()["results"]
    assert needle in assert_item_error(bad_result, code)
    assert good_result["status"] == "ok", good_result
