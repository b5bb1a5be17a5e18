"""UrlSigner: signed, expiring download URLs and the persistent signing key."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from batchvision.jobs.signing import KEY_FILE_NAME, UrlSigner

PATH = "/v1/jobs/abc/outputs/0"
NOW = 1_700_000_000
LATER = NOW + 3600


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(b"k" * 32)


def params(query: str) -> tuple[str, str]:
    parsed = parse_qs(query, strict_parsing=True)
    assert sorted(parsed) == ["expires", "signature"]
    return parsed["expires"][0], parsed["signature"][0]


def test_round_trip(signer: UrlSigner) -> None:
    query = signer.sign(PATH, expires_at=LATER)
    expires, signature = params(query)
    assert query == f"expires={LATER}&signature={signature}"
    assert expires == str(LATER)
    assert len(signature) == 64
    assert signer.verify(PATH, expires, signature, now=NOW)
    assert signer.verify(PATH, expires, signature.upper(), now=NOW)


def test_signature_is_hmac_sha256_of_path_and_expiry(signer: UrlSigner) -> None:
    _, signature = params(signer.sign(PATH, expires_at=LATER))
    expected = hmac.new(b"k" * 32, f"{PATH}\n{LATER}".encode(), hashlib.sha256).hexdigest()
    assert signature == expected


def test_tampering_is_detected(signer: UrlSigner) -> None:
    expires, signature = params(signer.sign(PATH, expires_at=LATER))
    assert not signer.verify("/v1/jobs/abc/outputs/1", expires, signature, now=NOW)
    assert not signer.verify("/v1/jobs/abd/outputs/0", expires, signature, now=NOW)
    assert not signer.verify(PATH + "/", expires, signature, now=NOW)
    assert not signer.verify(PATH.upper(), expires, signature, now=NOW)
    assert not signer.verify(PATH, str(LATER + 1), signature, now=NOW)
    assert not signer.verify(PATH, "0" + expires, signature, now=NOW)
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert not signer.verify(PATH, expires, flipped, now=NOW)
    assert not signer.verify(PATH, expires, signature[:-1], now=NOW)
    other = UrlSigner(b"o" * 32)
    assert not other.verify(PATH, expires, signature, now=NOW)


def test_expiry(signer: UrlSigner) -> None:
    expires, signature = params(signer.sign(PATH, expires_at=LATER))
    assert signer.verify(PATH, expires, signature, now=LATER - 1)
    assert not signer.verify(PATH, expires, signature, now=LATER)
    assert not signer.verify(PATH, expires, signature, now=LATER + 86400)
    # With the real clock: a URL from the past is expired, one for the future is not.
    assert not signer.verify(PATH, expires, signature)
    future = int(time.time()) + 600
    assert signer.verify(PATH, *params(signer.sign(PATH, expires_at=future)))


@pytest.mark.parametrize(
    ("path", "expires", "signature"),
    [
        (PATH, None, "0" * 64),
        (PATH, str(LATER), None),
        (PATH, None, None),
        (PATH, "", "0" * 64),
        (PATH, "soon", "0" * 64),
        (PATH, "-5", "0" * 64),
        (PATH, " 1700003600", "0" * 64),
        (PATH, "1_700_003_600", "0" * 64),
        (PATH, "١٧٠٠٠٠٣٦٠٠", "0" * 64),  # non-ASCII digits int() would accept
        (PATH, "9" * 400, "0" * 64),
        (PATH, str(LATER), "zz" * 32),
        (PATH, str(LATER), "é" * 64),
        (PATH, str(LATER), ""),
        (PATH, str(LATER), "0" * 63),
        (PATH, str(LATER), "0" * 65),
        ("", str(LATER), "0" * 64),
        ("relative/path", str(LATER), "0" * 64),
        (PATH + "\n1", str(LATER), "0" * 64),
        (None, str(LATER), "0" * 64),
    ],
)
def test_malformed_input_is_false_not_an_error(
    signer: UrlSigner, path: str, expires: str | None, signature: str | None
) -> None:
    assert signer.verify(path, expires, signature, now=NOW) is False


def test_sign_rejects_bad_arguments(signer: UrlSigner) -> None:
    for path in ["", "no-slash", "/a?b=1", "/a#frag", "/a\nb"]:
        with pytest.raises(ValueError):
            signer.sign(path, expires_at=LATER)
    for bad in [-1, True, 1.5]:
        with pytest.raises(ValueError):
            signer.sign(PATH, expires_at=bad)  # type: ignore[arg-type]


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        UrlSigner(b"short")
    assert "k" not in repr(UrlSigner(b"k" * 32))


# -- the key file ----------------------------------------------------------------------------------


def test_key_persists_across_from_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = UrlSigner.from_data_dir(data_dir)
    key_file = data_dir / KEY_FILE_NAME
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(bytes.fromhex(key_file.read_text().strip())) == 32

    query = first.sign(PATH, expires_at=LATER)
    second = UrlSigner.from_data_dir(data_dir)  # a restart
    assert second.verify(PATH, *params(query), now=NOW)
    assert [p.name for p in data_dir.iterdir()] == [KEY_FILE_NAME]  # no temp files left

    elsewhere = UrlSigner.from_data_dir(tmp_path / "other")
    assert not elsewhere.verify(PATH, *params(query), now=NOW)


def test_key_file_mode_ignores_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        UrlSigner.from_data_dir(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / KEY_FILE_NAME).stat().st_mode) == 0o600


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    signers: list[UrlSigner] = []
    start = threading.Barrier(8)

    def create() -> None:
        start.wait()
        signers.append(UrlSigner.from_data_dir(tmp_path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queries = {s.sign(PATH, expires_at=LATER) for s in signers}
    assert len(signers) == 8
    assert len(queries) == 1
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE_NAME]


def test_corrupt_key_file_is_an_error_not_replaced(tmp_path: Path) -> None:
    key_file = tmp_path / KEY_FILE_NAME
    key_file.write_text("not a key\n")
    with pytest.raises(ValueError, match=r"url-signing\.key"):
        UrlSigner.from_data_dir(tmp_path)
    assert key_file.read_text() == "not a key\n"
