"""The client loads none of the server: importing it pulls in no server module, nor the
server's heavy dependencies (checked in a fresh interpreter; import-linter checks the source)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

PROBE = """
import json, sys
import batchvision.client
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_the_client_loads_no_server_code() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    loaded = json.loads(probe.stdout)
    ours = {name for name in loaded if name.startswith("batchvision.")}
    # The one helper it shares: atomic file writes (standard library only).
    shared = {"batchvision.core", "batchvision.core.fsutil"}
    assert {name for name in ours - shared if not name.startswith("batchvision.client")} == set()
    assert {"batchvision.client.sync", "batchvision.client.aio"} <= ours
    heavy = {"fastapi", "onnxruntime", "numpy", "sqlalchemy", "PIL", "av", "pydantic_settings"}
    assert heavy.isdisjoint(name.split(".")[0] for name in loaded)
