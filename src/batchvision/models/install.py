"""What every way of installing a model file shares: its error, and a copy that is hashed and
checked against the card as the bytes are written."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Generator

from batchvision.core.fsutil import AtomicFile
from batchvision.models.cards import ExpectedFile

CHUNK_BYTES = 1 << 20


class PullError(Exception):
    """A model could not be installed; the message names the model and the reason, safe to print."""


def hashed_copy(
    label: str, chunks: Generator[bytes, None, None], out: AtomicFile, want: ExpectedFile
) -> None:
    """`chunks` written to `out` (not committed), refused as soon as they pass the expected size
    and at the end unless their sha256 and size are the expected ones. `label` names the file."""
    digest = hashlib.sha256()
    size = 0
    with contextlib.closing(chunks):  # a download or file handle is released at once
        for chunk in chunks:
            size += len(chunk)
            if want.size_bytes is not None and size > want.size_bytes:
                raise PullError(f"{label}: received more than the expected {want.size_bytes} bytes")
            digest.update(chunk)
            out.write(chunk)
    if want.sha256 is not None and digest.hexdigest() != want.sha256:
        raise PullError(
            f"{label}: sha256 mismatch: expected {want.sha256}, got {digest.hexdigest()}"
        )
    if want.size_bytes is not None and size != want.size_bytes:
        raise PullError(f"{label}: size mismatch: expected {want.size_bytes} bytes, got {size}")
