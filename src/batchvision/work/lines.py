"""One line of a JSONL job file → a `JobLine` (or a `LineError` for that line only).

Line rules (`parse_line`'s decisions):

- `id` is optional; `null` is the same as no id. Which values a line may carry is the surface's
  `check_id` (`id_problem` here); the default, `string_or_integer_id`, takes a string or an
  integer of at most 256 characters, and a surface may take any JSON value. A refused id is
  `invalid_request`. `sent_id` is the id exactly as parsed (echoed in the result line);
  `client_id` / `JobLine.id` is its text: a string as is, any other value its JSON text
  (`42` → "42", `{"a": 1}` → '{"a": 1}').
- `skill` is required, a non-empty string; with `skills=` given, a name outside it is
  `unknown_skill`.
- Exactly one of `image` (a base64 string or `data:` URI), `images` (a non-empty list of
  such, at most `BodyLimits.max_images`) or `image_url` (an absolute http/https URL, fetched
  later by the SSRF-safe fetcher) is required; a key whose value is `null` counts as absent.
  Base64 is decoded by `intake.body.image_from_base64`, so its limits and errors are the same as
  for the JSON API (`image_too_large`, `invalid_request` for bad base64).
- Every other key goes to `params` unchanged, for the skill to validate.
- A line whose strings hold an unpaired UTF-16 surrogate escape (`"\\ud800"`) is refused with
  `invalid_request`, as for JSON request bodies: nothing from it could be echoed back as UTF-8.

Errors from `parse_line` are `LineError`s: `ItemError`s that also carry the line index and the
client id (when it could be read), so a result line can echo the id even for a refused line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import ImageInput, ItemError
from batchvision.intake.body import BodyLimits, image_from_base64, refuse_unpaired_surrogates
from batchvision.jobs.validate import BadLine, clean_line, load_object

MAX_ID_CHARS = 256
RESERVED_KEYS = frozenset({"id", "skill", "image", "images", "image_url"})


@dataclass(frozen=True)
class JobLine:
    index: int  # 0-based line index
    id: str | None  # the client's id as text: a string as is, any other JSON value as JSON
    skill: str
    images: list[ImageInput]  # from image, images or image_url
    params: dict[str, Any]  # every other key of the line
    sent_id: Any = None  # the id exactly as sent, echoed in the result line


@dataclass(frozen=True, kw_only=True)
class LineError(ItemError):
    """A per-line ItemError that also carries the line index and the client's id, if known."""

    index: int
    client_id: str | None = None
    sent_id: Any = None
    bad_image_data: bool = False  # the image field held no decodable base64 (not the bytes)


def string_or_integer_id(raw_id: Any) -> str | None:
    """The native rule: a string or an integer of at most `MAX_ID_CHARS` characters."""
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        return "'id' must be a string or an integer"
    if len(str(raw_id)) > MAX_ID_CHARS:
        return f"'id' is longer than {MAX_ID_CHARS} characters"
    return None


def parse_line(
    index: int,
    raw: bytes,
    limits: BodyLimits,
    skills: Collection[str] | None = None,
    id_problem: Callable[[Any], str | None] | None = None,
) -> JobLine | LineError:
    """Per-line problems become an ItemError (invalid_request: missing/invalid skill or image
    fields, both `image` and `images`, etc.) — never an exception.

    `skills`, when given, is the set of skill names this server runs; a line naming another
    skill gets `unknown_skill`. Without it the skill name is only checked to be a string.
    `id_problem` says why a line's `id` is refused (default: `string_or_integer_id`)."""
    id_problem = id_problem or string_or_integer_id
    client_id: str | None = None
    sent_id: Any = None

    def fail(
        code: ErrorCode, message: str, skill: str | None = None, bad_data: bool = False
    ) -> LineError:
        return LineError(
            code,
            message,
            skill,
            index=index,
            client_id=client_id,
            sent_id=sent_id,
            bad_image_data=bad_data,
        )

    raw = clean_line(index, raw)
    try:
        body = load_object(raw)
        refuse_unpaired_surrogates(body)
    except BadLine as exc:
        return fail(ErrorCode.INVALID_REQUEST, f"invalid line: {exc}")
    except BatchVisionError:
        return fail(ErrorCode.INVALID_REQUEST, "line contains an unpaired surrogate escape")

    raw_id = body.get("id")
    if raw_id is not None:
        problem = id_problem(raw_id)
        if problem is not None:
            return fail(ErrorCode.INVALID_REQUEST, problem)
        sent_id = raw_id
        client_id = raw_id if isinstance(raw_id, str) else json.dumps(raw_id, ensure_ascii=False)

    skill = body.get("skill")
    if skill is None:
        return fail(ErrorCode.INVALID_REQUEST, "missing required field 'skill'")
    if not isinstance(skill, str) or not skill:
        return fail(ErrorCode.INVALID_REQUEST, "'skill' must be a non-empty string")
    if skills is not None and skill not in skills:
        known = ", ".join(sorted(skills))
        return fail(ErrorCode.UNKNOWN_SKILL, f"unknown skill '{skill[:100]}'; available: {known}")

    images = _line_images(body, limits, client_id)
    if isinstance(images, ItemError):
        return fail(images.code, images.message, skill, isinstance(images, _BadImageData))

    params = {key: value for key, value in body.items() if key not in RESERVED_KEYS}
    return JobLine(
        index=index, id=client_id, skill=skill, images=images, params=params, sent_id=sent_id
    )


class _BadImageData(ItemError):
    """An image field whose text is not decodable base64 (or too long to be an image)."""


def _line_images(
    body: dict[str, Any], limits: BodyLimits, client_id: str | None
) -> list[ImageInput] | ItemError:
    given = [key for key in ("image", "images", "image_url") if body.get(key) is not None]
    if not given:
        return ItemError(
            ErrorCode.INVALID_REQUEST, "missing image: send one of 'image', 'images' or 'image_url'"
        )
    if len(given) > 1:
        both = " and ".join(f"'{key}'" for key in given)
        return ItemError(ErrorCode.INVALID_REQUEST, f"send only one of {both}")
    key = given[0]
    value = body[key]

    if key == "image_url":
        if not isinstance(value, str):
            return ItemError(ErrorCode.INVALID_REQUEST, "'image_url' must be a string")
        try:
            url = urlsplit(value)
            valid = url.scheme.lower() in ("http", "https") and bool(url.hostname)
        except ValueError:
            valid = False
        if not valid:
            return ItemError(ErrorCode.INVALID_REQUEST, "'image_url' must be an http(s) URL")
        return [ImageInput(index=0, client_id=client_id, url=value)]

    if key == "image":
        texts, names = [value], ["'image'"]
    else:
        if not isinstance(value, list):
            return ItemError(ErrorCode.INVALID_REQUEST, "'images' must be a list of strings")
        if not value:
            return ItemError(ErrorCode.INVALID_REQUEST, "'images' must not be empty")
        if len(value) > limits.max_images:
            return ItemError(
                ErrorCode.TOO_MANY_IMAGES,
                f"too many images in one line; the limit is {limits.max_images}",
            )
        texts, names = value, [f"'images[{i}]'" for i in range(len(value))]

    decoded: list[ImageInput] = []
    for position, (text, name) in enumerate(zip(texts, names, strict=True)):
        if not isinstance(text, str):
            return ItemError(ErrorCode.INVALID_REQUEST, f"{name} must be a base64 string")
        if text.startswith(("http://", "https://")):
            return ItemError(
                ErrorCode.INVALID_REQUEST, f"{name} holds a URL; send URLs as 'image_url'"
            )
        item = image_from_base64(position, text, limits, client_id=client_id)
        if item.error is not None:
            return _BadImageData(item.error.code, f"{name}: {item.error.message}")
        decoded.append(item)
    return decoded
