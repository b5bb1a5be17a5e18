"""Access for every surface: where its clients put their API key, the dependency that checks
it, and metered analysis (image rate limit, credits reserved up front, refunds for images that
failed before inference).

Surfaces differ only in where the credential is read; authentication, rate limiting and the
error they raise are shared. A header that is present but malformed counts as missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from batchvision.accounts.scoping import Principal
from batchvision.accounts.service import Meter
from batchvision.api.surface import services
from batchvision.core.types import ImageInput, ItemResult, VideoInput, VideoResult
from batchvision.intake.video import FrameSampling
from batchvision.pipeline import Pipeline, PreparedTask

# Security schemes are declared for the OpenAPI document only ("Authorize" and "Try it out" in
# /docs): FastAPI reads them off the route's dependencies, so each is a dependency with
# auto_error off whose value no route uses; the checks stay the functions below.
BEARER = HTTPBearer(
    scheme_name="bearer",
    auto_error=False,
    description="An API key (`batchvision keys create`) sent as `Authorization: Bearer <key>`.",
)
DocumentedBearer = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


def _clean(token: str) -> str | None:
    """A credential is one non-empty word; anything else counts as missing."""
    token = token.strip()
    return token if token and " " not in token else None


def scheme_token(headers: Mapping[str, str], *schemes: str) -> str | None:
    """The token of an `Authorization: <scheme> <token>` header, for any of `schemes`."""
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    return _clean(token) if scheme.lower() in {s.lower() for s in schemes} else None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    return scheme_token(headers, "Bearer")


def header_token(headers: Mapping[str, str], name: str) -> str | None:
    return _clean(headers.get(name, ""))


def field_token(fields: Mapping[str, object], name: str = "api_key") -> str | None:
    """A key sent as a form or JSON body field (the last one wins)."""
    value = fields.get(name)
    if isinstance(value, list):
        value = value[-1] if value else None
    return _clean(value) if isinstance(value, str) else None


# Native clients are mostly people following the README: the 401 says how to send the key.
NATIVE_MISSING_KEY = (
    "missing API key: send 'Authorization: Bearer <key>' "
    "(the CLI: --api-key or BATCHVISION_API_KEY)"
)


async def authorize(
    request: Request, secret: str | None, missing: str = "missing API key"
) -> Principal:
    """Authenticate `secret`, take a request token, and remember both for the response.
    `missing`: the message when no key was sent."""
    accounts = services(request).accounts
    return admit(request, await accounts.authenticate(secret, missing=missing))


def admit(request: Request, principal: Principal) -> Principal:
    """Take a request token for an authenticated `principal` and remember both."""
    request.state.principal = principal
    request.state.response_headers.update(services(request).accounts.limit_requests(principal))
    return principal


async def native_principal(request: Request, _: DocumentedBearer) -> Principal:
    """Native API: `Authorization: Bearer <key>`; a 401 for a missing key says so."""
    return await authorize(request, bearer_token(request.headers), missing=NATIVE_MISSING_KEY)


async def bearer_principal(request: Request, _: DocumentedBearer) -> Principal:
    """A compat surface that reads a Bearer key too, with its own page's plain 401 message."""
    return await authorize(request, bearer_token(request.headers))


@asynccontextmanager
async def metered_request(
    request: Request,
    principal: Principal,
    images: int,
    *,
    videos: int = 0,
    vlm_calls_per_image: int = 0,
    vlm_calls: int = 0,
    extra_credits: int = 0,
) -> AsyncIterator[Meter]:
    """Image rate limit (a video counts as one image), then the credits of the images (their
    vision-language calls included, per image or, `vlm_calls`, for the request as a whole) and
    videos reserved before any work; the caller marks images that failed before inference
    with `meter.refund_images` (and the credits of calls that did not answer with
    `meter.refund_credits`)."""
    accounts = services(request).accounts
    accounts.limit_images(principal, images + videos)
    request.state.images = images
    async with accounts.metered(
        principal,
        request_id=request.state.request_id,
        images=images,
        videos=videos,
        vlm_calls_per_image=vlm_calls_per_image,
        vlm_calls=vlm_calls,
        extra_credits=extra_credits,
    ) as meter:
        yield meter


async def analyze_metered(
    request: Request,
    principal: Principal,
    pipeline: Pipeline,
    inputs: Sequence[ImageInput],
    tasks: Sequence[PreparedTask],
    *,
    max_pixels: int | None = None,
) -> list[ItemResult]:
    """Run `tasks` over `inputs` for `principal`: each image's credits (`credits_per_image`,
    plus `credits_per_vlm_call` per task a vision-language backend answers), refunded for
    images that failed before inference (unreadable, refused, not fetched) and for
    vision-language calls that did not answer (the backend failed), as jobs bill."""
    vlm_calls = pipeline.vlm_calls_per_image(tasks)
    async with metered_request(
        request, principal, len(inputs), vlm_calls_per_image=vlm_calls
    ) as meter:
        results = await pipeline.analyze(inputs, tasks, max_pixels=max_pixels)
        _refund_images(request, meter, pipeline, tasks, results)
    return results


def _refund_images(
    request: Request,
    meter: Meter,
    pipeline: Pipeline,
    tasks: Sequence[PreparedTask],
    results: Sequence[ItemResult],
) -> None:
    vlm_calls = pipeline.vlm_calls_per_image(tasks)
    decoded = sum(1 for result in results if result.image is not None)
    meter.refund_images(len(results) - decoded)
    unanswered = decoded * vlm_calls - pipeline.vlm_calls_made(tasks, results)
    meter.refund_credits(unanswered * services(request).settings.credits_per_vlm_call)


async def analyze_with_videos_metered(
    request: Request,
    principal: Principal,
    pipeline: Pipeline,
    media: Media,
    tasks: Sequence[PreparedTask],
) -> tuple[list[ItemResult], list[VideoResult]]:
    """Images as `analyze_metered` bills them, beside videos at `credits_per_video` each
    (their frames are not billed as images), plus `credits_per_vlm_call` for each
    vision-language call that answered on a frame: `max_frames` calls per video and task are
    reserved up front, what was not made is handed back. A video that failed (unreadable,
    over a limit) costs nothing."""
    settings = services(request).settings
    vlm_calls = pipeline.vlm_calls_per_image(tasks)
    frame_calls = len(media.videos) * media.sampling.max_frames * vlm_calls
    async with metered_request(
        request,
        principal,
        len(media.images),
        videos=len(media.videos),
        vlm_calls_per_image=vlm_calls,
        extra_credits=frame_calls * settings.credits_per_vlm_call,
    ) as meter:
        images, videos = await asyncio.gather(
            pipeline.analyze(media.images, tasks),
            pipeline.analyze_videos(media.videos, tasks, media.sampling),
        )
        _refund_images(request, meter, pipeline, tasks, images)
        failed = sum(1 for video in videos if video.errors)
        meter.refund_credits(failed * settings.credits_per_video)
        answered = sum(pipeline.vlm_calls_made(tasks, video.frames) for video in videos)
        meter.refund_credits((frame_calls - answered) * settings.credits_per_vlm_call)
    return images, videos


@dataclass(frozen=True)
class Media:
    """What one request asks to analyse: its images, its videos and how to sample them."""

    images: Sequence[ImageInput]
    videos: Sequence[VideoInput] = ()
    sampling: FrameSampling = field(default_factory=FrameSampling)
