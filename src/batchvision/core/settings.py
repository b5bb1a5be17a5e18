"""All configuration in one validated class; built once and passed down, never read at import."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MB = 1024 * 1024


def _default_threads() -> int:
    return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    """Every knob of batchvision. Environment variables use the prefix `BATCHVISION_`."""

    model_config = SettingsConfigDict(env_prefix="BATCHVISION_", extra="ignore")

    # Network
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080

    # Slow and idle clients (a connection holds a file descriptor until it is closed)
    header_timeout_s: Annotated[float, Field(gt=0)] = Field(
        10.0, description="request headers must be complete this long after connect or reply"
    )
    keep_alive_timeout_s: PositiveInt = Field(5, description="idle keep-alive connections close")
    body_timeout_s: Annotated[float, Field(gt=0)] = Field(
        30.0, description="longest wait for the next piece of a request body (408 past it)"
    )
    min_body_rate_bytes_s: PositiveInt = Field(
        1024, description="average body rate required once body_timeout_s has passed"
    )
    max_connections: PositiveInt | None = Field(
        None, description="open connections; default half the open-file limit"
    )

    # Storage and models
    data_dir: Path = Path("./data")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: the SQLite file batchvision.core.db in data_dir"
    )
    model_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=lambda: [Path("./models")])
    model_mirror: Path | None = None
    model_card_paths: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    model_memory_budget_mb: PositiveInt = 2048
    verify_model_checksums: bool = True

    # Accounts
    auth: Literal["required", "disabled"] = "required"
    credits_per_image: Annotated[int, Field(ge=0)] = 1
    credits_per_video: Annotated[int, Field(ge=0)] = 1
    credits_per_vlm_call: Annotated[int, Field(ge=0)] = Field(
        1, description="credits a vision-language backend call costs, on top of its images'"
    )
    credit_reservation_grace_s: Annotated[float, Field(ge=0)] = Field(
        0.0,
        description="start-up refunds reservations older than this that never settled; with "
        "replicas sharing one database, set it above the longest request (then swept that often)",
    )

    # Prometheus metrics at /metrics
    metrics_token: SecretStr | None = Field(
        None,
        description="when set, GET /metrics needs `Authorization: Bearer <token>` (401 otherwise); "
        "unset, /metrics is open to whoever can reach the server (127.0.0.1 by default)",
    )

    # Intake limits, enforced while bytes arrive
    max_image_bytes: PositiveInt = 20 * MB
    max_request_bytes: PositiveInt = 100 * MB
    max_image_pixels: PositiveInt = 64_000_000
    max_images_per_request: PositiveInt = 64
    max_json_field_bytes: PositiveInt = 64 * 1024
    max_fetched_bytes_per_request: PositiveInt = Field(
        100 * MB, description="URL images of one request together, counted while they stream"
    )

    # Videos: spooled to data_dir/tmp/videos while their bytes arrive, deleted when the request
    # ends. Bytes of multipart `videos` parts count against video_max_bytes each, not against
    # max_request_bytes (which bounds everything else in the body).
    video_max_bytes: PositiveInt = Field(500 * MB, description="one video's bytes (413 past it)")
    video_max_duration_s: Annotated[float, Field(gt=0)] = 3600.0
    video_max_pixels: PositiveInt = Field(7680 * 4320, description="one frame's width x height")
    video_max_frames_decoded: PositiveInt = Field(
        200_000, description="frames decoded per video, sampled or not (seeking skips the rest)"
    )
    video_frames_in_flight: PositiveInt = Field(
        8, description="frames of one video analysed at once (model batches form across them)"
    )
    max_videos_per_request: PositiveInt = 20
    video_fetch_timeout_s: Annotated[float, Field(gt=0)] = Field(
        300.0, description="deadline for downloading one video URL (DNS, redirects and body)"
    )
    video_spool_max_age_s: Annotated[float, Field(gt=0)] = Field(
        6 * 3600.0,
        description="spooled video files older than this are a crashed request's: deleted at "
        "start-up and hourly (live ones are deleted by their request as it ends)",
    )

    # Decoded-pixel memory, admitted from header dimensions before decoding
    max_decoded_mb: PositiveInt = Field(
        1536, description="decoded pixels in memory across all requests (server-wide)"
    )
    max_decoded_mb_per_request: PositiveInt = Field(
        1024, description="decoded pixels in memory for one request; its other images wait"
    )
    decoded_wait_s: Annotated[float, Field(gt=0)] = Field(
        30.0, description="how long an image waits for room in max_decoded_mb (then overloaded)"
    )
    tile_side: Annotated[int, Field(ge=256, le=16384)] = Field(
        2048,
        description="full-resolution skills (barcode, ocr) read an image of more than "
        "tile_side² pixels in overlapping tiles of this side, bounding their working memory",
    )
    tile_overlap: Annotated[int, Field(ge=32)] = Field(
        512,
        description="pixels neighbouring tiles share: a barcode or word up to this size "
        "(barcode) or half of it (ocr) lies whole in one tile",
    )

    # URL fetching
    fetch_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    fetch_max_redirects: Annotated[int, Field(ge=0, le=20)] = 5
    url_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Engine
    max_batch_size: PositiveInt = 8
    max_wait_ms: Annotated[float, Field(ge=0)] = 5.0
    max_queued_images: PositiveInt = 512
    worker_threads: PositiveInt = Field(default_factory=_default_threads)
    ort_intra_op_threads: PositiveInt = Field(default_factory=_default_threads)
    ort_inter_op_threads: PositiveInt = 1
    retry_after_s: PositiveInt = 1

    # Batch jobs
    public_url: str | None = Field(
        None, description="base URL in signed output links and callbacks; default http://host:port"
    )
    job_chunk_lines: PositiveInt = Field(50, description="lines per chunk: the unit of work")
    job_output_lines: PositiveInt = Field(
        10_000, description="lines per result file; a multiple of job_chunk_lines"
    )
    job_parallel_chunks: PositiveInt = 2
    job_lines_in_flight: PositiveInt = Field(
        32, description="lines being processed at once, across all jobs (bounds memory)"
    )
    job_max_seconds: Annotated[float, Field(gt=0)] = 24 * 3600.0
    job_retention_days: Annotated[int, Field(ge=1, le=365)] = 7
    job_max_file_bytes: PositiveInt = 2 * 1024**3
    job_max_lines: PositiveInt = 100_000
    job_max_line_bytes: PositiveInt = 10 * MB
    job_max_part_bytes: PositiveInt = 100 * MB
    upload_expiry_hours: Annotated[float, Field(gt=0)] = 24.0
    output_url_ttl_s: PositiveInt = 24 * 3600
    url_signing_secret: SecretStr | None = Field(
        None,
        description="hex key of signed output links, the same on every API replica; default: "
        "a key file created in data_dir",
    )
    job_sweep_interval_s: Annotated[float, Field(gt=0)] = 60.0
    callback_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    callback_base_delay_s: Annotated[float, Field(ge=0)] = 1.0
    callback_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Scale-out (README "Scale-out"): the embedded default needs none of these.
    job_runner: Literal["local", "celery"] = Field(
        "local",
        description="local: jobs run in the server; celery: on `batchvision worker` processes",
    )
    broker_url: str | None = Field(
        None,
        description="Redis URL, e.g. redis://127.0.0.1:6379/0: the Celery broker with "
        "job_runner=celery, the rate-limit store with rate_limit_store=redis",
    )
    job_chunks_in_flight: PositiveInt = Field(
        16,
        description="with job_runner=celery: chunks sent to the workers and not yet recorded, "
        "all jobs together (job_parallel_chunks bounds each job)",
    )
    job_lease_s: Annotated[float, Field(gt=0)] = Field(
        30.0,
        description="with job_runner=celery: a running chunk is sent again once its worker "
        "stopped renewing its lease this long (renewed every third of it)",
    )
    job_queue_lease_s: Annotated[float, Field(gt=0)] = Field(
        300.0,
        description="with job_runner=celery: a chunk no worker took this long after it was "
        "sent is sent again (its message lost, e.g. a broker restarted)",
    )
    job_visibility_timeout_s: Annotated[float, Field(gt=0)] = Field(
        6 * 3600.0,
        description="with job_runner=celery: the broker redelivers a task unacknowledged this "
        "long; longer than the longest chunk",
    )
    rate_limit_store: Literal["memory", "redis"] = Field(
        "memory", description="memory: per process; redis: one bucket per key across replicas"
    )
    blob_store: Literal["local", "s3"] = Field(
        "local",
        description="where uploads, job inputs and results live: local (data_dir/blobs) or s3",
    )
    s3_bucket: str | None = Field(None, description="the bucket, with blob_store=s3")
    s3_prefix: str = Field(
        "", description="key prefix inside the bucket (a trailing '/' is added), e.g. batchvision"
    )
    s3_endpoint_url: str | None = Field(
        None, description="an S3-compatible endpoint (MinIO, Ceph, R2, moto); unset: AWS"
    )
    s3_region: str | None = Field(
        None, description="the bucket's region; unset: boto3's chain (AWS_DEFAULT_REGION, config)"
    )

    # Vision-language backend: the default `vlm` model card (others by card files)
    vlm_url: str | None = Field(
        None, description="base URL of the default VLM server, e.g. http://127.0.0.1:11434/v1"
    )
    vlm_protocol: Literal["openai", "moondream"] = "openai"
    vlm_model: str = Field("", description="model name sent to an openai-protocol server")
    vlm_api_key: SecretStr | None = None
    vlm_grounding: Literal["qwen2.5-vl", "norm1000", "moondream"] | None = Field(
        None, description="coordinate format; default qwen2.5-vl (openai) or moondream"
    )
    vlm_max_concurrency: PositiveInt = Field(4, description="calls in flight per backend")
    vlm_timeout_s: Annotated[float, Field(gt=0)] = Field(60.0, description="one call's limit")
    vlm_image_side: Annotated[int, Field(ge=64, le=4096)] = Field(
        768, description="longest side of an image sent to a VLM (never upscaled)"
    )
    vlm_max_queued: PositiveInt = Field(
        128, description="images waiting or in flight per backend before overloaded"
    )
    vlm_attempts: Annotated[int, Field(ge=1, le=10)] = Field(
        4, description="tries per call on transient failures (connection, 408, 429, 5xx)"
    )
    vlm_retry_base_s: Annotated[float, Field(ge=0)] = Field(
        0.25, description="first retry delay; doubles per retry, full jitter"
    )
    vlm_breaker_failures: PositiveInt = Field(
        5, description="consecutive failed calls that open a backend's circuit breaker"
    )
    vlm_breaker_cooldown_s: Annotated[float, Field(gt=0)] = Field(
        10.0, description="how long an open breaker fails calls fast before one probe"
    )
    # AnimalDetect surface (`/api/v1/batch-detect…`)
    animaldetect_max_batch_bytes: PositiveInt = Field(
        10 * MB, description="batch-detect: combined raw image bytes per request (413 past it)"
    )
    animaldetect_urban_max_batch_bytes: PositiveInt = Field(
        5 * MB, description="batch-detect-urban: combined raw image bytes per request"
    )
    detect_result_ttl_hours: Annotated[float, Field(gt=0)] = Field(
        24.0, description="how long GET /api/v1/batch-detect/{id} serves a stored response"
    )
    # Raku Sight surface (`/api/v1/inference/…`)
    raku_max_file_bytes: PositiveInt = Field(
        20 * MB, description="predict: bytes of one uploaded or fetched file (413 / file error)"
    )
    raku_max_request_bytes: PositiveInt = Field(
        100 * MB, description="predict: bytes of one request body (413 past it)"
    )
    raku_asset_retention_hours: Annotated[float, Field(gt=0)] = Field(
        24.0, description="how long result assets (annotated images, JSON outputs) are kept"
    )
    # BitMind surface (`/batch_image`, `/image`, `/v1/oauth/token`)
    access_token_lifetime_s: PositiveInt = Field(
        3600, description="how long an OAuth access token from /v1/oauth/token works"
    )

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        path = self.data_dir / "batchvision.db"
        # Releases before 0.1.1 named the file by mistake after a module; keep using theirs.
        legacy = self.data_dir / "batchvision.core.db"
        if legacy.exists() and not path.exists():
            path = legacy
        return f"sqlite:///{path.resolve()}"

    @field_validator("model_dirs", "model_card_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        # Environment variables carry path lists the way PATH does.
        if isinstance(value, str):
            return [Path(p) for p in value.split(os.pathsep) if p]
        return value

    @model_validator(mode="after")
    def _outputs_hold_whole_chunks(self) -> Settings:
        if self.job_output_lines % self.job_chunk_lines:
            raise ValueError("job_output_lines must be a multiple of job_chunk_lines")
        return self

    @model_validator(mode="after")
    def _redis_store_has_a_url(self) -> Settings:
        if self.rate_limit_store == "redis" and not self.broker_url:
            raise ValueError("rate_limit_store=redis needs broker_url (BATCHVISION_BROKER_URL)")
        return self

    @field_validator("url_signing_secret")
    @classmethod
    def _signing_secret_is_hex(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(
            r"(?:[0-9a-fA-F]{2}){16,}", value.get_secret_value()
        ):
            raise ValueError("url_signing_secret must be at least 32 hex characters")
        return value

    @model_validator(mode="after")
    def _celery_runner_has_a_broker(self) -> Settings:
        if self.job_runner == "celery" and not self.broker_url:
            raise ValueError("job_runner=celery needs broker_url (BATCHVISION_BROKER_URL)")
        return self

    @model_validator(mode="after")
    def _s3_store_has_a_bucket(self) -> Settings:
        if self.blob_store == "s3" and not self.s3_bucket:
            raise ValueError("blob_store=s3 needs s3_bucket (BATCHVISION_S3_BUCKET)")
        return self

    @model_validator(mode="after")
    def _tiles_advance(self) -> Settings:
        if self.tile_overlap * 2 > self.tile_side:
            raise ValueError("tile_overlap must be at most half of tile_side")
        return self

    @field_validator("url_allow_hosts", "callback_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        if isinstance(value, list):
            return [str(h).strip().lower() for h in value]
        return value
