"""The OpenAPI document holds for the real server: schemathesis (examples, coverage and
fuzzing phases, a bounded number of cases per operation, a fixed seed) sends requests over
real HTTP to an auth-required server and checks every answer against the document: no 5xx,
only documented status codes, content types and headers, bodies that match their schemas,
405 with a truthful Allow for methods a path lacks, 401 without the documented credentials.
Which checks run, and why some do not, is in schemathesis.toml beside this file."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from accounts.accounts_support import Keyed
from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import make_settings, start_server

CONFIG = Path(__file__).with_name("schemathesis.toml")
# Revoking is run last, alone: fuzzing it revokes the very key the run authenticates with.
REVOKE = "/v1/keys/{key_id}/revoke"


@pytest.fixture
def keyed(tmp_path: Path, vlm_standin: Any) -> Iterator[Keyed]:
    """An auth-required server whose vision-language routes reach a backend (the stand-in),
    so that they answer as they would in use rather than 503 model_unavailable."""
    settings = make_settings(
        tmp_path / "server", auth="required", vlm_url=vlm_standin.url, vlm_protocol="moondream"
    )
    live = start_server(settings)
    try:
        yield Keyed(live, KeyStore(make_engine(live.settings)))
    finally:
        live.stop()


def _schemathesis(
    url: str, secret: str, workdir: Path, *selection: str
) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--no-color",
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "5",
        "--seed",
        "1",
        # One worker: hypothesis' strategy descriptions are not thread-safe (a run with two
        # workers hit "AST constructor recursion depth mismatch" inside hypothesis).
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--header",
        f"Authorization: Bearer {secret}",
        "--header",
        f"X-Moondream-Auth: {secret}",
        *selection,
    ]
    # In `workdir`: schemathesis keeps a cache folder where it runs.
    return subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=240, check=False
    )


def _cases_passed(output: str) -> int:
    found = re.search(r"(\d+) generated, (\d+) passed", output)
    assert found is not None, output[-5_000:]
    return int(found[2])


def test_schemathesis_finds_nothing_the_document_does_not_say(keyed: Keyed, tmp_path: Path) -> None:
    secret = keyed.store.create("fuzzer", is_admin=True, credits=1_000_000).secret
    spec = httpx.get(f"{keyed.live.url}/openapi.json").json()
    operations = sum(len(item) for item in spec["paths"].values())
    everything_else = _schemathesis(keyed.live.url, secret, tmp_path, "--exclude-path", REVOKE)
    assert everything_else.returncode == 0, everything_else.stdout[-20_000:]
    assert f"Tested: {operations - 1}" in everything_else.stdout, everything_else.stdout[-5_000:]
    assert _cases_passed(everything_else.stdout) > 500  # the bound is per operation and phase
    revoke = _schemathesis(keyed.live.url, secret, tmp_path, "--include-path", REVOKE)
    assert revoke.returncode == 0, revoke.stdout[-20_000:]
    assert "Tested: 1" in revoke.stdout, revoke.stdout[-5_000:]
