"""batchvision's Python client: the native API of a running server, sync and async.

    from batchvision.client import Client

    with Client("http://127.0.0.1:8080") as bv:  # the key from BATCHVISION_API_KEY
        reply = bv.analyze(["photo.jpg"], ["detect"])
        for found in reply.results[0].outputs["detect"]["objects"]:
            print(found["label"], found["score"])
        job = bv.jobs.submit("batch.jsonl", wait=True, progress=True)
        bv.jobs.download(job, "results/")

`AsyncClient` has the same methods, awaited. A server's refusal raises `BatchVisionAPIError`
(`status`, `code`, `message`); transport failures stay httpx's. The package imports nothing of
the server (import-linter checks it), so it works against any batchvision server, local or
remote, with none of its models or database.
"""

from batchvision.client.aio import AsyncClient, AsyncJobs
from batchvision.client.errors import BatchVisionAPIError, BatchVisionClientError
from batchvision.client.results import (
    AnalyzeResponse,
    ErrorInfo,
    ImageResult,
    Job,
    JobOutput,
    JobPage,
    JobProgress,
    Usage,
    VideoResult,
)
from batchvision.client.sync import Client, Jobs
from batchvision.client.wire import VideoSampling

__all__ = [
    "AnalyzeResponse",
    "AsyncClient",
    "AsyncJobs",
    "BatchVisionAPIError",
    "BatchVisionClientError",
    "Client",
    "ErrorInfo",
    "ImageResult",
    "Job",
    "JobOutput",
    "JobPage",
    "JobProgress",
    "Jobs",
    "Usage",
    "VideoResult",
    "VideoSampling",
]
