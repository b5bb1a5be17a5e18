"""The per-video roll-up of its frames' outputs, skill-agnostic.

For each task: how many frames it gave an output for, and, when its output holds lists of
labelled, scored objects (detect's `objects`, animals' `annotations`: dicts with a `label` and
a `score` or `confidence`), per label the first and last time it was seen, in how many frames,
and its best score. Shape:

    {"frames": 12, "frames_failed": 0,
     "skills": {"detect": {"frames": 12, "labels": {"car": {"first_seen_s": 0.0,
                "last_seen_s": 11.0, "frames": 9, "max_score": 0.91}}}}}

`labels` is present only for skills whose outputs carry such objects.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from batchvision.core.types import FrameResult


def summarize_frames(frames: Sequence[FrameResult], skills: Sequence[str]) -> dict[str, Any]:
    return {
        "frames": len(frames),
        "frames_failed": sum(1 for frame in frames if frame.errors),
        "skills": {name: _skill_summary(frames, name) for name in skills},
    }


def _skill_summary(frames: Sequence[FrameResult], skill: str) -> dict[str, Any]:
    seen = [frame for frame in frames if skill in frame.outputs]
    summary: dict[str, Any] = {"frames": len(seen)}
    labels: dict[str, dict[str, Any]] = {}
    for frame in seen:
        best = _best_scores(frame.outputs[skill])
        for label, score in best.items():
            _record(labels, label, score, frame.time_s)
    if labels or any(_has_object_lists(frame.outputs[skill]) for frame in seen):
        summary["labels"] = dict(sorted(labels.items()))
    return summary


def _record(labels: dict[str, dict[str, Any]], label: str, score: float, time_s: float) -> None:
    entry = labels.setdefault(
        label, {"first_seen_s": time_s, "last_seen_s": time_s, "frames": 0, "max_score": score}
    )
    entry["last_seen_s"] = time_s  # frames come in time order
    entry["frames"] += 1
    entry["max_score"] = max(entry["max_score"], score)


def _best_scores(output: Any) -> dict[str, float]:
    """Each label's best score among the labelled objects of one frame's output."""
    best: dict[str, float] = {}
    for item in _labelled_objects(output):
        label, score = item["label"], float(item.get("score", item.get("confidence", 0.0)))
        best[label] = max(best.get(label, score), score)
    return best


def _object_lists(output: Any) -> Iterator[list[Any]]:
    if isinstance(output, Mapping):
        yield from (value for value in output.values() if isinstance(value, list))


def _has_object_lists(output: Any) -> bool:
    return any(all(_is_labelled(item) for item in items) for items in _object_lists(output))


def _labelled_objects(output: Any) -> Iterator[Mapping[str, Any]]:
    for items in _object_lists(output):
        yield from (item for item in items if _is_labelled(item))


def _is_labelled(item: Any) -> bool:
    if not isinstance(item, Mapping) or not isinstance(item.get("label"), str):
        return False
    score = item.get("score", item.get("confidence"))
    return isinstance(score, int | float) and not isinstance(score, bool)
