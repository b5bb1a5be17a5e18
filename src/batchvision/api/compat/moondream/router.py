"""Moondream Batch API (`/v1/batch`), as ../shared/seeds/002 documents it.

Paths, query actions and field names are Moondream's; the work is the native job service's.
Choices where the page is silent:

- Auth is `X-Moondream-Auth: <key>`; errors use batchvision's `{"error": {"code", "message"}}`.
- `mpu-abort` answers 204 with no body (as S3's AbortMultipartUpload does).
- A missing or unknown `action` is 400 `invalid_request`.
- The `key` returned by `mpu-create` is `requests/<owner>/<fileId>.jsonl` (informational).
- Batches created here are listed and read here; native jobs are not (and the reverse).
- `model` in a batch is the detector that runs detect/point lines.
- `partNumber` (mpu-uploadpart) is ASCII digits for 1..10000 (leading zeros allowed); missing or
  anything else is 400 `invalid_request`, as S3 answers 400 InvalidArgument. A bad part number
  in mpu-complete's `parts` is 400 too: this surface answers no 422.
- `cursor` (list) is a `next_cursor` this listing handed out; an empty one is the first page.
  Any other (unknown, another key's batch, a native job) is 400 `invalid_request` with one
  message for all, so a cursor never reveals that an id exists (`job_routes.list_page`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from batchvision.accounts.scoping import Principal
from batchvision.api.access import authorize, header_token
from batchvision.api.compat.moondream.jobs import SURFACE
from batchvision.api.job_routes import base_url, check_part_size, list_page, read_object
from batchvision.api.openapi import BODY, KEYED, NativeErrorBody, error_responses
from batchvision.api.surface import services
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.jobs.uploads import MAX_PART_NUMBER
from batchvision.work.service import JobOptions

router = APIRouter()


def moondream_token(headers: Mapping[str, str]) -> str | None:
    """Moondream clients send `X-Moondream-Auth: <key>`."""
    return header_token(headers, "x-moondream-auth")


# For the OpenAPI document (api/access.py, BEARER): the check is `moondream_token`.
MOONDREAM_AUTH = APIKeyHeader(
    name="X-Moondream-Auth",
    scheme_name="moondreamAuth",
    auto_error=False,
    description="Moondream routes (`/v1/batch…`, `/v1/caption`, `/v1/query`, `/v1/detect`, "
    "`/v1/point`): the API key in `X-Moondream-Auth`.",
)


async def moondream_principal(
    request: Request, _: Annotated[str | None, Security(MOONDREAM_AUTH)]
) -> Principal:
    return await authorize(request, moondream_token(request.headers))


Authorized = Annotated[Principal, Depends(moondream_principal)]
# The page names this segment `:fileId` for the upload's PUT, POST and DELETE and `:batchId` for
# GET: one path to OpenAPI (two templates differing only in a name are one path, and each would
# answer the other's methods), so one name here.
BatchId = Annotated[
    str,
    Path(description="the `fileId` of an upload (PUT, POST, DELETE), or a batch `id` (GET)"),
]


# The statuses each route answers besides its success, for the OpenAPI document (no 422 here:
# the module docstring).
_CREATE_ERRORS = error_responses(NativeErrorBody, (*KEYED, 400, 507))
_PART_ERRORS = error_responses(NativeErrorBody, (*KEYED, *BODY, 404, 409, 507))
_COMPLETE_ERRORS = error_responses(NativeErrorBody, (*KEYED, *BODY, 402, 404, 409, 507))
_ABORT_ERRORS = error_responses(NativeErrorBody, (*KEYED, 400, 404, 409))
_LIST_ERRORS = error_responses(NativeErrorBody, (*KEYED, 400))
_GET_ERRORS = error_responses(NativeErrorBody, (*KEYED, 404))


def _action(request: Request, *allowed: str) -> str:
    action = request.query_params.get("action")
    if action not in allowed:
        expected = " or ".join(f"action={name}" for name in allowed)
        raise BatchVisionError(ErrorCode.INVALID_REQUEST, f"this request needs {expected}")
    return action


_PART_NUMBER = re.compile(r"0*([0-9]{1,5})")  # ASCII digits; bounded before int() sees them


def _part_number(raw: str | None) -> int:
    """`partNumber` from the query: 1..10000, else 400 (S3 answers 400 InvalidArgument)."""
    if raw is None:
        message = f"missing partNumber (an integer from 1 to {MAX_PART_NUMBER})"
        raise BatchVisionError(ErrorCode.INVALID_REQUEST, message)
    digits = _PART_NUMBER.fullmatch(raw)
    if digits is None or not 1 <= int(digits[1]) <= MAX_PART_NUMBER:
        message = f"partNumber must be an integer from 1 to {MAX_PART_NUMBER}"
        raise BatchVisionError(ErrorCode.INVALID_REQUEST, message)
    return int(digits[1])


@contextmanager
def _s3_argument_errors() -> Iterator[None]:
    """S3 has no 422: a malformed argument (a part number in the `parts` list) is 400."""
    try:
        yield
    except BatchVisionError as exc:
        if exc.code is not ErrorCode.INVALID_PARAMETER:
            raise
        raise BatchVisionError(ErrorCode.INVALID_REQUEST, exc.message) from None


@router.post("/v1/batch", responses=_CREATE_ERRORS)
async def create_upload(request: Request, principal: Authorized) -> dict[str, Any]:
    _action(request, "mpu-create")
    upload = await services(request).jobs.create_upload(principal, SURFACE)
    owner = principal.prefix or "default"
    return {
        "fileId": upload.id,
        "uploadId": upload.upload_id,
        "key": f"requests/{owner}/{upload.id}.jsonl",
    }


@router.put("/v1/batch/{batch_id}", responses=_PART_ERRORS)
async def upload_part(request: Request, principal: Authorized, batch_id: BatchId) -> dict[str, Any]:
    _action(request, "mpu-uploadpart")
    query = request.query_params
    part_number = _part_number(query.get("partNumber"))
    jobs = services(request).jobs
    check_part_size(request, jobs.settings.job_max_part_bytes)
    part = await jobs.put_part(
        principal, batch_id, query.get("uploadId"), part_number, request.stream()
    )
    return {"etag": part.etag, "partNumber": part.part_number}


@router.post("/v1/batch/{batch_id}", responses=_COMPLETE_ERRORS)
async def complete_upload(
    request: Request, principal: Authorized, batch_id: BatchId
) -> JSONResponse:
    _action(request, "mpu-complete")
    jobs = services(request).jobs
    body = await read_object(request)
    upload_id = request.query_params.get("uploadId")
    with _s3_argument_errors():
        submitted = await jobs.complete_upload(
            principal, batch_id, upload_id, body.get("parts"), JobOptions()
        )
    job = await jobs.get(principal, submitted.job.id)
    # The page answers "chunking": the batch was accepted for validation, even if a small file
    # is already past it by now. Only a batch refused outright (too large) says "failed".
    status = "failed" if job.state == "failed" else "chunking"
    return JSONResponse({"id": job.id, "status": status, "size": submitted.size})


@router.delete("/v1/batch/{batch_id}", status_code=204, responses=_ABORT_ERRORS)
async def abort_upload(request: Request, principal: Authorized, batch_id: BatchId) -> Response:
    _action(request, "mpu-abort")
    upload_id = request.query_params.get("uploadId")
    await services(request).jobs.abort_upload(principal, batch_id, upload_id)
    return Response(status_code=204)


@router.get("/v1/batch", responses=_LIST_ERRORS)
async def list_batches(
    request: Request, principal: Authorized, limit: str | None = None, cursor: str | None = None
) -> dict[str, Any]:
    return await list_page(
        request, principal, surface=SURFACE, field="batches", limit=limit, cursor=cursor
    )


@router.get("/v1/batch/{batch_id}", responses=_GET_ERRORS)
async def get_batch(request: Request, principal: Authorized, batch_id: BatchId) -> dict[str, Any]:
    jobs = services(request).jobs
    job = await jobs.get(principal, batch_id, surface=SURFACE)
    return jobs.view(job, base_url(request))
