"""The native job API: `/v1/jobs` (submit, list, status, results, cancel), S3-style multipart
uploads under `/v1/uploads`, and the signed output downloads every surface links to."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from batchvision.accounts.scoping import Principal
from batchvision.api.access import native_principal
from batchvision.api.job_routes import base_url, check_part_size, list_page, read_object
from batchvision.api.native.job_lines import SURFACE
from batchvision.api.openapi import (
    BODY,
    KEYED,
    TINY_PNG_BASE64,
    NativeErrorBody,
    error_responses,
    streamed,
)
from batchvision.api.surface import services
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.jobs.signing import EXPIRES_PARAM, SIGNATURE_PARAM
from batchvision.jobs.store import JobView
from batchvision.jobs.views import output_path
from batchvision.work.service import Submitted, parse_options

router = APIRouter()

Authorized = Annotated[Principal, Depends(native_principal)]

JSONL = "application/jsonl"


def submitted_body(request: Request, submitted: Submitted, job: JobView) -> dict[str, Any]:
    body = services(request).jobs.view(job, base_url(request))
    body["size"] = submitted.size
    if submitted.callback_secret is not None:
        body["callback_secret"] = submitted.callback_secret
    return body


# --- jobs -------------------------------------------------------------------------------------


# The statuses each route answers besides its success, for the OpenAPI document.
# The body is the job file: one JSON line per image, `{id?, skill, image | images | image_url,
# ...params}` (job_lines.py).
_JOB_LINES = "\n".join(
    json.dumps({"id": str(n), "skill": skill, "image": TINY_PNG_BASE64})
    for n, skill in enumerate(("detect", "metadata"), start=1)
)
_LINES_SCHEMA = {"type": "string", "description": "JSON Lines: `{id, skill, image, ...params}`"}
# The body is read as it comes whatever its Content-Type; text/plain is named beside JSONL for
# clients (and schemathesis) that have no JSONL writer.
_JOB_FILE = {
    "requestBody": {
        "required": True,
        "content": {
            JSONL: {"schema": _LINES_SCHEMA},
            "text/plain": {"schema": _LINES_SCHEMA, "example": _JOB_LINES + "\n"},
        },
    }
}
_SUBMIT_ERRORS = error_responses(NativeErrorBody, (*KEYED, *BODY, 402, 415, 422, 507))
_LIST_ERRORS = error_responses(NativeErrorBody, (*KEYED, 400))
_JOB_ERRORS = error_responses(NativeErrorBody, (*KEYED, 404, 409))
_LINES = streamed(JSONL, "the result lines (JSON Lines)")
_RESULT_ERRORS = error_responses(NativeErrorBody, (*KEYED, 404, 409))
_OUTPUT_ERRORS = error_responses(NativeErrorBody, (400, 403, 404, 500))  # a signed link
_CREATE_ERRORS = error_responses(NativeErrorBody, (*KEYED, 507))
_PART_ERRORS = error_responses(NativeErrorBody, (*KEYED, *BODY, 404, 409, 422, 507))
_COMPLETE_ERRORS = error_responses(NativeErrorBody, (*KEYED, *BODY, 402, 404, 409, 422, 507))
_ABORT_ERRORS = error_responses(NativeErrorBody, (*KEYED, 400, 404, 409))


@router.post("/v1/jobs", status_code=202, responses=_SUBMIT_ERRORS, openapi_extra=_JOB_FILE)
async def submit_job(request: Request, principal: Authorized) -> JSONResponse:
    """The request body is the JSONL file itself, streamed to disk. Options go in the query:
    `callback_url`, `callback_secret`, `retention_days`."""
    jobs = services(request).jobs
    options = parse_options(dict(request.query_params))
    submitted = await jobs.submit_stream(principal, SURFACE, request.stream(), options)
    job = await jobs.get(principal, submitted.job.id)
    return JSONResponse(submitted_body(request, submitted, job), status_code=202)


@router.get("/v1/jobs", responses=_LIST_ERRORS)
async def list_jobs(
    request: Request, principal: Authorized, limit: str | None = None, cursor: str | None = None
) -> dict[str, Any]:
    return await list_page(
        request, principal, surface=SURFACE, field="jobs", limit=limit, cursor=cursor
    )


@router.get("/v1/jobs/{job_id}", responses=_JOB_ERRORS)
async def get_job(request: Request, principal: Authorized, job_id: str) -> dict[str, Any]:
    jobs = services(request).jobs
    return jobs.view(await jobs.get(principal, job_id, surface=SURFACE), base_url(request))


@router.post("/v1/jobs/{job_id}/cancel", responses=_JOB_ERRORS)
async def cancel_job(request: Request, principal: Authorized, job_id: str) -> dict[str, Any]:
    jobs = services(request).jobs
    await jobs.get(principal, job_id, surface=SURFACE)
    return jobs.view(await jobs.cancel(principal, job_id), base_url(request))


@router.get("/v1/jobs/{job_id}/results", responses={**_RESULT_ERRORS, **_LINES})
async def job_results(request: Request, principal: Authorized, job_id: str) -> StreamingResponse:
    """Every result line so far, in line order (all of them once the job has ended)."""
    jobs = services(request).jobs
    job = await jobs.get(principal, job_id, surface=SURFACE)
    return StreamingResponse(jobs.result_lines(job), media_type=JSONL)


@router.get("/v1/jobs/{job_id}/outputs/{index}", responses={**_OUTPUT_ERRORS, **_LINES})
async def download_output(request: Request, job_id: str, index: int) -> StreamingResponse:
    """A result file, by signed link (no API key: the signature is the credential)."""
    jobs = services(request).jobs
    query = request.query_params
    path = output_path(job_id, index)
    if index < 0 or not jobs.signer.verify(
        path, query.get(EXPIRES_PARAM), query.get(SIGNATURE_PARAM)
    ):
        raise BatchVisionError(ErrorCode.FORBIDDEN, "the download link is invalid or has expired")
    file = jobs.open_output(job_id, index)
    return StreamingResponse(_read_all(file), media_type=JSONL)


def _read_all(file: Any) -> Iterator[bytes]:
    with file:
        while block := file.read(1 << 20):
            yield block


# --- multipart uploads ------------------------------------------------------------------------


@router.post("/v1/uploads", status_code=201, responses=_CREATE_ERRORS)
async def create_upload(request: Request, principal: Authorized) -> dict[str, Any]:
    upload = await services(request).jobs.create_upload(principal, SURFACE)
    return {
        "fileId": upload.id,
        "uploadId": upload.upload_id,
        "expires_at": upload.expires_at.isoformat(),
    }


@router.put("/v1/uploads/{file_id}/parts/{part_number}", responses=_PART_ERRORS)
async def upload_part(
    request: Request, principal: Authorized, file_id: str, part_number: int
) -> dict[str, Any]:
    jobs = services(request).jobs
    check_part_size(request, jobs.settings.job_max_part_bytes)
    upload_id = request.query_params.get("uploadId")
    part = await jobs.put_part(principal, file_id, upload_id, part_number, request.stream())
    return {"etag": part.etag, "partNumber": part.part_number, "size": part.size}


@router.post("/v1/uploads/{file_id}/complete", status_code=202, responses=_COMPLETE_ERRORS)
async def complete_upload(request: Request, principal: Authorized, file_id: str) -> JSONResponse:
    """Body: `{"parts": [{"partNumber", "etag"}], "callback_url"?, "retention_days"?}`."""
    jobs = services(request).jobs
    body = await read_object(request)
    options = parse_options(body)
    upload_id = request.query_params.get("uploadId")
    submitted = await jobs.complete_upload(
        principal, file_id, upload_id, body.get("parts"), options
    )
    job = await jobs.get(principal, submitted.job.id)
    return JSONResponse(submitted_body(request, submitted, job), status_code=202)


@router.delete("/v1/uploads/{file_id}", status_code=204, responses=_ABORT_ERRORS)
async def abort_upload(request: Request, principal: Authorized, file_id: str) -> Response:
    await services(request).jobs.abort_upload(
        principal, file_id, request.query_params.get("uploadId")
    )
    return Response(status_code=204)
