"""`batchvision analyze FILE...`: skills on local files, no server, JSON on stdout."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from batchvision.cli.exits import reported
from batchvision.cli.options import ModelDirs, build_settings, parse_params
from batchvision.core.settings import Settings
from batchvision.core.types import Task
from batchvision.intake.files import file_input


def analyze(
    files: Annotated[list[Path], typer.Argument(help="image files", exists=True, dir_okay=False)],
    skill: Annotated[list[str] | None, typer.Option(help="skill to run (repeatable)")] = None,
    params: Annotated[
        str | None, typer.Option(help="JSON params for every skill, e.g. '{\"threshold\": 0.5}'")
    ] = None,
    model_dir: ModelDirs = None,
) -> None:
    """Run skills on local files without a server and print JSON."""
    with reported():
        parsed = parse_params(params)
        settings = build_settings(model_dirs=model_dir)
        tasks = [Task(name, parsed) for name in (skill or ["detect"])]
        output = asyncio.run(_analyze_files(settings, files, tasks))
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
        inputs = [file_input(i, path, settings.max_image_bytes) for i, path in enumerate(files)]
        results = await pipeline.analyze(inputs, prepared)
    finally:
        await pipeline.close()
    return {"results": [result_to_dict(r) for r in results]}
