"""`batchvision serve`: the HTTP server, refusing an open bind while auth is disabled."""

from __future__ import annotations

import ipaddress
import logging
from enum import StrEnum
from typing import Annotated

import typer

from batchvision.cli.banner import banner, gather
from batchvision.cli.connections import (
    ACCEPT_BACKLOG,
    ConnectionGuard,
    default_max_connections,
    guarded_protocol,
    quiet_repeated_errors,
)
from batchvision.cli.exits import CliError, ExitStatus, reported
from batchvision.cli.options import DataDir, ModelDirs, build_settings
from batchvision.core.settings import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LogLevel(StrEnum):
    """The levels both Python logging and uvicorn know, so one option sets both."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def serve(
    host: Annotated[
        str | None, typer.Option(metavar="HOST", help="bind address (default 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(metavar="PORT", help="port (default 8080)")] = None,
    model_dir: ModelDirs = None,
    data_dir: DataDir = None,
    log_level: Annotated[
        LogLevel, typer.Option(case_sensitive=False, help="how much the server logs")
    ] = LogLevel.INFO,
    insecure: Annotated[
        bool, typer.Option(help="allow a non-loopback address while auth is disabled")
    ] = False,
    first_key: Annotated[
        bool,
        typer.Option(
            "--first-key", help="with auth on and no key yet, create an admin key and print it once"
        ),
    ] = False,
) -> None:
    """Run the HTTP server."""
    import uvicorn

    from batchvision.api.app import create_app

    with reported():
        settings = build_settings(host=host, port=port, model_dirs=model_dir, data_dir=data_dir)
        if settings.auth == "disabled" and not is_loopback(settings.host) and not insecure:
            raise CliError(
                f"auth is disabled, so binding {settings.host} would open the server to anyone "
                "who can reach it; bind 127.0.0.1, enable auth, or pass --insecure",
                ExitStatus.USAGE,
            )
    logging.basicConfig(
        level=log_level.value.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    quiet_repeated_errors()
    if log_level.lower() != "debug":  # one line per migration at every start buries the banner
        logging.getLogger("alembic").setLevel(logging.WARNING)
    print_banner(settings, first_key=first_key)
    if not is_loopback(settings.host):
        logging.getLogger("batchvision").warning(
            "listening on %s: reachable from other machines", settings.host
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level.value,
        access_log=False,
        http=guarded_protocol(connection_guard(settings)),
        timeout_keep_alive=settings.keep_alive_timeout_s,
        backlog=ACCEPT_BACKLOG,
    )


def print_banner(settings: Settings, *, first_key: bool) -> None:
    from batchvision.core.db import open_database

    database = open_database(settings)  # migrated now, so the keys can be counted
    try:
        facts = gather(settings, database, first_key=first_key)
    finally:
        database.dispose()
    for line in banner(facts):
        typer.echo(line, err=True)


def connection_guard(settings: Settings) -> ConnectionGuard:
    cap = settings.max_connections or default_max_connections()
    return ConnectionGuard(cap, settings.header_timeout_s)
