"""The Raku Sight request and result shapes (../shared/seeds/003; the choices the page leaves
open are listed in the router's docstring and the README).

Requests: v1 sends `metadata` form fields, one JSON object per file (`{"is_yolo", "is_llm"}`,
booleans; a missing flag is false, other keys are ignored); v2 sends a JSON body
`{api_key, query, data: [{image_url, filename, is_yolo, is_llm}]}`. The result entry of a file is
`{index, filename, yolo, llm, assets, error?}`; `yolo`, `llm` and `assets` are null when that
part did not run or failed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from batchvision.api.bodies import refusal
from batchvision.core.errors import BatchVisionError, ErrorCode, describe_problems, echo
from batchvision.core.types import normalized_xyxy

MAX_FILES = 50
MAX_QUERY_CHARS = 4000  # the query skill's question limit
MAX_URL_CHARS = 8192
MAX_FILENAME_CHARS = 255
DEFAULT_LINK_SECONDS = 3600
MAX_LINK_SECONDS = 86_400


class FileFlags(BaseModel):
    """What to run on one file. Strict: `"true"` or `1` is a client mistake to name."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    is_yolo: StrictBool = False
    is_llm: StrictBool = False


class UrlItem(FileFlags):
    image_url: Annotated[StrictStr, Field(min_length=1, max_length=MAX_URL_CHARS)]
    filename: Annotated[StrictStr, Field(max_length=MAX_FILENAME_CHARS)] | None = None


class UrlBatch(BaseModel):
    """The v2 body; `api_key` is read by the access layer, `data` is counted before this."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    api_key: StrictStr | None = None
    query: StrictStr | None = None
    data: Annotated[list[UrlItem], Field(min_length=1)]


def _invalid(message: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.INVALID_REQUEST, message)


def too_many_files(count: int) -> BatchVisionError:
    return BatchVisionError(
        ErrorCode.TOO_MANY_IMAGES, f"{count} files in one request; the limit is {MAX_FILES}"
    )


def parse_flags(text: str, index: int) -> FileFlags:
    """One `metadata` form value: a JSON object of booleans, or a 400 naming the entry."""
    where = f"metadata[{index}]"
    try:
        value = json.loads(text)
    except ValueError:
        raise _invalid(f"{where}: must be a JSON object, got {echo(text)!r}") from None
    if not isinstance(value, dict):
        raise _invalid(f'{where}: must be a JSON object like {{"is_yolo": true}}')
    try:
        return FileFlags.model_validate(value)
    except ValidationError as exc:
        problems = [{**e, "loc": (where, *e["loc"])} for e in exc.errors()]
        raise _invalid(describe_problems(problems)) from None


def parse_metadata(texts: Sequence[str], files: int) -> list[FileFlags]:
    """The `metadata` fields, one per file in the same order."""
    if len(texts) != files:
        raise _invalid(
            f"metadata must have one entry per file: got {len(texts)} metadata for {files} files"
        )
    return [parse_flags(text, i) for i, text in enumerate(texts)]


def parse_query(value: object) -> str | None:
    """The natural-language query; absent, null or blank means none."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid("query: must be a string")
    query = value.strip()
    if len(query) > MAX_QUERY_CHARS:
        raise _invalid(f"query: at most {MAX_QUERY_CHARS} characters, got {len(query)}")
    return query or None


def parse_url_batch(body: Any) -> UrlBatch:
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object")
    data = body.get("data")
    if isinstance(data, list) and len(data) > MAX_FILES:
        raise too_many_files(len(data))
    try:
        return UrlBatch.model_validate(body)
    except ValidationError as exc:
        raise refusal(exc) from None


# --- the result entry ----------------------------------------------------------------------


def yolo_part(detect: Mapping[str, Any], width: int, height: int) -> dict[str, Any]:
    """The detect skill's pixel boxes, with fractions of the image beside them."""
    return {
        "objects": [
            {
                "label": item["label"],
                "class_id": item["class_id"],
                "confidence": item["score"],
                "box": item["box"],
                "box_normalized": normalized_xyxy(item["box"], width, height),
            }
            for item in detect["objects"]
        ]
    }


def llm_part(query: Mapping[str, Any]) -> dict[str, Any]:
    """The answer and the tokens the backend reported (null when it reported none)."""
    return {"answer": query["answer"], "usage": query.get("usage")}


def result_entry(
    index: int,
    filename: str | None,
    *,
    yolo: dict[str, Any] | None = None,
    llm: dict[str, Any] | None = None,
    assets: dict[str, Any] | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "index": index,
        "filename": filename,
        "yolo": yolo,
        "llm": llm,
        "assets": assets,
    }
    if error is not None:
        entry["error"] = error
    return entry


class SignedUrlRequest(BaseModel):
    """`POST /assets/signed-url`; `api_key` is read by the access layer."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    api_key: StrictStr | None = None
    object_path: Annotated[StrictStr, Field(min_length=1, max_length=512)]
    expires_in: Annotated[StrictInt, Field(ge=1, le=MAX_LINK_SECONDS)] = DEFAULT_LINK_SECONDS
