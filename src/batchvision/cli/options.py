"""What every command reads and writes the same way: the common options, `--params`, `Settings`,
and text on stdout."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from batchvision.cli.exits import CliError, ExitStatus, one_line
from batchvision.core.settings import Settings

ENV_PREFIX = str(Settings.model_config.get("env_prefix", ""))
# The options of build_settings whose names are not the field's.
_OPTION_OF = {"model_dirs": "--model-dir", "model_mirror": "--mirror"}

ModelDirs = Annotated[
    list[Path] | None,
    typer.Option(
        "--model-dir",
        metavar="DIR",
        help="model directory (repeatable; default BATCHVISION_MODEL_DIRS)",
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        help="database, uploads and results (default BATCHVISION_DATA_DIR, ./data)",
    ),
]

DrawDir = Annotated[
    Path | None,
    typer.Option(
        "--draw",
        metavar="DIR",
        file_okay=False,
        help="write each image with its results drawn on it into DIR (same file name)",
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
    options = {name: value for name, value in given.items() if value is not None}
    try:
        return Settings(**options)
    except ValidationError as exc:
        problems = "; ".join(settings_problem(error, set(options)) for error in exc.errors())
        raise CliError(f"invalid settings: {problems}", ExitStatus.USAGE) from None
    except SettingsError as exc:  # a value pydantic-settings could not even parse
        raise CliError(f"invalid settings: {one_line(exc)}", ExitStatus.USAGE) from None


def settings_problem(error: Mapping[str, Any], from_options: set[str]) -> str:
    """One validation error named the way the user set it: `--port` for an option given on the
    command line, `BATCHVISION_PORT` for everything else (the environment).
    A check across fields has no location; the fields its message names are renamed the same
    way, so "job_output_lines must be ..." reads "BATCHVISION_JOB_OUTPUT_LINES must be ..."."""
    location = error.get("loc", ())
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if location:
        return f"{_setting_name(str(location[0]), from_options)}: {message}"
    for field in sorted(Settings.model_fields, key=len, reverse=True):
        message = re.sub(rf"\b{field}\b", _setting_name(field, from_options), message)
    return message


def _setting_name(field: str, from_options: set[str]) -> str:
    if field in from_options:
        return _OPTION_OF.get(field, "--" + field.replace("_", "-"))
    return f"{ENV_PREFIX}{field.upper()}"


def parse_params(raw: str | None) -> dict[str, Any]:
    """`--params` as a JSON object ({} when not given)."""
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        raise CliError("--params is not valid JSON", ExitStatus.USAGE) from None
    if not isinstance(parsed, dict):
        raise CliError("--params must be a JSON object", ExitStatus.USAGE)
    return parsed


def write_utf8(text: str) -> None:
    """Text to stdout as UTF-8 whatever the locale says, so "Александровка" is never `\\u0410`
    or a UnicodeEncodeError under LANG=C."""
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()
