"""HTTP helpers every surface that runs batch jobs shares: paging, part sizes, small JSON
bodies, the base URL its links are made from."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from batchvision.accounts.scoping import Principal
from batchvision.api.bodies import json_object
from batchvision.api.surface import services
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.intake.body import parse_json, read_capped
from batchvision.work.service import part_too_large

DEFAULT_PAGE = 50
MAX_PAGE = 100
_SMALL_BODY_BYTES = 4 * 1024 * 1024  # up to 10,000 parts with their etags


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def page_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    # ASCII digits only, and few of them: int() also reads "٣" and refuses 5,000 digits.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= MAX_PAGE:
        raise BatchVisionError(
            ErrorCode.INVALID_REQUEST, f"limit must be an integer from 1 to {MAX_PAGE}"
        )
    return int(raw)


def check_part_size(request: Request, limit: int) -> None:
    """Refuse a declared oversize part before reading it (the stream is capped as well)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise part_too_large(limit)


async def read_object(request: Request) -> dict[str, Any]:
    """A small JSON object body; an empty body is {} (some clients' upload creation sends none)."""
    body = await read_capped(request.stream(), _SMALL_BODY_BYTES)
    if not body.strip():
        return {}
    return json_object(parse_json(body))


async def list_page(
    request: Request,
    principal: Principal,
    *,
    surface: str,
    field: str,
    limit: str | None,
    cursor: str | None,
) -> dict[str, Any]:
    """One page of the caller's jobs of one surface: `{<field>: [...], next_cursor, has_more}`.

    `cursor` is a `next_cursor` this listing handed out; an empty one means the first page.
    Any other (unknown, another key's job, a job of another surface) is 400 invalid_request,
    the same answer for each, so a cursor never tells whether an id exists."""
    jobs = services(request).jobs
    page, next_cursor = await jobs.page(
        principal, limit=page_limit(limit), cursor=cursor or None, surface=surface
    )
    return {
        field: [jobs.view(job, base_url(request)) for job in page],
        "next_cursor": next_cursor,
        "has_more": next_cursor is not None,
    }
