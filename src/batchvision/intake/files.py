"""Local files to ImageInputs: the one way `analyze`, `run` and the bench scripts read images."""

from __future__ import annotations

from pathlib import Path

from batchvision.core.errors import ErrorCode
from batchvision.core.types import ImageInput, ItemError
from batchvision.intake.body import image_too_large


def file_input(
    index: int, path: Path, max_bytes: int, *, filename: str | None = None
) -> ImageInput:
    """The file's bytes as one pipeline input, or the item error that stands in for them (over
    `max_bytes`, unreadable), so one bad file fails only itself. `filename` is what results
    call the file (default: `path` as given)."""
    item = ImageInput(index=index, filename=str(path) if filename is None else filename)
    try:
        # One read of at most one byte past the limit: no stat-then-read race with a file that
        # grows, and an oversized file is never read whole.
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        item.error = ItemError(ErrorCode.IMAGE_DECODE_FAILED, f"cannot read file: {reason}")
        return item
    if len(data) > max_bytes:
        item.error = image_too_large(max_bytes)
    else:
        item.data = data
    return item
