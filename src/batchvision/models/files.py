"""Model files in the model directories: found by relative path, checked against their sha256.

Checks are cached by (path, size, mtime), so a file replaced in place is checked again and a
listing does not hash every file on every request.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

from batchvision.core.errors import model_unavailable
from batchvision.core.settings import Settings
from batchvision.models.base import Availability
from batchvision.models.cards import ModelCard

T = TypeVar("T")

MB = 1024 * 1024
# ONNX Runtime holds the weights plus arenas and pre-packed copies; measured RSS growth for the
# shipped detectors is two to four times the file size.
_MEMORY_FACTOR = 4
_MIN_MEMORY_MB = 32


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def estimated_mb(path: Path) -> int:
    """Resident size of a loaded graph, from its file size."""
    return max(_MIN_MEMORY_MB, path.stat().st_size * _MEMORY_FACTOR // MB)


class ModelFiles:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._facts: dict[tuple[Hashable, ...], Any] = {}
        self._lock = threading.Lock()

    def find(self, relative: str, near: str | None = None) -> Path | None:
        """`relative` in the first model directory holding it; with `near`, the directory
        holding that file is searched first (a model and its own label list stay together)."""
        dirs = list(self.settings.model_dirs)
        if near is not None:
            dirs = [d for d in dirs if (d / near).is_file()][:1] + dirs
        for directory in dirs:
            candidate = directory / relative
            if candidate.is_file():
                return candidate
        return None

    def checksum_ok(self, path: Path, expected: str | None) -> bool:
        if expected is None or not self.settings.verify_model_checksums:
            return True
        return self.fact(path, lambda p: sha256_of(p) == expected, expected)

    def fact(self, path: Path, read: Callable[[Path], T], *key: Hashable) -> T:
        """`read(path)`, remembered until the file changes."""
        stat = path.stat()
        cache_key = (path.resolve(), stat.st_size, stat.st_mtime_ns, read.__qualname__, *key)
        with self._lock:
            if cache_key not in self._facts:
                self._facts[cache_key] = read(path)
            value: T = self._facts[cache_key]
            return value


def file_availability(card: ModelCard, files: ModelFiles, classes: int | None) -> Availability:
    """A card whose model is one file in a model directory: found and matching its sha256."""
    assert card.file is not None  # every card of a kind with files names one (card validation)
    path = files.find(card.file)
    if path is None:
        hint = f"pull with: batchvision models pull {card.name}"
        return Availability("missing", hint, error=model_unavailable(card.name))
    if not files.checksum_ok(path, card.sha256):
        reason = f"file {path.name} does not match its sha256"
        return Availability(
            "checksum_mismatch", reason, path, error=model_unavailable(card.name, reason)
        )
    return Availability("installed", str(path), path, classes=classes)
