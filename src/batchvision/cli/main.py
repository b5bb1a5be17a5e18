"""The `batchvision` command: one module per command group, assembled here."""

from __future__ import annotations

from typing import Annotated

import typer

from batchvision import __version__
from batchvision.cli import jobs, keys, models
from batchvision.cli.analyze import analyze
from batchvision.cli.exits import exit_status_help
from batchvision.cli.run import run
from batchvision.cli.serve import serve
from batchvision.cli.worker import worker

# Click's plain help layout (rich_markup_mode=None, for every command below): at 80 columns
# typer's rich panels showed a `<bool>` type beside every flag and cut long option names
# ("--checkpoint-eve…"); the plain layout wraps help text and prints option names whole.
app = typer.Typer(
    help="batchvision: self-hosted batch vision inference.",
    epilog=exit_status_help(),
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"batchvision {__version__}")
        raise typer.Exit


@app.callback()
def _options(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="print the version and exit"
        ),
    ] = None,
) -> None:
    """batchvision: self-hosted batch vision inference."""


app.command("serve")(serve)
app.command("worker")(worker)
app.command("analyze")(analyze)
# Short help where the first sentence is too long for the command list at 80 columns.
app.command("run", short_help="Run one skill over a folder into one results file.")(run)
app.add_typer(models.app, name="models")
app.add_typer(keys.app, name="keys")
app.add_typer(jobs.app, name="jobs", short_help="Batch jobs on a running server.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
