"""`batchvision analyze FILE...`: skills on local files, no server; a short table on stdout, or
the full JSON with `--json`, and with `--draw DIR` each image with its results drawn on it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from batchvision.cli.draw import drawing_path, write_drawing
from batchvision.cli.exits import CliError, reported
from batchvision.cli.options import DrawDir, ModelDirs, build_settings, parse_params, write_utf8
from batchvision.cli.summary import analyze_table
from batchvision.core.settings import Settings
from batchvision.core.types import Task
from batchvision.intake.files import file_input


def analyze(
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILE", help="image files", exists=True, dir_okay=False),
    ],
    skill: Annotated[
        list[str] | None, typer.Option(metavar="NAME", help="skill to run (repeatable)")
    ] = None,
    params: Annotated[
        str | None,
        typer.Option(
            metavar="JSON", help="JSON params for every skill, e.g. '{\"threshold\": 0.5}'"
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the full results as JSON instead of a table")
    ] = False,
    draw: DrawDir = None,
    model_dir: ModelDirs = None,
) -> None:
    """Run skills on local files without a server.

    Prints a table of what each skill found (--json: the full results as JSON); --draw DIR
    writes each image with its results drawn on it. Exits 1 when every file failed."""
    with reported():
        parsed = parse_params(params)
        settings = build_settings(model_dirs=model_dir)
        tasks = [Task(name, parsed) for name in (skill or ["detect"])]
        output = asyncio.run(_analyze_files(settings, files, tasks))
        if draw is not None:
            _draw_all(files, output["results"], draw, settings.max_image_pixels)
    if as_json:
        write_utf8(json.dumps(output, indent=2, ensure_ascii=False) + "\n")
    else:
        write_utf8(analyze_table(output["results"]) + "\n")
    _fail_if_all_failed(output["results"])


def _draw_all(files: list[Path], results: list[dict[str, Any]], folder: Path, limit: int) -> None:
    """One picture per image that was read, under the image's file name; a failed one has
    nothing to draw. Two inputs with one name (a/x.jpg, b/x.jpg) get their position in front
    from the second on (2-x.jpg), never one picture over the other."""
    used: set[Path] = set()
    for position, (path, result) in enumerate(zip(files, results, strict=True), start=1):
        if result["status"] != "ok":
            continue
        target = drawing_path(folder, path.name)
        if target in used:
            target = drawing_path(folder, f"{position}-{path.name}")
        used.add(target)
        write_drawing(path, result["outputs"], target, limit)


def _fail_if_all_failed(results: list[dict[str, Any]]) -> None:
    if results and all(result["status"] != "ok" for result in results):
        with reported():
            raise CliError(f"every one of the {len(results)} files failed")


async def _analyze_files(
    settings: Settings, files: list[Path], tasks: list[Task]
) -> dict[str, Any]:
    from batchvision.api.native.analyze import result_to_dict
    from batchvision.pipeline import Pipeline

    pipeline = Pipeline(settings)
    try:
        prepared = pipeline.prepare_tasks(tasks)
        inputs = [file_input(i, path, settings.max_image_bytes) for i, path in enumerate(files)]
        results = await pipeline.analyze(inputs, prepared)
    finally:
        await pipeline.close()
    return {"results": [result_to_dict(r) for r in results]}
