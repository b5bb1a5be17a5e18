"""Tests for the per-line parser of JSONL job files (`work/lines.py`): ids, skills, image fields,
params, and per-line errors that never fail the batch."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from batchvision.core.errors import ErrorCode
from batchvision.core.types import ImageInput, ItemError
from batchvision.intake.body import BodyLimits
from batchvision.jobs.validate import iter_lines
from batchvision.work.lines import JobLine, LineError, parse_line

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
PNG_B64 = base64.b64encode(PNG).decode()
BODY_LIMITS = BodyLimits(
    max_request_bytes=1 << 20, max_image_bytes=4096, max_images=3, max_field_bytes=1024
)
BOM = b"\xef\xbb\xbf"


def jsonl(*objects: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(obj).encode() + b"\n" for obj in objects)


def line(i: int = 0) -> dict[str, Any]:
    return {"id": i, "skill": "detect", "image_url": f"https://x/{i}.jpg"}


def test_iter_lines_feeds_parse_line(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_bytes(BOM + jsonl(*(line(i) for i in range(5))).replace(b"\n", b"\r\n"))
    parsed = [parse_line(i, raw, BODY_LIMITS) for i, raw in iter_lines(path, start=3)]
    assert [(p.index, p.id) for p in parsed if isinstance(p, JobLine)] == [(3, "3"), (4, "4")]


# ---------------------------------------------------------------- parse_line


def parse(obj: dict[str, Any] | bytes, index: int = 0, **kwargs: Any) -> JobLine | LineError:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return parse_line(index, raw, BODY_LIMITS, **kwargs)


def ok(obj: dict[str, Any] | bytes, **kwargs: Any) -> JobLine:
    result = parse(obj, **kwargs)
    assert isinstance(result, JobLine), result
    return result


def err(obj: dict[str, Any] | bytes, **kwargs: Any) -> LineError:
    result = parse(obj, **kwargs)
    assert isinstance(result, ItemError), result
    assert isinstance(result, LineError)
    return result


def test_image_base64() -> None:
    job = ok({"id": "a", "skill": "caption", "image": PNG_B64, "length": "short"}, index=4)
    assert job == JobLine(
        index=4,
        id="a",
        skill="caption",
        images=[ImageInput(index=0, client_id="a", data=PNG)],
        params={"length": "short"},
        sent_id="a",
    )


def test_image_data_uri() -> None:
    job = ok({"skill": "detect", "image": "data:image/png;base64," + PNG_B64})
    assert [image.data for image in job.images] == [PNG]
    assert job.id is None


def test_images_list() -> None:
    other = base64.b64encode(b"second").decode()
    job = ok({"skill": "query", "images": [PNG_B64, other], "question": "same?"})
    assert [(i.index, i.data) for i in job.images] == [(0, PNG), (1, b"second")]
    assert job.params == {"question": "same?"}


def test_image_url_and_params_keep_the_rest() -> None:
    job = ok(b'{"skill":"detect","image_url":"https://x/y.jpg","threshold":0.5}')
    assert job.images == [ImageInput(index=0, url="https://x/y.jpg")]
    assert job.params == {"threshold": 0.5}
    assert job.skill == "detect"


def test_params_are_passed_unchanged() -> None:
    settings = {"temperature": 0.7, "max_tokens": 256}
    job = ok({"skill": "caption", "image_url": "http://h/i.png", "settings": settings, "x": None})
    assert job.params == {"settings": settings, "x": None}


@pytest.mark.parametrize(
    ("raw_id", "expected"),
    [("img_001", "img_001"), (7, "7"), (-3, "-3"), ("", ""), (None, None), ("x" * 256, "x" * 256)],
)
def test_id_forms(raw_id: Any, expected: str | None) -> None:
    job = ok({"id": raw_id, "skill": "detect", "image_url": "https://x/y.jpg"})
    assert job.id == expected
    assert job.sent_id == raw_id and type(job.sent_id) is type(raw_id)
    assert job.images[0].client_id == expected


@pytest.mark.parametrize(
    "raw_id",
    ["x" * 257, 10**300, 1.5, True, ["a"], {"a": 1}],
    ids=["long-str", "long-int", "float", "bool", "list", "object"],
)
def test_bad_ids(raw_id: Any) -> None:
    error = err({"id": raw_id, "skill": "detect", "image_url": "https://x/y.jpg"}, index=9)
    assert error.code == ErrorCode.INVALID_REQUEST
    assert "'id'" in error.message
    assert (error.index, error.client_id) == (9, None)


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        pytest.param({"image": PNG_B64}, "missing required field 'skill'", id="missing-skill"),
        pytest.param({"skill": 3, "image": PNG_B64}, "'skill' must be", id="int-skill"),
        pytest.param({"skill": "", "image": PNG_B64}, "'skill' must be", id="empty-skill"),
        pytest.param({"skill": None, "image": PNG_B64}, "missing required field", id="null"),
        pytest.param({"skill": "detect"}, "missing image", id="no-image"),
        pytest.param({"skill": "detect", "image": None}, "missing image", id="null-image"),
        pytest.param(
            {"skill": "q", "image": PNG_B64, "images": [PNG_B64]},
            "only one of 'image' and 'images'",
            id="image-and-images",
        ),
        pytest.param(
            {"skill": "q", "image": PNG_B64, "image_url": "https://x/y"},
            "only one of 'image' and 'image_url'",
            id="image-and-url",
        ),
        pytest.param({"skill": "q", "images": PNG_B64}, "must be a list", id="images-not-list"),
        pytest.param({"skill": "q", "images": []}, "must not be empty", id="images-empty"),
        pytest.param({"skill": "q", "images": [PNG_B64, 5]}, "'images[1]'", id="images-int"),
        pytest.param({"skill": "q", "image": 5}, "'image' must be a base64", id="image-int"),
        pytest.param({"skill": "q", "image": "not base64!!"}, "not valid base64", id="bad-b64"),
        pytest.param(
            {"skill": "q", "images": [PNG_B64, "%%%"]}, "'images[1]': image data", id="bad-b64-2"
        ),
        pytest.param(
            {"skill": "q", "image": "data:image/png,abc"}, "must be base64", id="data-uri-plain"
        ),
        pytest.param({"skill": "q", "image": "https://x/y.jpg"}, "'image_url'", id="url-in-image"),
        pytest.param({"skill": "q", "image_url": 5}, "http(s) URL (got an integer)", id="url-int"),
        pytest.param({"skill": "q", "image_url": "ftp://x/y"}, "http(s) URL", id="url-ftp"),
        pytest.param({"skill": "q", "image_url": "https://"}, "http(s) URL", id="url-no-host"),
        pytest.param({"skill": "q", "image_url": "/etc/passwd"}, "http(s) URL", id="url-path"),
        pytest.param({"skill": "q", "image_url": "http://[::1"}, "http(s) URL", id="url-bad"),
        pytest.param({"skill": "q\ud800", "image": PNG_B64}, "surrogate", id="surrogate"),
    ],
)
def test_invalid_request(obj: dict[str, Any], fragment: str) -> None:
    error = err(obj)
    assert error.code == ErrorCode.INVALID_REQUEST
    assert fragment in error.message


def test_errors_carry_the_index_and_the_client_id() -> None:
    error = err({"id": 12, "skill": "detect", "image": "%%%"}, index=5)
    assert (error.index, error.client_id, error.skill) == (5, "12", "detect")
    assert error.to_dict() == {
        "code": "invalid_request",
        "message": "'image': image data is not valid base64",
        "skill": "detect",
    }


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"image": PNG_B64}, "missing required field 'skill'"),
        ({"skill": 3, "image": PNG_B64}, "'skill' must be a non-empty string (got an integer)"),
        ({"skill": "", "image": PNG_B64}, "'skill' must be a non-empty string"),
        ({"skill": "q"}, "missing image: send one of 'image', 'images' or 'image_url'"),
        (
            {"skill": "q", "image": PNG_B64, "images": [PNG_B64], "image_url": "https://x/y"},
            "send only one of 'image' and 'images' and 'image_url'",
        ),
        (
            {"skill": "q", "image": True},
            "'image' must be a base64 string or a data: URI (got a boolean)",
        ),
        (
            {"skill": "q", "images": {"a": 1}},
            "'images' must be a list of base64 strings (got an object)",
        ),
        ({"skill": "q", "images": []}, "'images' must not be empty"),
        (
            {"skill": "q", "images": [PNG_B64, [PNG_B64]]},
            "'images[1]' must be a base64 string or a data: URI (got an array)",
        ),
        (
            {"skill": "q", "images": [PNG_B64, None]},
            "'images[1]' must be a base64 string or a data: URI (got null)",
        ),
        (
            {"skill": "q", "images": ["http://x/y.jpg"]},
            "'images[0]' holds a URL; send URLs as 'image_url'",
        ),
        ({"skill": "q", "image_url": "x/y.jpg"}, "'image_url' must be an absolute http(s) URL"),
        (
            {"skill": "q", "image_url": 1.5},
            "'image_url' must be an absolute http(s) URL (got a float)",
        ),
    ],
)
def test_messages_name_the_field_path_and_its_rule(obj: dict[str, Any], message: str) -> None:
    assert err(obj).message == message


@pytest.mark.parametrize(
    ("obj", "code", "message"),
    [
        pytest.param(
            {"id": 1.5, "skill": 3, "images": 5},
            ErrorCode.INVALID_REQUEST,
            "'id' must be a string or an integer",
            id="id-before-skill",
        ),
        pytest.param(
            {"skill": 3, "images": 5},
            ErrorCode.INVALID_REQUEST,
            "'skill' must be a non-empty string (got an integer)",
            id="skill-before-images",
        ),
        pytest.param(
            {"skill": "caption", "images": 5},
            ErrorCode.UNKNOWN_SKILL,
            "unknown skill 'caption'; available: detect",
            id="unknown-skill-before-images",
        ),
        pytest.param(
            {"skill": "detect", "image": 5, "images": 5},
            ErrorCode.INVALID_REQUEST,
            "send only one of 'image' and 'images'",
            id="several-before-their-types",
        ),
        pytest.param(
            {"skill": "detect", "images": [5, 5, 5, 5]},
            ErrorCode.TOO_MANY_IMAGES,
            "too many images in one line; the limit is 3",
            id="count-before-items",
        ),
        pytest.param(
            {"skill": "detect", "images": ["%%%", 5]},
            ErrorCode.INVALID_REQUEST,
            "'images[0]': image data is not valid base64",
            id="items-in-order",
        ),
    ],
)
def test_the_first_problem_in_the_order_of_checks_is_the_lines(
    obj: dict[str, Any], code: ErrorCode, message: str
) -> None:
    error = err(obj, skills={"detect"})
    assert (error.code, error.message) == (code, message)


def test_an_error_carries_what_was_valid_before_it() -> None:
    bad_id = err({"id": [1], "skill": "detect", "image_url": "https://x/y"}, index=2)
    assert (bad_id.client_id, bad_id.sent_id, bad_id.skill) == (None, None, None)
    bad_skill = err({"id": 7, "skill": "", "image_url": "https://x/y"})
    assert (bad_skill.client_id, bad_skill.sent_id, bad_skill.skill) == ("7", 7, None)
    bad_image = err({"id": "a", "skill": "detect", "image_url": "ftp://x/y"})
    assert (bad_image.client_id, bad_image.sent_id, bad_image.skill) == ("a", "a", "detect")


@pytest.mark.parametrize(
    ("image", "bad_data"),
    [
        ("%%%", True),
        ("data:image/png,abc", True),
        (base64.b64encode(b"x" * 5000).decode(), True),
        (5, False),
        ("https://x/y.jpg", False),
    ],
    ids=["bad-base64", "plain-data-uri", "too-large", "not-a-string", "a-url"],
)
def test_bad_image_data_marks_text_that_decodes_to_no_image(image: Any, bad_data: bool) -> None:
    assert err({"skill": "detect", "image": image}).bad_image_data is bad_data
    assert err({"skill": "detect", "images": [PNG_B64, image]}).bad_image_data is bad_data


def test_image_too_large_and_too_many_images() -> None:
    big = base64.b64encode(b"x" * 5000).decode()
    assert err({"skill": "d", "image": big}).code == ErrorCode.IMAGE_TOO_LARGE
    many = {"skill": "q", "images": [PNG_B64] * 4}
    assert err(many).code == ErrorCode.TOO_MANY_IMAGES
    assert len(ok({"skill": "q", "images": [PNG_B64] * 3}).images) == 3


def test_unknown_skill_when_the_skill_set_is_given() -> None:
    skills = {"detect", "ocr"}
    error = err({"skill": "caption", "image": PNG_B64}, skills=skills)
    assert error.code == ErrorCode.UNKNOWN_SKILL
    assert error.message == "unknown skill 'caption'; available: detect, ocr"
    assert ok({"skill": "ocr", "image": PNG_B64}, skills=skills).skill == "ocr"
    assert ok({"skill": "caption", "image": PNG_B64}).skill == "caption"


@pytest.mark.parametrize(
    "raw",
    [b"[1]", b"", b"{", b'{"a": NaN}', b'{"a":"\xff"}'],
    ids=["array", "empty", "broken", "nan", "bad-utf8"],
)
def test_unvalidated_garbage_is_an_item_error_not_an_exception(raw: bytes) -> None:
    error = err(raw)
    assert error.code == ErrorCode.INVALID_REQUEST
    assert error.message.startswith("invalid line: ")


def test_parse_line_tolerates_crlf_and_a_bom_on_line_zero() -> None:
    raw = BOM + b'{"skill":"detect","image_url":"https://x/y.jpg"}\r'
    assert ok(raw).skill == "detect"
    assert err(raw[:-1], index=1).code == ErrorCode.INVALID_REQUEST  # a BOM only on line 0


def test_duplicate_keys_last_wins() -> None:
    job = ok(b'{"skill":"ocr","skill":"detect","image_url":"https://x/y.jpg","t":1,"t":2}')
    assert (job.skill, job.params) == ("detect", {"t": 2})


def collect(lines: Iterable[bytes]) -> list[JobLine | LineError]:
    return [parse_line(i, raw, BODY_LIMITS) for i, raw in enumerate(lines)]


def test_one_bad_line_does_not_affect_the_others() -> None:
    results = collect(
        [
            b'{"id":"a","skill":"detect","image":"' + PNG_B64.encode() + b'"}',
            b'{"id":"b","skill":"detect"}',
            b'{"id":"c","skill":"detect","image_url":"https://x/c.jpg"}',
        ]
    )
    assert [type(r).__name__ for r in results] == ["JobLine", "LineError", "JobLine"]
    assert [r.id if isinstance(r, JobLine) else r.client_id for r in results] == ["a", "b", "c"]


# ---------------------------------------------------------------- video lines

VIDEO_LIMITS = BodyLimits(
    max_request_bytes=1 << 20,
    max_image_bytes=4096,
    max_images=3,
    max_field_bytes=1024,
    max_video_bytes=100,
)


def video_line(**fields: Any) -> dict[str, Any]:
    return {"skill": "detect", "video": base64.b64encode(b"v" * 50).decode(), **fields}


def video_ok(obj: dict[str, Any]) -> JobLine:
    parsed = parse_line(0, json.dumps(obj).encode(), VIDEO_LIMITS, videos=True)
    assert isinstance(parsed, JobLine), parsed
    return parsed


def test_a_video_line_takes_base64_or_a_url_and_its_sampling_keys() -> None:
    parsed = video_ok(video_line(fps=2, start_time=1.5, max_frames=7, threshold=0.4))
    assert parsed.images == [] and parsed.video is not None
    assert parsed.video.data == b"v" * 50 and parsed.video.url is None
    sampling = parsed.video.sampling
    assert (sampling.fps, sampling.start_time, sampling.end_time, sampling.max_frames) == (
        2,
        1.5,
        None,
        7,
    )
    assert parsed.params == {"threshold": 0.4}  # the sampling keys are the line's own
    by_url = video_ok({"skill": "detect", "video": "https://x/clip.mp4"})
    assert by_url.video is not None and by_url.video.url == "https://x/clip.mp4"
    assert by_url.video.sampling.fps == 1.0 and by_url.video.sampling.max_frames == 300


@pytest.mark.parametrize(
    ("fields", "code", "fragment"),
    [
        ({"fps": "fast"}, ErrorCode.INVALID_PARAMETER, "'fps' must be a number (got a string)"),
        ({"max_frames": 1.5}, ErrorCode.INVALID_PARAMETER, "'max_frames' must be an integer"),
        ({"fps": True}, ErrorCode.INVALID_PARAMETER, "'fps' must be a number (got a boolean)"),
        ({"fps": 0}, ErrorCode.INVALID_PARAMETER, "fps must be greater than 0"),
        ({"start_time": 3, "end_time": 2}, ErrorCode.INVALID_PARAMETER, "end_time must be after"),
        ({"video": 7}, ErrorCode.INVALID_REQUEST, "'video' must be a base64 string"),
        ({"video": "http://"}, ErrorCode.INVALID_REQUEST, "'video' is not an absolute http(s)"),
        ({"video": "!!"}, ErrorCode.INVALID_REQUEST, "video data is not valid base64"),
        ({"video": "dg" * 200}, ErrorCode.VIDEO_TOO_LARGE, "over 100 bytes"),
        ({"image_url": "https://x/a.jpg"}, ErrorCode.INVALID_REQUEST, "send only one of"),
    ],
)
def test_a_bad_video_line_is_refused_with_its_code(
    fields: dict[str, Any], code: ErrorCode, fragment: str
) -> None:
    refused = parse_line(0, json.dumps(video_line(**fields)).encode(), VIDEO_LIMITS, videos=True)
    assert isinstance(refused, LineError)
    assert refused.code == code and fragment in refused.message, refused.message


def test_without_video_lines_video_is_a_plain_param() -> None:
    """A surface that takes images only (Moondream Batch) keeps `video` among the params,
    and a line with no image is refused for that, naming only the image fields."""
    refused = err(video_line())
    assert refused.message == "missing image: send one of 'image', 'images' or 'image_url'"
    with_image = ok(video_line(image=PNG_B64))
    assert "video" in with_image.params and with_image.video is None
    no_source = parse_line(0, b'{"skill": "detect"}', VIDEO_LIMITS, videos=True)
    assert isinstance(no_source, LineError)
    assert no_source.message.endswith("'image', 'images', 'image_url' or 'video'")
