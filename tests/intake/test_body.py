"""Tests for request-body intake: streaming multipart and JSON with every limit, and base64 images.

Bodies are fed through async generators (driven with asyncio.run) that record how much of the
stream was consumed, so "stops reading at once" is checked, not assumed.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import ImageInput
from batchvision.intake import body as body_module
from batchvision.intake.body import (
    BodyLimits,
    FormData,
    check_content_length,
    image_from_base64,
    read_json,
    read_multipart,
)

T = TypeVar("T")

BOUNDARY = "----batchvisionTestBoundary7MA4YWxk"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
CLOSE = f"--{BOUNDARY}--\r\n".encode()
LIMITS = BodyLimits(
    max_request_bytes=64 * 1024, max_image_bytes=4096, max_images=4, max_field_bytes=512
)

# Image bytes that look like boundaries and CRLFs, to exercise the parser's look-behind.
TRICKY = b"\xff\xd8\r\n--" + BOUNDARY[:-3].encode() + b"\r\n\r\n--\r" + bytes(range(256)) + b"\r\n-"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class Feed:
    """An async byte stream that counts what was pulled from it."""

    chunks: list[bytes]
    pulled: int = 0
    pulled_bytes: int = 0
    finished: bool = False

    @classmethod
    def split(cls, data: bytes, size: int) -> Feed:
        return cls([data[i : i + size] for i in range(0, len(data), size)] or [b""])

    async def stream(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            self.pulled_bytes += len(chunk)
            yield chunk
        self.finished = True


@dataclass
class Part:
    name: str
    data: bytes
    filename: str | None = None
    headers: list[str] = field(default_factory=list)


def multipart(parts: Iterable[Part], boundary: str = BOUNDARY, *, close: bool = True) -> bytes:
    out = bytearray()
    for part in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if part.filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        for header in part.headers:
            out += header.encode() + b"\r\n"
        out += b"\r\n" + part.data + b"\r\n"
    if close:
        out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def part_header(name: str, filename: str | None) -> bytes:
    """Everything of a part up to (and including) the blank line that ends its headers."""
    return multipart([Part(name, b"", filename)], close=False)[: -len(b"\r\n")]


def read_form(
    data: bytes,
    size: int | None = None,
    limits: BodyLimits = LIMITS,
    content_type: str = CONTENT_TYPE,
) -> FormData:
    feed = Feed.split(data, size or max(1, len(data)))
    return run(read_multipart(feed.stream(), content_type, limits))


def form_error(
    data: bytes | Feed,
    limits: BodyLimits = LIMITS,
    content_type: str = CONTENT_TYPE,
) -> BatchVisionError:
    feed = data if isinstance(data, Feed) else Feed.split(data, 1024)
    with pytest.raises(BatchVisionError) as info:
        run(read_multipart(feed.stream(), content_type, limits))
    return info.value


def summary(form: FormData) -> tuple[list[tuple[Any, ...]], dict[str, list[str]]]:
    images = [
        (i.index, i.filename, i.data, i.error.code if i.error else None, i.url, i.client_id)
        for i in form.images
    ]
    return images, form.fields


IMG_A = b"\xff\xd8image-a" * 10
IMG_B = b"\x89PNG\r\n\x1a\nimage-b" * 20
IMG_C = TRICKY
TASKS = '[{"skill": "detect"}, {"skill": "metadata"}]'


def standard_body() -> bytes:
    return multipart(
        [
            Part("images", IMG_A, "a.jpg"),
            Part("tasks", TASKS.encode()),
            Part("images", IMG_B, "b.png"),
            Part("note", "fjäll ✓".encode()),
            Part("images", IMG_C, "c.bin"),
        ]
    )


# ----------------------------------------------------------------------------- multipart


def test_images_in_order_with_fields() -> None:
    form = read_form(standard_body())
    assert [i.index for i in form.images] == [0, 1, 2]
    assert [i.filename for i in form.images] == ["a.jpg", "b.png", "c.bin"]
    assert [i.data for i in form.images] == [IMG_A, IMG_B, IMG_C]
    assert all(i.error is None and i.url is None for i in form.images)
    assert form.fields == {"tasks": [TASKS], "note": ["fjäll ✓"]}
    assert form.field("tasks") == TASKS
    assert json.loads(form.field("tasks") or "") == [{"skill": "detect"}, {"skill": "metadata"}]
    assert form.field("missing") is None


def test_repeated_field_keeps_all_values_last_wins() -> None:
    form = read_form(multipart([Part("tasks", b"first"), Part("tasks", b"second")]))
    assert form.fields == {"tasks": ["first", "second"]}
    assert form.field("tasks") == "second"
    assert form.images == []


def test_image_part_without_filename_and_utf8_filename() -> None:
    form = read_form(
        multipart(
            [Part("images", b"one"), Part("images", b"two", "фото ü.jpg"), Part("images", b"")]
        )
    )
    assert [(i.filename, i.data) for i in form.images] == [
        (None, b"one"),
        ("фото ü.jpg", b"two"),
        (None, b""),
    ]


def test_quoted_boundary_and_extra_part_headers() -> None:
    body = multipart([Part("images", IMG_A, "a.jpg", headers=["X-Extra: 1"])])
    form = read_form(body, content_type=f'multipart/form-data; boundary="{BOUNDARY}"')
    assert form.images[0].data == IMG_A


def test_other_image_field_names() -> None:
    feed = Feed.split(multipart([Part("file", IMG_A, "a.jpg"), Part("images", IMG_B)]), 100)
    form = run(read_multipart(feed.stream(), CONTENT_TYPE, LIMITS, frozenset({"file", "images"})))
    assert [i.data for i in form.images] == [IMG_A, IMG_B]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1000])
def test_chunk_boundaries_do_not_matter(size: int) -> None:
    whole = read_form(standard_body())
    assert summary(read_form(standard_body(), size)) == summary(whole)


def test_every_split_point_of_a_small_body() -> None:
    data = multipart([Part("images", TRICKY, "t.jpg"), Part("tasks", b"[]")])
    expected = summary(read_form(data))
    for cut in range(1, len(data)):
        feed = Feed([data[:cut], data[cut:]])
        form = run(read_multipart(feed.stream(), CONTENT_TYPE, LIMITS))
        assert summary(form) == expected, cut


def test_preamble_newlines_and_epilogue_are_ignored() -> None:
    data = b"\r\n" + standard_body() + b"epilogue that is not parsed\r\n"
    assert summary(read_form(data, 5)) == summary(read_form(standard_body()))


def test_oversized_image_is_marked_and_parsing_continues() -> None:
    big = b"\x00" * (LIMITS.max_image_bytes + 1)
    exact = b"\x01" * LIMITS.max_image_bytes
    body = multipart(
        [
            Part("images", IMG_A, "a.jpg"),
            Part("images", big, "big.jpg"),
            Part("images", exact, "exact.jpg"),
            Part("tasks", b"[]"),
        ]
    )
    for size in (1, 100, len(body)):
        form = read_form(body, size)
        a, too_big, at_limit = form.images
        assert (a.index, a.data, a.error) == (0, IMG_A, None)
        assert (too_big.index, too_big.filename, too_big.data) == (1, "big.jpg", None)
        assert too_big.error is not None
        assert too_big.error.code is ErrorCode.IMAGE_TOO_LARGE
        assert (at_limit.index, at_limit.data, at_limit.error) == (2, exact, None)
        assert form.fields == {"tasks": ["[]"]}


def test_too_many_images_raised_as_soon_as_the_extra_part_headers_arrive() -> None:
    limits = BodyLimits(
        max_request_bytes=10**9, max_image_bytes=10**9, max_images=2, max_field_bytes=512
    )
    prefix = multipart([Part("images", IMG_A, "a"), Part("images", IMG_B, "b")], close=False)
    prefix += part_header("images", "c")
    head_chunks = Feed.split(prefix, 10).chunks
    # A huge third image (10 MB of 64 KB chunks) that must never be read.
    feed = Feed(head_chunks + [b"\x00" * 65536] * 160)
    err = form_error(feed, limits)
    assert err.code is ErrorCode.TOO_MANY_IMAGES
    assert "2" in err.message
    assert feed.pulled == len(head_chunks)
    assert not feed.finished


def test_exactly_max_images_is_fine_and_fields_do_not_count() -> None:
    parts = [Part("images", b"x", f"{i}.jpg") for i in range(LIMITS.max_images)]
    parts += [Part("tasks", b"[]"), Part("other", b"1")]
    form = read_form(multipart(parts), 13)
    assert len(form.images) == LIMITS.max_images


def test_too_many_images_counts_oversized_ones() -> None:
    big = b"\x00" * (LIMITS.max_image_bytes + 10)
    parts = [Part("images", big, f"{i}.jpg") for i in range(LIMITS.max_images + 1)]
    assert form_error(multipart(parts)).code is ErrorCode.TOO_MANY_IMAGES


def test_total_body_over_limit_stops_reading() -> None:
    limit = LIMITS.max_request_bytes
    head = part_header("images", "huge.jpg")
    chunk = b"\x00" * 1024
    # Ten times the limit is on offer; reading must stop just past the limit.
    feed = Feed([head] + [chunk] * (10 * limit // len(chunk)))
    err = form_error(feed)
    assert err.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert str(limit) in err.message
    assert not feed.finished
    assert limit < feed.pulled_bytes <= limit + len(chunk)


def test_body_of_exactly_the_limit_is_accepted() -> None:
    body = multipart([Part("images", b"x", "a.jpg")])
    exact = body + b" " * (LIMITS.max_request_bytes - len(body))  # the epilogue is ignored
    assert len(read_form(exact, 4096).images) == 1
    assert form_error(exact + b" ").code is ErrorCode.PAYLOAD_TOO_LARGE


def test_field_over_limit() -> None:
    limit = LIMITS.max_field_bytes
    assert read_form(multipart([Part("tasks", b"t" * limit)])).field("tasks") == "t" * limit
    err = form_error(multipart([Part("tasks", b"t" * (limit + 1))]))
    assert err.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert "tasks" in err.message


def test_field_over_limit_stops_reading() -> None:
    feed = Feed([part_header("tasks", None)] + [b"t" * 100] * 1000)
    assert form_error(feed).code is ErrorCode.PAYLOAD_TOO_LARGE
    assert feed.pulled <= 2 + LIMITS.max_field_bytes // 100
    assert not feed.finished


def test_unexpected_file_field() -> None:
    err = form_error(multipart([Part("images", IMG_A, "a.jpg"), Part("upload", IMG_B, "b.jpg")]))
    assert err.code is ErrorCode.INVALID_REQUEST
    assert "upload" in err.message
    assert "images" in err.message


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary=""',
        "multipart/form-data; charset=utf-8",
        "",
    ],
)
def test_missing_boundary(content_type: str) -> None:
    err = form_error(standard_body(), content_type=content_type)
    assert err.code is ErrorCode.INVALID_REQUEST


def test_boundary_too_long_for_the_parser() -> None:
    """Regression: python-multipart refuses a boundary over 256 bytes with a FormParserError,
    which escaped as an unhandled exception (a 500) instead of INVALID_REQUEST."""
    boundary = "b" * 300
    data = multipart([Part("images", IMG_A, "a.jpg")], boundary)
    err = form_error(data, content_type=f"multipart/form-data; boundary={boundary}")
    assert err.code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"this is not multipart at all", id="garbage"),
        pytest.param(b'{"images": []}', id="json"),
        pytest.param(
            multipart([Part("images", IMG_A, "a")], "other-boundary"), id="wrong-boundary"
        ),
        pytest.param(f"--{BOUNDARY}XX\r\n".encode() + b"junk", id="boundary-without-crlf"),
        pytest.param(
            f"--{BOUNDARY}\r\nContent-Disposition form-data\r\n\r\nx\r\n".encode() + CLOSE,
            id="header-without-colon",
        ),
        pytest.param(
            f"--{BOUNDARY}\r\nX: {'v' * 10000}\r\n\r\nx\r\n".encode() + CLOSE,
            id="header-too-long",
        ),
    ],
)
def test_malformed_bodies(data: bytes) -> None:
    assert form_error(data).code is ErrorCode.INVALID_REQUEST


def test_truncated_body_anywhere_is_invalid() -> None:
    data = standard_body()
    end = len(data) - len(f"--{BOUNDARY}--\r\n")
    for cut in [*range(0, len(data), 37), end, end + 5, len(data) - 3]:
        err = form_error(data[:cut])
        assert err.code is ErrorCode.INVALID_REQUEST, cut


def test_closing_boundary_without_trailing_crlf_is_complete() -> None:
    data = standard_body().removesuffix(b"\r\n")
    assert len(read_form(data).images) == 3


# ----------------------------------------------------------------------------- content-length


def test_check_content_length() -> None:
    limit = LIMITS.max_request_bytes
    with pytest.raises(BatchVisionError) as info:
        check_content_length({"content-length": str(limit + 1)}, LIMITS)
    assert info.value.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert info.value.http_status == 413
    check_content_length({"content-length": str(limit)}, LIMITS)
    check_content_length({"content-length": "0"}, LIMITS)
    check_content_length({}, LIMITS)
    check_content_length({"content-length": "not-a-number"}, LIMITS)  # the server rejects it


# ----------------------------------------------------------------------------- base64

PAYLOAD = bytes(range(256)) * 3 + b"\xfb\xff\xbf"  # the tail encodes to "+/+/" or "-_-_"
LIMITS_B64 = BodyLimits(
    max_request_bytes=10**6, max_image_bytes=len(PAYLOAD), max_images=4, max_field_bytes=512
)


def b64(data: bytes = PAYLOAD) -> str:
    return base64.b64encode(data).decode()


def from_b64(text: str, limits: BodyLimits = LIMITS_B64) -> ImageInput:
    return image_from_base64(3, text, limits, client_id="cam-1")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b64(), id="plain"),
        pytest.param("data:image/png;base64," + b64(), id="data-uri"),
        pytest.param("data:;base64," + b64(), id="data-uri-no-type"),
        pytest.param(base64.encodebytes(PAYLOAD).decode(), id="mime-newlines"),
        pytest.param(" \t" + b64()[:100] + "\r\n " + b64()[100:] + "\n", id="whitespace"),
        pytest.param(base64.urlsafe_b64encode(PAYLOAD).decode(), id="urlsafe"),
        pytest.param(base64.urlsafe_b64encode(PAYLOAD).decode().rstrip("="), id="urlsafe-no-pad"),
    ],
)
def test_base64_accepted(text: str) -> None:
    item = from_b64(text)
    assert item.error is None
    assert item.data == PAYLOAD
    assert (item.index, item.client_id, item.url) == (3, "cam-1", None)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_base64_missing_padding(size: int) -> None:
    data = PAYLOAD[:size]
    item = from_b64(base64.b64encode(data).decode().rstrip("="))
    assert (item.error, item.data) == (None, data)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("data:image/png,notbase64", id="data-uri-not-base64"),
        pytest.param("data:image/png;base64", id="data-uri-no-comma"),
        pytest.param("abc$def", id="dollar"),
        pytest.param("QUJD*REVG", id="star"),
        pytest.param("QUJDREVGé", id="non-ascii"),
        pytest.param("QUJD-REVG$", id="urlsafe-with-invalid"),  # regression: "$" was dropped
        pytest.param("QUJD_R!VG", id="urlsafe-with-bang"),
        pytest.param("QUJDR", id="length-1-mod-4"),
        pytest.param("QU==JD", id="padding-inside"),
        pytest.param("====", id="only-padding"),
    ],
)
def test_base64_invalid(text: str) -> None:
    item = from_b64(text)
    assert item.data is None
    assert item.error is not None
    assert item.error.code is ErrorCode.INVALID_REQUEST
    assert (item.index, item.client_id) == (3, "cam-1")


def test_empty_base64_is_empty_data() -> None:
    item = from_b64("")
    assert (item.error, item.data) == (None, b"")


@pytest.mark.parametrize("extra", [0, 1, 2, 3])
def test_base64_size_limit_is_exact(extra: int) -> None:
    """Regression: padding was counted as data, so an image up to 2 bytes under the limit could
    be refused."""
    for limit in (300, 301, 302):
        limits = BodyLimits(10**6, limit, 4, 512)
        data = bytes(limit - 3 + extra)
        for text in (b64(data), b64(data).rstrip("=")):
            item = from_b64(text, limits)
            if len(data) <= limit:
                assert (item.error, item.data) == (None, data), (limit, len(data), text[-4:])
            else:
                assert item.error is not None
                assert item.error.code is ErrorCode.IMAGE_TOO_LARGE


def test_oversized_base64_is_refused_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(payload: str) -> bytes:
        raise AssertionError("decoded an oversized image")

    monkeypatch.setattr(body_module, "_b64decode", refuse)
    limits = BodyLimits(10**9, 1000, 4, 512)
    for text in ("A" * 1336, "data:image/jpeg;base64," + "A" * 100_000, "A" * 1336 + "=="):
        item = from_b64(text, limits)
        assert item.error is not None
        assert item.error.code is ErrorCode.IMAGE_TOO_LARGE
        assert item.data is None


# ----------------------------------------------------------------------------- JSON


def json_feed(data: bytes, size: int = 1000) -> Feed:
    return Feed.split(data, size)


def json_error(data: bytes | Feed, limits: BodyLimits = LIMITS) -> BatchVisionError:
    feed = data if isinstance(data, Feed) else json_feed(data)
    with pytest.raises(BatchVisionError) as info:
        run(read_json(feed.stream(), limits))
    return info.value


def test_read_json() -> None:
    document = {"images": [{"data": b64(b"abc"), "id": 7}], "tasks": [{"skill": "detect"}]}
    data = json.dumps(document).encode()
    for size in (1, 7, len(data)):
        assert run(read_json(json_feed(data, size).stream(), LIMITS)) == document


def test_read_json_utf16_and_bom() -> None:
    assert run(read_json(json_feed('{"a": "ü"}'.encode("utf-16")).stream(), LIMITS)) == {"a": "ü"}
    assert run(read_json(json_feed(b'\xef\xbb\xbf{"a": 1}').stream(), LIMITS)) == {"a": 1}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="unclosed"),
        pytest.param(b'{"a": 1,}', id="trailing-comma"),
        pytest.param(b"{'a': 1}", id="single-quotes"),
        pytest.param(b'{"a": 1} {"b": 2}', id="two-documents"),
        pytest.param(b'{"a": "\xff\xfe"}', id="invalid-utf8"),
        pytest.param(b"\x00\x01\x02", id="binary"),
        pytest.param(b"1" * 5000, id="int-too-many-digits"),
        pytest.param(b"[" * 100_000, id="deep-unclosed"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-closed"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="deep-objects"),
    ],
)
def test_read_json_invalid(data: bytes) -> None:
    limits = BodyLimits(10**6, 10**6, 4, 512)
    assert json_error(data, limits).code is ErrorCode.INVALID_REQUEST


def test_read_json_over_limit_stops_reading() -> None:
    limit = LIMITS.max_request_bytes
    feed = Feed([b'{"images": ["'] + [b"A" * 1000] * (10 * limit // 1000))
    err = json_error(feed)
    assert err.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert not feed.finished
    assert feed.pulled_bytes <= limit + 1000


def test_read_json_exactly_the_limit() -> None:
    limits = BodyLimits(100, 100, 4, 512)
    data = json.dumps("x" * 98).encode()
    assert len(data) == 100
    assert run(read_json(json_feed(data, 9).stream(), limits)) == "x" * 98
    assert json_error(json.dumps("x" * 99).encode(), limits).code is ErrorCode.PAYLOAD_TOO_LARGE
