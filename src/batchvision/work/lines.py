"""One line of a JSONL job file → a `JobLine` (or a `LineError` for that line only).

Line rules (`parse_line`'s decisions), typed by the pydantic envelope `_Envelope`:

- `id` is optional; `null` is the same as no id. Which values a line may carry is the surface's
  `check_id` (`id_problem` here); the default, `string_or_integer_id`, takes a string or an
  integer of at most 256 characters, and a surface may take any JSON value. A refused id is
  `invalid_request`. `sent_id` is the id exactly as parsed (echoed in the result line);
  `client_id` / `JobLine.id` is its text: a string as is, any other value its JSON text
  (`42` → "42", `{"a": 1}` → '{"a": 1}').
- `skill` is required, a non-empty string; with `skills=` given, a name outside it is
  `unknown_skill`.
- Exactly one of `image` (a base64 string or `data:` URI), `images` (a non-empty list of
  such, at most `BodyLimits.max_images`, else `too_many_images`) or `image_url` (an absolute
  http/https URL, fetched later by the SSRF-safe fetcher) is required; a key whose value is
  `null` counts as absent. Base64 is decoded by `intake.body.image_from_base64`, so its limits
  and errors are the same as for the JSON API (`image_too_large`, `invalid_request` for bad
  base64); such a `LineError` has `bad_image_data` set.
- Video lines, on a surface that takes them (`videos=True`: the native one): `video` instead of
  the image fields, holding base64, a `data:` URI or an http(s) URL (its base64 limit is
  `BodyLimits.max_video_bytes`, `video_too_large` past it, though the line's own byte limit
  usually comes first: bigger videos go by URL). Its frames are chosen by `fps`, `start_time`,
  `end_time` and `max_frames` (numbers; the sync API's defaults: 1 frame a second, at most 300),
  which are then the line's own keys, not params; a bad one is `invalid_parameter`.
- Every other key goes to `params` unchanged, for the skill to validate.
- A line whose strings hold an unpaired UTF-16 surrogate escape (`"\\ud800"`) is refused with
  `invalid_request`, as for JSON request bodies: nothing from it could be echoed back as UTF-8.

One problem is reported per line, the first in this order: the id, the skill (its type, then
whether this server runs it), then the image fields (none or several given, then the given
one's type, count and content, item by item). Messages name the field's path and its rule, the
rule being the field's `description`: `'images[1]' must be a base64 string or a data: URI (got
an integer)`, `'images' must not be empty`, `missing required field 'skill'`; a value of the
wrong JSON type adds which type came, never the value itself.

Errors from `parse_line` are `LineError`s: `ItemError`s that also carry the line index and the
client id (when it could be read), so a result line can echo the id even for a refused line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Annotated, Any, cast
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from batchvision.core.errors import BatchVisionError, ErrorCode, did_you_mean, json_type
from batchvision.core.types import ImageInput, ItemError
from batchvision.intake.body import (
    BodyLimits,
    image_from_base64,
    refuse_unpaired_surrogates,
    video_from_base64,
)
from batchvision.intake.video import FrameSampling
from batchvision.jobs.validate import BadLine, clean_line, load_object

MAX_ID_CHARS = 256
IMAGE_KEYS = ("image", "images", "image_url")
RESERVED_KEYS = frozenset({"id", "skill", *IMAGE_KEYS})
VIDEO_KEY = "video"
SAMPLING_KEYS = ("fps", "start_time", "end_time", "max_frames")
VIDEO_RESERVED_KEYS = RESERVED_KEYS | {VIDEO_KEY, *SAMPLING_KEYS}
_DEFAULT_SAMPLING = FrameSampling()
_ECHO_CHARS = 100  # how much of an unknown skill name an error message repeats


@dataclass(frozen=True)
class LineVideo:
    """A video line's video: its bytes (decoded from base64) or its URL, and which frames."""

    sampling: FrameSampling
    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True)
class JobLine:
    index: int  # 0-based line index
    id: str | None  # the client's id as text: a string as is, any other JSON value as JSON
    skill: str
    images: list[ImageInput]  # from image, images or image_url (none for a video line)
    params: dict[str, Any]  # every other key of the line
    sent_id: Any = None  # the id exactly as sent, echoed in the result line
    video: LineVideo | None = None  # a video line's video (then `images` is empty)


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
    videos: bool = False,
) -> JobLine | LineError:
    """Per-line problems become a LineError (see the module docstring) — never an exception.

    `skills`, when given, is the set of skill names this server runs; a line naming another
    skill gets `unknown_skill`. Without it the skill name is only checked to be a string.
    `id_problem` says why a line's `id` is refused (default: `string_or_integer_id`).
    `videos`: the surface takes video lines (`video` is then a reserved key)."""
    body = _load_body(index, raw)
    if isinstance(body, LineError):
        return body
    rules = _Rules(limits, skills, id_problem or string_or_integer_id, videos)
    try:
        envelope: _Envelope = _ENVELOPE_VALIDATOR.validate_python(body, context=rules)
    except ValidationError as exc:
        return _line_error(index, body, exc.errors(include_url=False)[0])
    client_id = _id_text(envelope.id)
    video = envelope.source.video
    if video is not None:
        return _video_line(index, body, envelope, client_id, video)
    return JobLine(
        index=index,
        id=client_id,
        skill=envelope.skill,
        images=envelope.source.inputs(client_id),
        params={key: value for key, value in body.items() if key not in RESERVED_KEYS},
        sent_id=envelope.id,
    )


def _video_line(
    index: int, body: dict[str, Any], envelope: _Envelope, client_id: str | None, video: LineVideo
) -> JobLine | LineError:
    try:
        sampling = _sampling(body)
    except BatchVisionError as exc:
        return LineError(
            exc.code,
            exc.message,
            envelope.skill,
            index=index,
            client_id=client_id,
            sent_id=envelope.id,
        )
    return JobLine(
        index=index,
        id=client_id,
        skill=envelope.skill,
        images=[],
        params={key: value for key, value in body.items() if key not in VIDEO_RESERVED_KEYS},
        sent_id=envelope.id,
        video=replace(video, sampling=sampling),
    )


def _sampling(body: dict[str, Any]) -> FrameSampling:
    """The line's frame sampling; a key absent or null keeps the default."""
    given = {key: body[key] for key in SAMPLING_KEYS if body.get(key) is not None}
    for key, value in given.items():
        wanted = int if key == "max_frames" else int | float
        if isinstance(value, bool) or not isinstance(value, wanted):
            kind = "an integer" if key == "max_frames" else "a number"
            message = f"'{key}' must be {kind} (got {json_type(value)})"
            raise BatchVisionError(ErrorCode.INVALID_PARAMETER, message)
    return FrameSampling(
        fps=given.get("fps", _DEFAULT_SAMPLING.fps),
        start_time=given.get("start_time", _DEFAULT_SAMPLING.start_time),
        end_time=given.get("end_time", _DEFAULT_SAMPLING.end_time),
        max_frames=given.get("max_frames", _DEFAULT_SAMPLING.max_frames),
    )


def _load_body(index: int, raw: bytes) -> dict[str, Any] | LineError:
    try:
        body = load_object(clean_line(index, raw))
        refuse_unpaired_surrogates(body)
    except BadLine as exc:
        return LineError(ErrorCode.INVALID_REQUEST, f"invalid line: {exc}", index=index)
    except BatchVisionError:
        message = "line contains an unpaired surrogate escape"
        return LineError(ErrorCode.INVALID_REQUEST, message, index=index)
    return body


def _id_text(sent_id: Any) -> str | None:
    if sent_id is None or isinstance(sent_id, str):
        return sent_id
    if type(sent_id) is int:  # json.dumps's own text for an int, ~20x faster (1-3 us a line)
        return str(sent_id)
    return json.dumps(sent_id, ensure_ascii=False)


# --- the envelope's validators ------------------------------------------------------------------


@dataclass(slots=True)  # not frozen: a frozen dataclass is 3x slower to make, once per line
class _Rules:
    """What a line is checked against; the validators get it as pydantic's validation context."""

    limits: BodyLimits
    skills: Collection[str] | None
    id_problem: Callable[[Any], str | None]
    videos: bool = False  # `video` is a source field (the surface takes video lines)


# Two custom pydantic error types. Their `ctx` carries the ErrorCode, since not every line
# problem is `invalid_request`.
_SENTENCE = "line_sentence"  # ctx["message"] is the whole message (it may quote client text)
_FIELD = "line_field"  # ctx["reason"] is our own text, "{path}" standing for the field's path


def _refusal(code: ErrorCode, message: str) -> PydanticCustomError:
    return PydanticCustomError(_SENTENCE, "{message}", {"code": code, "message": message})


def _field_refusal(code: ErrorCode, reason: str, bad_data: bool = False) -> PydanticCustomError:
    context = {"code": code, "reason": reason, "bad_data": bad_data}
    return PydanticCustomError(_FIELD, "{reason}", context)


def _accepted_id(raw_id: Any, info: ValidationInfo) -> Any:
    problem = cast(_Rules, info.context).id_problem(raw_id)
    if problem is not None:
        raise _refusal(ErrorCode.INVALID_REQUEST, problem)
    return raw_id


def _known_skill(skill: str, info: ValidationInfo) -> str:
    skills = cast(_Rules, info.context).skills
    if skills is not None and skill not in skills:
        known = ", ".join(sorted(skills))
        shown = skill[:_ECHO_CHARS]
        hint = did_you_mean(skill, skills)
        raise _refusal(
            ErrorCode.UNKNOWN_SKILL, f"unknown skill '{shown}'{hint}; available: {known}"
        )
    return skill


def _at_most_max_images(value: Any, info: ValidationInfo) -> Any:
    """Counted before the items are looked at, as a long list is refused whatever it holds."""
    limit = cast(_Rules, info.context).limits.max_images
    if isinstance(value, list) and len(value) > limit:
        message = f"too many images in one line; the limit is {limit}"
        raise _refusal(ErrorCode.TOO_MANY_IMAGES, message)
    return value


def _decoded_base64(value: Any, info: ValidationInfo) -> Any:
    """Base64 text → its bytes. Any other value passes on unchanged for the strict `bytes` type
    to refuse (with its type named): a value parsed from JSON is never bytes."""
    if not isinstance(value, str):
        return value
    if value.startswith(("http://", "https://")):
        reason = "{path} holds a URL; send URLs as 'image_url'"
        raise _field_refusal(ErrorCode.INVALID_REQUEST, reason)
    item = image_from_base64(0, value, cast(_Rules, info.context).limits)
    if item.error is not None:
        raise _field_refusal(item.error.code, "{path}: " + item.error.message, bad_data=True)
    return item.data


def _video_source(value: Any, info: ValidationInfo) -> LineVideo:
    """`video`: an http(s) URL, or base64 decoded under `BodyLimits.max_video_bytes`."""
    if not isinstance(value, str):
        reason = "{path} must be " + _VIDEO_RULE + f" (got {json_type(value)})"
        raise _field_refusal(ErrorCode.INVALID_REQUEST, reason)
    if value.startswith(("http://", "https://")):
        try:
            return LineVideo(_DEFAULT_SAMPLING, url=_http_url(value))
        except ValueError:
            reason = "{path} is not an absolute http(s) URL"
            raise _field_refusal(ErrorCode.INVALID_REQUEST, reason) from None
    try:
        data = video_from_base64(value, cast(_Rules, info.context).limits.max_video_bytes)
    except BatchVisionError as exc:
        raise _field_refusal(exc.code, "{path}: " + exc.message, bad_data=True) from None
    return LineVideo(_DEFAULT_SAMPLING, data=data)


def _http_url(text: str) -> str:
    try:
        url = urlsplit(text)
        valid = url.scheme.lower() in ("http", "https") and bool(url.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        valid = False
    if not valid:
        raise ValueError("not an absolute http(s) URL")
    return text


# --- the envelope -------------------------------------------------------------------------------

ClientId = Annotated[Any, AfterValidator(_accepted_id)]
SkillName = Annotated[str, Strict(), Field(min_length=1), AfterValidator(_known_skill)]
ImageBytes = Annotated[bytes, Strict(), BeforeValidator(_decoded_base64)]
ImageList = Annotated[list[ImageBytes], Field(min_length=1), BeforeValidator(_at_most_max_images)]
HttpUrlText = Annotated[str, Strict(), AfterValidator(_http_url)]

_BASE64_RULE = "a base64 string or a data: URI"
_VIDEO_RULE = "a base64 string, a data: URI or an http(s) URL"
VideoSource = Annotated[Any, AfterValidator(_video_source)]


class _ImageSource(BaseModel):
    """The image fields that were given (not null): exactly one of the three."""

    model_config = ConfigDict(frozen=True)

    image: ImageBytes | None = Field(None, description=_BASE64_RULE)
    images: ImageList | None = Field(None, description="a list of base64 strings")
    image_url: HttpUrlText | None = Field(None, description="an absolute http(s) URL")
    video: VideoSource | None = Field(None, description=_VIDEO_RULE)

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, given: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if not given:
            kinds = "'image', 'images', 'image_url' or 'video'"
            if not cast(_Rules, info.context).videos:
                kinds = "'image', 'images' or 'image_url'"
            raise _refusal(ErrorCode.INVALID_REQUEST, f"missing image: send one of {kinds}")
        if len(given) > 1:
            both = " and ".join(f"'{key}'" for key in given)
            raise _refusal(ErrorCode.INVALID_REQUEST, f"send only one of {both}")
        return given

    def inputs(self, client_id: str | None) -> list[ImageInput]:
        if self.image_url is not None:
            return [ImageInput(index=0, client_id=client_id, url=self.image_url)]
        found = [self.image] if self.image is not None else self.images or []
        return [ImageInput(index=i, client_id=client_id, data=d) for i, d in enumerate(found)]


class _Envelope(BaseModel):
    """A line's reserved keys. Fields are validated in this order, and the first error is the
    line's, which makes the order of checks the module docstring states."""

    model_config = ConfigDict(frozen=True)

    id: ClientId = None
    skill: SkillName = Field(description="a non-empty string")
    source: _ImageSource  # the image fields, gathered so that "exactly one" is checked first

    @model_validator(mode="before")
    @classmethod
    def _gather(cls, line: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Only the reserved keys, a null one left out as absent; the image fields (and the
        video, on a surface that takes video lines) as `source`."""
        fields = {key: line[key] for key in ("id", "skill") if line.get(key) is not None}
        sources = _VIDEO_SOURCES if cast(_Rules, info.context).videos else IMAGE_KEYS
        fields["source"] = {key: line[key] for key in sources if line.get(key) is not None}
        return fields


_VIDEO_SOURCES = (*IMAGE_KEYS, VIDEO_KEY)

# The model's own validator: `model_validate` adds ~0.8 us of Python around it, 15% of a line.
_ENVELOPE_VALIDATOR = _Envelope.__pydantic_validator__

_FIELD_RULES: dict[str, str] = {
    name: field.description or "valid"
    for model in (_Envelope, _ImageSource)
    for name, field in model.model_fields.items()
}
_FIELD_RULES["images[]"] = _BASE64_RULE  # an item of `images` is what `image` is


# --- errors -------------------------------------------------------------------------------------


def _line_error(index: int, body: dict[str, Any], error: ErrorDetails) -> LineError:
    """The line's first error as its LineError, with what was valid before it: the id once the
    error is past the id, the skill once it is in the image fields."""
    field = error["loc"][0]
    sent_id = body.get("id") if field != "id" else None
    code, message, bad_data = _describe(error)
    return LineError(
        code,
        message,
        body.get("skill") if field == "source" else None,
        index=index,
        client_id=_id_text(sent_id),
        sent_id=sent_id,
        bad_image_data=bad_data,
    )


def _describe(error: ErrorDetails) -> tuple[ErrorCode, str, bool]:
    """(code, message, bad_image_data) of one pydantic error."""
    kind, context = error["type"], error.get("ctx", {})
    if kind == _SENTENCE:
        return context["code"], context["message"], False
    path = [part for part in error["loc"] if part != "source"]
    shown = "'" + _path_text(path) + "'"
    if kind == _FIELD:
        return context["code"], context["reason"].replace("{path}", shown), context["bad_data"]
    return ErrorCode.INVALID_REQUEST, _broken_rule(kind, shown, path, error["input"]), False


def _broken_rule(kind: str, shown: str, path: list[str | int], value: Any) -> str:
    if kind == "missing":
        return f"missing required field {shown}"
    if kind == "too_short":
        return f"{shown} must not be empty"
    rule_key = "".join("[]" if isinstance(part, int) else part for part in path)
    message = f"{shown} must be {_FIELD_RULES.get(rule_key, 'valid')}"
    if kind.endswith("_type"):  # the wrong JSON type: say which one came
        message += f" (got {json_type(value)})"
    return message


def _path_text(path: list[str | int]) -> str:
    """("images", 1) → "images[1]"."""
    return "".join(f"[{part}]" if isinstance(part, int) else part for part in path)
