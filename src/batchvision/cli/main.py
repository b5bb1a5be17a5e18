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

from batchvision.cli.jobs import jobs_app
from batchvision.cli.run import run
from batchvision.core.errors import BatchVisionError
from batchvision.core.settings import Settings
from batchvision.core.types import ImageInput, Task

app = typer.Typer(help="batchvision: self-hosted batch vision inference.", no_args_is_help=True)
models_app = typer.Typer(help="Model files: list what is installed, pull what is missing.")
app.add_typer(models_app, name="models")
keys_app = typer.Typer(help="API keys: create, list, revoke, add credits, show usage.")
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")
app.command("run")(run)


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
    insecure: Annotated[
        bool, typer.Option(help="allow a non-loopback address while auth is disabled")
    ] = False,
) -> None:
    """Run the HTTP server."""
    import uvicorn

    from batchvision.api.app import create_app

    settings = _settings(host=host, port=port, model_dirs=model_dir)
    if settings.auth == "disabled" and not _is_loopback(settings.host) and not insecure:
        raise _fail(
            f"auth is disabled, so binding {settings.host} would open the server to anyone who "
            "can reach it; bind 127.0.0.1, enable auth, or pass --insecure",
            2,
        )
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
    from batchvision.api.native.analyze import result_to_dict
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
    """Show every known model card and whether it is installed (OCR engines: their languages)."""
    from batchvision.models.registry import ModelRegistry

    registry = ModelRegistry(_settings(model_dirs=model_dir))
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


def _store() -> Any:
    from batchvision.accounts.keys import KeyStore
    from batchvision.core.db import open_database

    return KeyStore(open_database(_settings()))


def _parse_rate(rate: str | None) -> int | None:
    if rate is None:
        return None
    count, _, unit = rate.partition("/")
    if not count.strip().isdigit() or int(count) < 1 or unit.strip() not in ("", "min", "minute"):
        raise _fail(f"rate must look like 60/min, not '{rate}'", 2)
    return int(count)


def _key_line(key: Any) -> str:
    info = key.to_dict()
    state = "revoked" if info["revoked_at"] else "active"
    rates = (
        f"{info['requests_per_minute'] or '-'} req/min, {info['images_per_minute'] or '-'} img/min"
    )
    role = "admin" if info["is_admin"] else "user"
    shown = f"{info['name']:<20} bv_{info['prefix']}_…  {state:<8} {role:<6}"
    return f"{shown} credits={info['credits']}  {rates}"


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="a unique name for the key")],
    credits: Annotated[int | None, typer.Option(help="credit balance; omit for unlimited")] = None,
    rate: Annotated[str | None, typer.Option(help="requests per minute, e.g. 60/min")] = None,
    image_rate: Annotated[str | None, typer.Option(help="images per minute, e.g. 600/min")] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="may manage keys and see every object")
    ] = False,
) -> None:
    """Create a key and print its secret. The secret is shown this once and never stored."""
    from batchvision.accounts.keys import AccountError

    if credits is not None and credits < 0:
        raise _fail("--credits cannot be negative", 2)
    try:
        created = _store().create(
            name,
            credits=credits,
            requests_per_minute=_parse_rate(rate),
            images_per_minute=_parse_rate(image_rate),
            is_admin=admin,
        )
    except (AccountError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(_key_line(created.info), err=True)
    typer.echo("secret (shown once; store it now):", err=True)
    typer.echo(created.secret)


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List keys (never their secrets)."""
    keys = _store().all_keys()
    if as_json:
        typer.echo(json.dumps([k.to_dict() for k in keys], indent=2))
        return
    for key in keys:
        typer.echo(_key_line(key))


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="key name")]) -> None:
    """Revoke a key: it stops working at once; its records are kept."""
    from batchvision.accounts.keys import AccountError

    try:
        typer.echo(_key_line(_store().revoke(name)))
    except AccountError as exc:
        raise _fail(str(exc)) from None


# Negative amounts take credits away; without ignore_unknown_options click reads "-5" as an option.
@keys_app.command("add-credits", context_settings={"ignore_unknown_options": True})
def keys_add_credits(
    name: Annotated[str, typer.Argument(help="key name")],
    amount: Annotated[int, typer.Argument(help="credits to add (negative to take away)")],
) -> None:
    """Add credits to a key's balance."""
    from batchvision.accounts.keys import AccountError

    try:
        typer.echo(_key_line(_store().add_credits(name, amount)))
    except (AccountError, ValueError) as exc:
        raise _fail(str(exc)) from None


@keys_app.command("usage")
def keys_usage(
    name: Annotated[str, typer.Argument(help="key name")],
    days: Annotated[int, typer.Option(help="how many days back")] = 30,
) -> None:
    """Requests, images and credits by UTC day for one key."""
    from batchvision.accounts.keys import AccountError

    store = _store()
    try:
        key = store.by_name(name)
    except AccountError as exc:
        raise _fail(str(exc)) from None
    typer.echo(_key_line(key))
    typer.echo(f"{'date':<12}{'requests':>10}{'images':>10}{'credits':>10}")
    for row in store.usage(key.id, days=days):
        typer.echo(f"{row['date']:<12}{row['requests']:>10}{row['images']:>10}{row['credits']:>10}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
