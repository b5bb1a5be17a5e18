"""`batchvision keys ...`: API keys in the server's database, managed without the server."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from batchvision.cli.exits import CliError, ExitStatus, reported
from batchvision.cli.options import DataDir, build_settings

if TYPE_CHECKING:
    from batchvision.accounts.keys import KeyStore

app = typer.Typer(help="API keys: create, list, revoke, add credits, show usage.")


@contextlib.contextmanager
def _keys(data_dir: Path | None) -> Iterator[KeyStore]:
    """The key store; what it refuses (an unknown or duplicate name, an out-of-range number)
    ends the command with its message and status 1."""
    from batchvision.accounts.keys import AccountError, KeyStore
    from batchvision.core.db import open_database

    with reported():
        try:
            yield KeyStore(open_database(build_settings(data_dir=data_dir)))
        except (AccountError, ValueError) as exc:
            raise CliError(str(exc)) from None


def _parse_rate(rate: str | None) -> int | None:
    if rate is None:
        return None
    count, _, unit = rate.partition("/")
    if not count.strip().isdigit() or int(count) < 1 or unit.strip() not in ("", "min", "minute"):
        raise CliError(f"rate must look like 60/min, not '{rate}'", ExitStatus.USAGE)
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


@app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="a unique name for the key")],
    credits: Annotated[int | None, typer.Option(help="credit balance; omit for unlimited")] = None,
    rate: Annotated[str | None, typer.Option(help="requests per minute, e.g. 60/min")] = None,
    image_rate: Annotated[str | None, typer.Option(help="images per minute, e.g. 600/min")] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="may manage keys and see every object")
    ] = False,
    oauth: Annotated[
        bool, typer.Option("--oauth", help="also print OAuth client credentials for the key")
    ] = False,
    client_cert: Annotated[
        Path | None,
        typer.Option(help="PEM certificate the key's requests must present in X-Client-Cert"),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create a key and print its secret (and, with --oauth, a client id and client secret on
    the next two lines). Secrets are shown this once and never stored."""
    with reported():  # option checks first: a refused command never creates the database
        if credits is not None and credits < 0:
            raise CliError("--credits cannot be negative", ExitStatus.USAGE)
        requests_per_minute, images_per_minute = _parse_rate(rate), _parse_rate(image_rate)
        pinned = _fingerprint(client_cert) if client_cert is not None else None
    with _keys(data_dir) as store:
        created = store.create(
            name,
            credits=credits,
            requests_per_minute=requests_per_minute,
            images_per_minute=images_per_minute,
            is_admin=admin,
            oauth=oauth,
            client_cert_sha256=pinned,
        )
    typer.echo(_key_line(created.info), err=True)
    if pinned is not None:
        typer.echo(f"client certificate pinned: sha256 {pinned}", err=True)
    typer.echo("secret (shown once; store it now):", err=True)
    typer.echo(created.secret)
    if created.client_secret is not None:
        typer.echo("OAuth client id, then client secret (shown once):", err=True)
        typer.echo(created.info.oauth_client_id)
        typer.echo(created.client_secret)


def _fingerprint(path: Path) -> str:
    from batchvision.accounts.certs import fingerprint

    try:
        return fingerprint(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CliError(f"--client-cert {path}: {exc}", ExitStatus.USAGE) from None


@app.command("list")
def keys_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDir = None,
) -> None:
    """List keys (never their secrets)."""
    with _keys(data_dir) as store:
        keys = store.all_keys()
    if as_json:
        typer.echo(json.dumps([k.to_dict() for k in keys], indent=2))
        return
    for key in keys:
        typer.echo(_key_line(key))


@app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="key name")], data_dir: DataDir = None
) -> None:
    """Revoke a key: it stops working at once; its records are kept."""
    with _keys(data_dir) as store:
        typer.echo(_key_line(store.revoke(name)))


# Negative amounts take credits away; without ignore_unknown_options click reads "-5" as an option.
@app.command("add-credits", context_settings={"ignore_unknown_options": True})
def keys_add_credits(
    name: Annotated[str, typer.Argument(help="key name")],
    amount: Annotated[int, typer.Argument(help="credits to add (negative to take away)")],
    data_dir: DataDir = None,
) -> None:
    """Add credits to a key's balance."""
    with _keys(data_dir) as store:
        typer.echo(_key_line(store.add_credits(name, amount)))


@app.command("usage")
def keys_usage(
    name: Annotated[str, typer.Argument(help="key name")],
    days: Annotated[int, typer.Option(help="how many days back")] = 30,
    data_dir: DataDir = None,
) -> None:
    """Requests, images, credits charged and uncharged by UTC day for one key."""
    with _keys(data_dir) as store:
        key = store.by_name(name)
        usage = store.usage(key.id, days=days)
    typer.echo(_key_line(key))
    columns = ("requests", "images", "credits", "uncharged_credits")
    typer.echo(f"{'date':<12}" + "".join(f"{name.split('_')[0]:>10}" for name in columns))
    for row in usage:
        typer.echo(f"{row['date']:<12}" + "".join(f"{row[name]:>10}" for name in columns))
