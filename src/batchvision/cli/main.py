"""The `batchvision` command: one module per command group, assembled here."""

from __future__ import annotations

import typer

from batchvision.cli import jobs, keys, models
from batchvision.cli.analyze import analyze
from batchvision.cli.exits import exit_status_help
from batchvision.cli.run import run
from batchvision.cli.serve import serve

app = typer.Typer(
    help="batchvision: self-hosted batch vision inference.",
    epilog=exit_status_help(),
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.command("serve")(serve)
app.command("analyze")(analyze)
app.command("run")(run)
app.add_typer(models.app, name="models")
app.add_typer(keys.app, name="keys")
app.add_typer(jobs.app, name="jobs")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
