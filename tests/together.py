"""Run several Python processes released at the same moment (e.g. servers migrating one
database at once): each prints "ready", waits for a line on stdin, then does its work."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def run_released_together(script: str, arg: str, count: int) -> list[tuple[int, str, str]]:
    """Start `count` copies of `script` (given `arg`), release them together once all are
    ready; each one's (return code, stdout, stderr)."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, arg],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(count)
    ]
    try:
        for child in children:  # all imported: release them together
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outcomes = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return [
        (child.returncode, out, err) for child, (out, err) in zip(children, outcomes, strict=True)
    ]
