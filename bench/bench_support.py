"""Helpers the bench and eval scripts share (imported with bench/ on sys.path)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchvision.core.settings import Settings
from batchvision.core.types import ImageInput, ItemResult, Task
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
            inputs = [
                ImageInput(index=i, filename=name, data=(images_dir / name).read_bytes())
                for i, name in enumerate(names)
            ]
            return await pipeline.analyze(inputs, tasks)
        finally:
            await pipeline.close()
