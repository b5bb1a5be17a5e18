"""Per clip of ../shared/evaldata/video: is its labelled content found by video analysis?

Runs the server's own path in-process (`Pipeline.analyze_video`: PyAV sampling at `--fps`
frames per second, every sampled frame through `detect` and `animals` with their default
models and thresholds) and reads each video's summary. A content item of labels.json
("car", "person (hand, briefly)", "chimpanzee") counts as found by a skill when a label in
that skill's summary contains its first word ("person", not the note; `animals` says
"human" and "vehicle"); the table also gives the labels seen in the most frames, how many
frames each was seen in and its best score, and the frames analysed per second of wall time
(decode + both skills).

    .venv/bin/python bench/eval_video.py [--fps 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from batchvision.core.settings import Settings
from batchvision.core.types import Task, VideoInput
from batchvision.intake.video import FrameSampling
from batchvision.pipeline import Pipeline

SHARED = Path(__file__).resolve().parents[2] / "shared"
VIDEOS = SHARED / "evaldata" / "video"
SKILLS = ("detect", "animals")


# What `animals` calls the content of these clips (its categories' labels).
SYNONYMS = {"person": ("person", "human"), "car": ("car", "vehicle")}


def found(content: str, labels: dict[str, Any]) -> bool:
    word = content.split()[0].lower()
    words = SYNONYMS.get(word, (word,))
    return any(w in label.lower() for label in labels for w in words)


def top_labels(labels: dict[str, Any], count: int = 3) -> list[str]:
    ranked = sorted(labels.items(), key=lambda item: -item[1]["frames"])[:count]
    return [f"{name} {entry['frames']}f {entry['max_score']:.2f}" for name, entry in ranked]


async def evaluate_clip(pipeline: Pipeline, clip: Path, fps: float) -> dict[str, Any]:
    content = json.loads((VIDEOS / "labels.json").read_text())[clip.name]["content"]
    tasks = pipeline.prepare_tasks([Task(skill) for skill in SKILLS])
    start = time.perf_counter()
    result = await pipeline.analyze_video(VideoInput(0, path=clip), tasks, FrameSampling(fps=fps))
    seconds = time.perf_counter() - start
    skills = result.summary["skills"]
    return {
        "clip": clip.name,
        "content": content,
        "frames": len(result.frames),
        "errors": [error.message for error in result.errors],
        "frames_per_s": round(len(result.frames) / seconds, 1),
        "found": {
            skill: {c: found(c, skills[skill].get("labels", {})) for c in content}
            for skill in SKILLS
        },
        "top": {skill: top_labels(skills[skill].get("labels", {})) for skill in SKILLS},
    }


async def evaluate(fps: float) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir), model_dirs=[SHARED / "models"])
        pipeline = Pipeline(settings)
        try:
            clips = sorted(p for p in VIDEOS.iterdir() if p.suffix != ".json")
            return [await evaluate_clip(pipeline, clip, fps) for clip in clips]
        finally:
            await pipeline.close()


def print_table(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print(f"{row['clip']}: {row['frames']} frames, {row['frames_per_s']} frames/s")
        for skill in SKILLS:
            marks = ", ".join(
                f"{c}: {'yes' if ok else 'no'}" for c, ok in row["found"][skill].items()
            )
            print(f"  {skill:8} {marks} | top: {'; '.join(row['top'][skill]) or '-'}")
        for error in row["errors"]:
            print(f"  error: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = asyncio.run(evaluate(args.fps))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
