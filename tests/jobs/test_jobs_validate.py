"""Tests for JSONL job files: streaming validation (every batch-level code, limits at and past
each boundary, chunk-boundary independence, bounded memory)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from batchvision.core.errors import ErrorCode
from batchvision.intake.body import BodyLimits
from batchvision.jobs.validate import (
    BatchValidationError,
    JsonlLimits,
    JsonlValidator,
    ValidationReport,
    iter_lines,
    validate_file,
)

BOM = b"\xef\xbb\xbf"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
PNG_B64 = base64.b64encode(PNG).decode()
BODY_LIMITS = BodyLimits(
    max_request_bytes=1 << 20, max_image_bytes=4096, max_images=3, max_field_bytes=1024
)
SMALL = JsonlLimits(max_bytes=1000, max_lines=5, max_line_bytes=40)
DEFAULT = JsonlLimits()


def jsonl(*objects: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(obj).encode() + b"\n" for obj in objects)


def line(i: int = 0) -> dict[str, Any]:
    return {"id": i, "skill": "detect", "image_url": f"https://x/{i}.jpg"}


def feed_all(data: bytes, chunk: int | None, limits: JsonlLimits = DEFAULT) -> Any:
    """Feed `data` in chunks of `chunk` bytes (None: all at once); the report or the error."""
    validator = JsonlValidator(limits)
    size = chunk or max(len(data), 1)
    try:
        for i in range(0, len(data), size):
            validator.feed(data[i : i + size])
        return validator.finish()
    except BatchValidationError as exc:
        return (exc.code, exc.message, exc.line)


def outcome(data: bytes, limits: JsonlLimits = DEFAULT) -> Any:
    """The result for `data`, checked to be the same for 1-byte, 7-byte and whole chunks."""
    results = [feed_all(data, chunk, limits) for chunk in (1, 7, None)]
    assert results[0] == results[1] == results[2]
    return results[0]


def failure(data: bytes, limits: JsonlLimits = DEFAULT) -> tuple[str, str, int | None]:
    result = outcome(data, limits)
    assert isinstance(result, tuple), f"expected a failure, got {result}"
    code, message, number = result
    return code, message, number


# ---------------------------------------------------------------- accepted files


def test_valid_file_reports_lines_and_bytes() -> None:
    data = jsonl(line(0), line(1), line(2))
    assert outcome(data) == ValidationReport(lines=3, bytes=len(data))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"a": 1}\n{"b": 2}', id="no-trailing-newline"),
        pytest.param(b'{"a": 1}\r\n{"b": 2}\r\n', id="crlf"),
        pytest.param(b'{"a": 1}\r\n{"b": 2}\r', id="crlf-last-line-without-lf"),
        pytest.param(b'{"a": 1}\n{"b": 2}\r\n', id="mixed-endings"),
        pytest.param(b'  {"a": 1}\t\n{"b":2}  \n', id="whitespace-around-object"),
        pytest.param(b'{"a": 1, "a": 2}\n{"b": 2}\n', id="duplicate-keys"),
    ],
)
def test_accepted_shapes(data: bytes) -> None:
    assert outcome(data) == ValidationReport(lines=2, bytes=len(data))


def test_bom_at_start_is_accepted_and_counted_in_bytes() -> None:
    data = BOM + jsonl(line(0), line(1))
    assert outcome(data) == ValidationReport(lines=2, bytes=len(data))


def test_utf8_content_is_accepted() -> None:
    data = jsonl({"skill": "query", "question": "Was ist das? 猫 🐈"})
    assert outcome(data) == ValidationReport(lines=1, bytes=len(data))


# ---------------------------------------------------------------- validation_error


@pytest.mark.parametrize(
    ("data", "number", "fragment"),
    [
        pytest.param(b'{"a":1}\n\n{"b":2}\n', 2, "blank line", id="empty-line"),
        pytest.param(b'{"a":1}\n \t \n', 2, "blank line", id="whitespace-line"),
        pytest.param(b'{"a":1}\n\r\n', 2, "blank line", id="crlf-blank-line"),
        pytest.param(b'{"a":1}\n{"b":2}\n\n', 3, "blank line", id="trailing-blank-line"),
        pytest.param(b"\n", 1, "blank line", id="only-newline"),
        pytest.param(b'{"a":1}\n{"b":"\xff"}\n', 2, "not valid UTF-8", id="bad-utf8"),
        pytest.param(b'{"a":"\xc3"}\n', 1, "not valid UTF-8", id="truncated-utf8"),
        pytest.param(b'{"a":1}\n{"a":2}\n{"a":\n', 3, "not valid JSON", id="broken-json"),
        pytest.param(b'{"a":1}{"b":2}\n', 1, "not valid JSON", id="two-objects-one-line"),
        pytest.param(b'{"a":1}\r{"b":2}\n', 1, "not valid JSON", id="bare-cr-separator"),
        pytest.param(b"[1, 2]\n", 1, "not a JSON object (got an array)", id="array"),
        pytest.param(b'{"a":1}\n"text"\n', 2, "not a JSON object (got a string)", id="string"),
        pytest.param(b"42\n", 1, "not a JSON object (got a number)", id="number"),
        pytest.param(b"null\n", 1, "not a JSON object (got null)", id="null"),
        pytest.param(b"true\n", 1, "not a JSON object (got a boolean)", id="bool"),
        pytest.param(b'{"t": NaN}\n', 1, "NaN is not valid JSON", id="nan"),
        pytest.param(b'{"t": Infinity}\n', 1, "Infinity is not valid JSON", id="infinity"),
        pytest.param(b'{"t": [-Infinity]}\n', 1, "-Infinity is not valid JSON", id="-infinity"),
        pytest.param(b'{"a":1}\n' + BOM + b'{"b":2}\n', 2, "byte order mark", id="bom-later"),
        pytest.param(BOM + BOM + b'{"b":2}\n', 1, "byte order mark", id="double-bom"),
        pytest.param(b"\xef\xbb", 1, "not valid UTF-8", id="half-a-bom"),
        pytest.param(b"[" * 10_000 + b"]" * 10_000, 1, "nested too deeply", id="deep"),
        pytest.param(b'{"n": ' + b"9" * 5000 + b"}\n", 1, "too long", id="huge-int"),
        pytest.param(b'{"a":"x\ty"}\n', 1, "not valid JSON", id="raw-control-char"),
    ],
)
def test_validation_error_names_the_first_bad_line(data: bytes, number: int, fragment: str) -> None:
    code, message, line_no = failure(data)
    assert code == ErrorCode.VALIDATION_ERROR
    assert code == "validation_error"
    assert line_no == number
    assert message.startswith(f"line {number}: ")
    assert fragment in message


def test_error_message_never_echoes_the_line() -> None:
    secret = "S3CR3T" * 50
    _, message, _ = failure(b'{"a":1}\n{"key": "' + secret.encode() + b'" oops}\n')
    assert secret[:6] not in message
    assert len(message) < 120


def test_first_problem_in_file_order_wins() -> None:
    # A bad line 2 comes before a too-long line 3 and the extra line 6.
    data = b'{"a":1}\n[]\n{"x":"' + b"y" * 100 + b'"}\n' + jsonl(line(), line(), line())
    assert failure(data, SMALL)[2] == 2


# ---------------------------------------------------------------- empty_batch


@pytest.mark.parametrize("data", [b"", BOM], ids=["zero-bytes", "only-bom"])
def test_empty_batch(data: bytes) -> None:
    code, message, number = failure(data)
    assert code == ErrorCode.EMPTY_BATCH
    assert number is None
    assert "no lines" in message


def test_empty_batch_is_raised_at_finish_not_before() -> None:
    validator = JsonlValidator()
    validator.feed(b"")
    with pytest.raises(BatchValidationError) as info:
        validator.finish()
    assert info.value.code == "empty_batch"
    assert info.value.to_dict() == {"code": "empty_batch", "message": "the file has no lines"}


# ---------------------------------------------------------------- limits


def small_lines(count: int) -> bytes:
    return b"".join(b'{"i":%d}\n' % i for i in range(count))


def test_line_count_at_the_limit_passes() -> None:
    data = small_lines(5)
    assert outcome(data, SMALL) == ValidationReport(lines=5, bytes=len(data))
    unterminated = data[:-1]
    assert outcome(unterminated, SMALL) == ValidationReport(lines=5, bytes=len(unterminated))


@pytest.mark.parametrize("extra", [b'{"i":5}\n', b"{", b"\n", b"\r\n"])
def test_line_count_past_the_limit_fails_as_the_next_line_starts(extra: bytes) -> None:
    code, message, number = failure(small_lines(5) + extra, SMALL)
    assert code == ErrorCode.LIMIT_EXCEEDED
    assert number == 6
    assert message == "line 6: the file has more than 5 lines"


def test_line_count_fails_on_the_first_byte_of_the_extra_line() -> None:
    validator = JsonlValidator(SMALL)
    validator.feed(small_lines(5))
    with pytest.raises(BatchValidationError) as info:
        validator.feed(b"{")
    assert info.value.code == "limit_exceeded"


def test_total_bytes_at_the_limit_passes_and_one_more_fails() -> None:
    limits = JsonlLimits(max_bytes=40, max_lines=100, max_line_bytes=100)
    data = small_lines(5)  # 5 * 8 = 40 bytes
    assert len(data) == 40
    assert outcome(data, limits) == ValidationReport(lines=5, bytes=40)
    code, message, number = failure(data + b"{", limits)
    assert (code, number) == (ErrorCode.LIMIT_EXCEEDED, None)
    assert message == "file exceeds the limit of 40 bytes"


def test_total_bytes_fail_immediately_even_mid_line() -> None:
    limits = JsonlLimits(max_bytes=40, max_lines=100, max_line_bytes=100)
    validator = JsonlValidator(limits)
    validator.feed(b'{"s":"' + b"x" * 30)
    with pytest.raises(BatchValidationError) as info:
        validator.feed(b"x" * 10)
    assert info.value.code == "limit_exceeded"
    assert validator.bytes_received == 40


def test_bom_counts_toward_total_bytes() -> None:
    limits = JsonlLimits(max_bytes=40, max_lines=100, max_line_bytes=100)
    assert failure(BOM + small_lines(5), limits)[0] == ErrorCode.LIMIT_EXCEEDED


def obj_of_size(size: int) -> bytes:
    """A JSON object line of exactly `size` bytes."""
    filler = size - len(b'{"s":""}')
    assert filler >= 0
    return b'{"s":"' + b"x" * filler + b'"}'


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""])
def test_line_of_exactly_max_line_bytes_passes(ending: bytes) -> None:
    data = obj_of_size(40) + b"\n" + obj_of_size(40) + ending
    assert outcome(data, SMALL) == ValidationReport(lines=2, bytes=len(data))


def test_bom_does_not_count_toward_the_first_line() -> None:
    data = BOM + obj_of_size(40) + b"\n"
    assert outcome(data, SMALL) == ValidationReport(lines=1, bytes=len(data))


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""])
def test_line_one_byte_over_fails(ending: bytes) -> None:
    data = obj_of_size(40) + b"\n" + obj_of_size(41) + ending
    code, message, number = failure(data, SMALL)
    assert (code, number) == (ErrorCode.LIMIT_EXCEEDED, 2)
    assert message == "line 2: longer than the limit of 40 bytes"


def test_line_with_cr_in_the_slack_byte_fails_once_it_is_not_crlf() -> None:
    # 40 bytes of content then "\r": maybe a CRLF, so held; the next byte decides.
    validator = JsonlValidator(SMALL)
    validator.feed(obj_of_size(40) + b"\r")
    with pytest.raises(BatchValidationError) as info:
        validator.feed(b" ")
    assert (info.value.code, info.value.line) == ("limit_exceeded", 1)


def test_default_line_limit_exact_passes_and_one_more_fails() -> None:
    limit = JsonlLimits().max_line_bytes
    assert limit == 10 * 1024 * 1024
    exact = obj_of_size(limit)
    assert feed_all(exact + b"\n", 1 << 20) == ValidationReport(lines=1, bytes=limit + 1)
    result = feed_all(obj_of_size(limit + 1) + b"\n", 1 << 20)
    assert result == ("limit_exceeded", f"line 1: longer than the limit of {limit} bytes", 1)


def test_long_line_fails_before_it_is_all_fed() -> None:
    """A 50 MB line with a 10 MB limit: the validator stops it at once, holding ~10 MB."""
    limits = JsonlLimits(max_line_bytes=10 * 1024 * 1024)
    validator = JsonlValidator(limits)
    chunk = b"x" * (1 << 20)
    fed = 0

    def feed_50_mb() -> None:
        nonlocal fed
        for _ in range(50):
            fed += len(chunk)
            validator.feed(chunk)

    validator.feed(b'{"s":"')
    with pytest.raises(BatchValidationError) as info:
        feed_50_mb()
    assert (info.value.code, info.value.line) == ("limit_exceeded", 1)
    assert fed <= limits.max_line_bytes + len(chunk)
    assert fed < 50 * len(chunk)


def test_errors_are_sticky() -> None:
    validator = JsonlValidator()
    with pytest.raises(BatchValidationError) as first:
        validator.feed(b"[]\n")
    with pytest.raises(BatchValidationError) as again:
        validator.feed(b'{"a":1}\n')
    assert again.value is first.value
    with pytest.raises(BatchValidationError):
        validator.finish()


def test_finish_twice_is_a_programming_error() -> None:
    validator = JsonlValidator()
    validator.feed(b"{}\n")
    validator.finish()
    with pytest.raises(RuntimeError):
        validator.finish()


# ---------------------------------------------------------------- validate_file, iter_lines


def test_validate_file_matches_the_streamed_result(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    data = BOM + jsonl(*(line(i) for i in range(20)))
    path.write_bytes(data)
    for chunk_size in (1, 7, 1 << 20):
        assert validate_file(path, chunk_size=chunk_size) == ValidationReport(20, len(data))
    path.write_bytes(data + b"\n")
    with pytest.raises(BatchValidationError) as info:
        validate_file(path, chunk_size=5)
    assert (info.value.code, info.value.line) == ("validation_error", 21)


def test_validate_file_refuses_an_oversized_file_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"[not even json]\n" * 10)
    with pytest.raises(BatchValidationError) as info:
        validate_file(path, JsonlLimits(max_bytes=100))
    assert info.value.code == "limit_exceeded"


def test_iter_lines_strips_endings_and_bom_and_starts_at_an_offset(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_bytes(BOM + b'{"i":0}\r\n{"i":1}\n{"i":2}\r\n{"i":3}')
    expected = [(0, b'{"i":0}'), (1, b'{"i":1}'), (2, b'{"i":2}'), (3, b'{"i":3}')]
    assert list(iter_lines(path)) == expected
    assert list(iter_lines(path, start=2)) == expected[2:]
    assert list(iter_lines(path, start=4)) == []
    with pytest.raises(ValueError):
        list(iter_lines(path, start=-1))


def test_hundred_thousand_lines_validate_quickly(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    template = '{"id":"img_%06d","skill":"detect","image_url":"https://example.com/%d.jpg"}\n'
    path.write_text("".join(template % (i, i) for i in range(100_000)))
    started = time.perf_counter()
    report = validate_file(path)
    elapsed = time.perf_counter() - started
    assert report.lines == 100_000
    assert report.bytes == path.stat().st_size
    assert elapsed < 3.0, f"100,000 lines took {elapsed:.2f} s"
    with pytest.raises(BatchValidationError) as info:
        validate_file(path, JsonlLimits(max_lines=99_999))
    assert (info.value.code, info.value.line) == ("limit_exceeded", 100_000)
