"""Helpers the bench and eval scripts share (imported with bench/ on sys.path)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchvision.core.settings import Settings
from batchvision.core.types import ItemResult, Task
from batchvision.intake.files import file_input
from batchvision.pipeline import Pipeline


async def analyze_files(
    images_dir: Path,
    names: Sequence[str],
    skill: str,
    params: dict[str, Any],
    model_dirs: Sequence[Path] = (),
) -> list[ItemResult]:
    """One skill over files, in process, through the server's own pipeline (one call, so the
    batcher sees them all), with a throwaway data dir and auth off."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), model_dirs=list(model_dirs), auth="disabled")
        pipeline = Pipeline(settings)
        try:
            tasks = pipeline.prepare_tasks([Task(skill, params)])
            limit = settings.max_image_bytes
            inputs = [
                file_input(i, images_dir / name, limit, filename=name)
                for i, name in enumerate(names)
            ]
            return await pipeline.analyze(inputs, tasks)
        finally:
            await pipeline.close()
