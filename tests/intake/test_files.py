"""intake/files: a local file to the ImageInput the pipeline takes."""

from __future__ import annotations

from pathlib import Path

from batchvision.core.errors import ErrorCode
from batchvision.intake.files import file_input


def test_a_file_within_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x" * 10)
    item = file_input(3, path, 10)
    assert (item.index, item.filename, item.data, item.error) == (3, str(path), b"x" * 10, None)


def test_filename_names_the_file_in_results(tmp_path: Path) -> None:
    path = tmp_path / "cam1" / "a.jpg"
    path.parent.mkdir()
    path.write_bytes(b"x")
    assert file_input(0, path, 10, filename="cam1/a.jpg").filename == "cam1/a.jpg"


def test_one_byte_over_the_limit_is_image_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(b"x" * 11)
    item = file_input(0, path, 10)
    assert item.data is None
    assert item.error is not None
    assert item.error.code == ErrorCode.IMAGE_TOO_LARGE
    assert item.error.message == "image exceeds the limit of 10 bytes"


def test_an_unreadable_path_fails_only_its_item(tmp_path: Path) -> None:
    missing = file_input(0, tmp_path / "gone.jpg", 10)
    folder = file_input(1, tmp_path, 10)
    for item in (missing, folder):
        assert item.data is None
        assert item.error is not None
        assert item.error.code == ErrorCode.IMAGE_DECODE_FAILED
    assert missing.error is not None and "No such file" in missing.error.message
    assert folder.error is not None and folder.error.message.startswith("cannot read file: ")
