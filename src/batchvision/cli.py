"""Command line: `serve`, `analyze` (no server needed) and `models list|pull`."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from batchvision.core import ImageInput, Task
from batchvision.errors import BatchVisionError
from batchvision.settings import Settings

app = typer.Typer(help="batchvision: self-hosted batch vision inference.", no_args_is_help=True)
models_app = typer.Typer(help="Model files: list what is installed, pull what is missing.")
app.add_typer(models_app, name="models")


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8080)")] = None,
    model_dir: Annotated[
        list[Path] | None, typer.Option(help="model directory (repeatable)")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run the HTTP server."""
    import uvicorn

    from batchvision.api.app import create_app

    settings = _settings(host=host, port=port, model_dirs=model_dir)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if not _is_loopback(settings.host):
        logging.getLogger("batchvision").warning(
            "listening on %s: reachable from other machines", settings.host
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
    )


@app.command()
def analyze(
    files: Annotated[list[Path], typer.Argument(help="image files", exists=True, dir_okay=False)],
    skill: Annotated[list[str] | None, typer.Option(help="skill to run (repeatable)")] = None,
    params: Annotated[
        str | None, typer.Option(help="JSON params for every skill, e.g. '{\"threshold\": 0.5}'")
    ] = None,
    model_dir: Annotated[
        list[Path] | None, typer.Option(help="model directory (repeatable)")
    ] = None,
) -> None:
    """Run skills on local files without a server and print JSON."""
    try:
        parsed = json.loads(params) if params else {}
    except ValueError:
        raise _fail("--params is not valid JSON", 2) from None
    if not isinstance(parsed, dict):
        raise _fail("--params must be a JSON object", 2)
    settings = _settings(model_dirs=model_dir)
    tasks = [Task(name, parsed) for name in (skill or ["detect"])]
    try:
        output = asyncio.run(_analyze_files(settings, files, tasks))
    except BatchVisionError as exc:
        raise _fail(f"{exc.code.value}: {exc.message}") from None
    json.dump(output, sys.stdout, indent=2)
    sys.stdout.write("\n")


async def _analyze_files(
    settings: Settings, files: list[Path], tasks: list[Task]
) -> dict[str, Any]:
    from batchvision.api.native import result_to_dict
    from batchvision.pipeline import Pipeline

    pipeline = Pipeline(settings)
    try:
        prepared = pipeline.prepare_tasks(tasks)
        inputs = [_file_input(i, path, settings.max_image_bytes) for i, path in enumerate(files)]
        results = await pipeline.analyze(inputs, prepared)
    finally:
        await pipeline.close()
    return {"results": [result_to_dict(r) for r in results]}


def _file_input(index: int, path: Path, max_bytes: int) -> ImageInput:
    from batchvision.intake.body import image_too_large

    item = ImageInput(index=index, filename=str(path))
    if path.stat().st_size > max_bytes:
        item.error = image_too_large(max_bytes)
    else:
        item.data = path.read_bytes()
    return item


@models_app.command("list")
def models_list(
    model_dir: Annotated[
        list[Path] | None, typer.Option(help="model directory (repeatable)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show every known model card and whether its file is installed."""
    from batchvision.models.registry import ModelRegistry

    registry = ModelRegistry(_settings(model_dirs=model_dir))
    rows = [registry.status(card).to_dict() for card in registry.cards.values()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        where = row["path"] or f"pull with: batchvision models pull {row['name']}"
        typer.echo(
            f"{row['name']:<22} {row['task']:<8} {row['state']:<18} {row['license']:<12} {where}"
        )


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="model card name")],
    model_dir: Annotated[Path | None, typer.Option(help="install into this directory")] = None,
    mirror: Annotated[
        Path | None, typer.Option(help="copy from this mirror directory instead of downloading")
    ] = None,
) -> None:
    """Download a model (or copy it from a mirror), verify its sha256, install it atomically."""
    from batchvision.models.pull import PullError, pull_model
    from batchvision.models.registry import ModelRegistry

    settings = _settings(model_dirs=[model_dir] if model_dir else None, model_mirror=mirror)
    registry = ModelRegistry(settings)
    try:
        path = pull_model(registry.card(name), settings, progress=True)
    except (PullError, BatchVisionError) as exc:
        raise _fail(str(exc) if isinstance(exc, PullError) else exc.message) from None
    typer.echo(f"installed {name} at {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
