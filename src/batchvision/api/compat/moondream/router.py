"""Moondream Batch API (`/v1/batch`), as ../shared/seeds/002 documents it.

Paths, query actions and field names are Moondream's; the work is the native job service's.
Choices where the page is silent:

- Auth is `X-Moondream-Auth: <key>`; errors use batchvision's `{"error": {"code", "message"}}`.
- `mpu-abort` answers 204 with no body (as S3's AbortMultipartUpload does).
- A missing or unknown `action` is 400 `invalid_request`.
- The `key` returned by `mpu-create` is `requests/<owner>/<fileId>.jsonl` (informational).
- Batches created here are listed and read here; native jobs are not (and the reverse).
- `model` in a batch is the detector that runs detect/point lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from batchvision.accounts.scoping import Principal
from batchvision.api.access import authorize, header_token
from batchvision.api.compat.moondream.jobs import SURFACE
from batchvision.api.job_routes import base_url, check_part_size, list_page, read_object
from batchvision.api.surface import services
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.work.service import JobOptions

router = APIRouter()


def moondream_token(headers: Mapping[str, str]) -> str | None:
    """Moondream clients send `X-Moondream-Auth: <key>`."""
    return header_token(headers, "x-moondream-auth")


async def moondream_principal(request: Request) -> Principal:
    return await authorize(request, moondream_token(request.headers))


Authorized = Annotated[Principal, Depends(moondream_principal)]


def _action(request: Request, *allowed: str) -> str:
    action = request.query_params.get("action")
    if action not in allowed:
        expected = " or ".join(f"action={name}" for name in allowed)
        raise BatchVisionError(ErrorCode.INVALID_REQUEST, f"this request needs {expected}")
    return action


@router.post("/v1/batch")
async def create_upload(request: Request, principal: Authorized) -> dict[str, Any]:
    _action(request, "mpu-create")
    upload = await services(request).jobs.create_upload(principal, SURFACE)
    owner = principal.prefix or "default"
    return {
        "fileId": upload.id,
        "uploadId": upload.upload_id,
        "key": f"requests/{owner}/{upload.id}.jsonl",
    }


@router.put("/v1/batch/{file_id}")
async def upload_part(request: Request, principal: Authorized, file_id: str) -> dict[str, Any]:
    _action(request, "mpu-uploadpart")
    jobs = services(request).jobs
    check_part_size(request, jobs.settings.job_max_part_bytes)
    query = request.query_params
    number = query.get("partNumber", "")
    part_number: Any = int(number) if number.isdigit() else number
    part = await jobs.put_part(
        principal, file_id, query.get("uploadId"), part_number, request.stream()
    )
    return {"etag": part.etag, "partNumber": part.part_number}


@router.post("/v1/batch/{file_id}")
async def complete_upload(request: Request, principal: Authorized, file_id: str) -> JSONResponse:
    _action(request, "mpu-complete")
    jobs = services(request).jobs
    body = await read_object(request)
    upload_id = request.query_params.get("uploadId")
    submitted = await jobs.complete_upload(
        principal, file_id, upload_id, body.get("parts"), JobOptions()
    )
    job = await jobs.get(principal, submitted.job.id)
    # The page answers "chunking": the batch was accepted for validation, even if a small file
    # is already past it by now. Only a batch refused outright (too large) says "failed".
    status = "failed" if job.state == "failed" else "chunking"
    return JSONResponse({"id": job.id, "status": status, "size": submitted.size})


@router.delete("/v1/batch/{file_id}", status_code=204)
async def abort_upload(request: Request, principal: Authorized, file_id: str) -> Response:
    _action(request, "mpu-abort")
    upload_id = request.query_params.get("uploadId")
    await services(request).jobs.abort_upload(principal, file_id, upload_id)
    return Response(status_code=204)


@router.get("/v1/batch")
async def list_batches(
    request: Request, principal: Authorized, limit: str | None = None, cursor: str | None = None
) -> dict[str, Any]:
    return await list_page(
        request, principal, surface=SURFACE, field="batches", limit=limit, cursor=cursor
    )


@router.get("/v1/batch/{batch_id}")
async def get_batch(request: Request, principal: Authorized, batch_id: str) -> dict[str, Any]:
    jobs = services(request).jobs
    job = await jobs.get(principal, batch_id, surface=SURFACE)
    return jobs.view(job, base_url(request))
