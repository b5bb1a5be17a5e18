"""What every command reads the same way: the common options, `--params`, and `Settings`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from batchvision.cli.exits import CliError, ExitStatus
from batchvision.core.errors import describe_problems
from batchvision.core.settings import Settings

ModelDirs = Annotated[
    list[Path] | None,
    typer.Option(
        "--model-dir", help="model directory (repeatable; default BATCHVISION_MODEL_DIRS)"
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="database, uploads and results (default BATCHVISION_DATA_DIR, ./data)"
    ),
]


def build_settings(
    *,
    model_dirs: Sequence[Path] | None = None,
    data_dir: Path | None = None,
    model_mirror: Path | None = None,
    host: str | None = None,
    port: int | None = None,
) -> Settings:
    """`Settings` from the BATCHVISION_* environment with the options given on the command line
    over it; an option left out keeps the environment's value or the default."""
    given: dict[str, Any] = {
        "model_dirs": list(model_dirs) if model_dirs else None,
        "data_dir": data_dir,
        "model_mirror": model_mirror,
        "host": host,
        "port": port,
    }
    try:
        return Settings(**{name: value for name, value in given.items() if value is not None})
    except ValidationError as exc:
        problems = describe_problems(exc.errors())
        raise CliError(f"invalid settings: {problems}", ExitStatus.USAGE) from None


def parse_params(raw: str | None) -> dict[str, Any]:
    """`--params` as a JSON object ({} when not given)."""
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        raise CliError("--params is not valid JSON", ExitStatus.USAGE) from None
    if not isinstance(parsed, dict):
        raise CliError("--params must be a JSON object", ExitStatus.USAGE)
    return parsed
