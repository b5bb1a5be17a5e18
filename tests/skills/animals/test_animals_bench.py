"""bench/eval_camera_traps.py on all 21 camera-trap images and bench/bench_animals.py at a tiny
size: the real skill, server subprocess and `batchvision run`; structure and sanity only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import EVALDATA, bench_module

TRAPS = EVALDATA / "camera_traps"


def test_eval_camera_traps_scores_every_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluation = bench_module("eval_camera_traps")
    out = tmp_path / "eval.json"
    report = evaluation.main(["--json", str(out)])
    labels = json.loads((TRAPS / "labels.json").read_text())

    assert report.threshold == 0.2  # the skill's default
    assert [image.file for image in report.images] == sorted(labels)
    assert all(image.error is None for image in report.images)
    assert report.unresolved == []  # every animal species label maps to a taxon

    # Precision and recall agree with the per-image lines they summarise.
    for name, per in report.categories.items():
        truth = [i for i in report.images if i.truth == name]
        predicted = [i for i in report.images if name in i.predicted]
        tp = sum(1 for i in truth if name in i.predicted)
        assert (per.images, per.predicted, per.tp) == (len(truth), len(predicted), tp)
        assert (per.fp, per.fn) == (len(predicted) - tp, len(truth) - tp)
        for value in (per.precision, per.recall):
            assert value is None or 0.0 <= value <= 1.0
        assert per.recall == (tp / len(truth) if truth else None)
    assert sum(per.images for per in report.categories.values()) == len(labels)
    for image in report.images:
        assert image.predicted == ["empty"] or "empty" not in image.predicted
        assert (image.predicted == ["empty"]) == (not image.labels)
    assert report.exact == sum(1 for i in report.images if i.predicted == [i.truth])

    # Taxonomy: every level's outcomes add up, over the images whose truth reaches it.
    animals = [i for i in report.images if i.truth == "animal"]
    assert all(i.truth_taxon for i in animals)
    for level, per in report.levels.items():
        scored = [i for i in animals if level in i.levels]
        assert per.images == len(scored)
        assert per.correct + per.wrong + per.coarse + per.missed == per.images
        assert per.correct == sum(1 for i in scored if i.levels[level] == "correct")
        assert per.accuracy is None or 0.0 <= per.accuracy <= 1.0
    assert report.levels["class"].images == len(animals)  # every truth reaches its class
    missed = [i for i in animals if "animal" not in i.predicted]
    assert report.levels["class"].missed == len(missed)
    # The truth labels that are known at species level really are, e.g. Striped Skunk.
    skunk = next(i for i in report.images if i.file == "ena24_2968.jpg")
    assert skunk.truth_level == "species"
    assert skunk.truth_taxon.startswith("mammalia;carnivora;mephitidae;mephitis;mephitis")

    written = json.loads(out.read_text())
    assert written["image_count"] == len(labels)
    assert set(written["categories"]) == {"animal", "person", "vehicle", "empty"}
    assert written["categories"]["animal"]["recall"] == report.categories["animal"].recall
    printed = capsys.readouterr().out
    assert "| animal |" in printed and "| family |" in printed
    assert all(name in printed for name in labels)


def test_truth_names_resolve_to_the_taxon_they_pin_down() -> None:
    evaluation = bench_module("eval_camera_traps")
    taxonomy = evaluation.load_taxonomy(evaluation.DEFAULT_MODELS)
    heron = evaluation.truth_taxon("heron", taxonomy)
    assert (heron.key, str(heron.level)) == ("aves;pelecaniformes;ardeidae;;", "family")
    assert evaluation.truth_taxon("Grey Fox", taxonomy).species == "cinereoargenteus"
    stork = evaluation.truth_taxon("black stork (visual, unverified)", taxonomy)
    assert stork.key == "aves;ciconiiformes;ciconiidae;ciconia;nigra"
    assert evaluation.truth_taxon(None, taxonomy) is None
    assert evaluation.truth_taxon("no such creature", taxonomy) is None


def test_tiny_animals_benchmark(tmp_path: Path) -> None:
    bench = bench_module("bench_animals")
    out = tmp_path / "bench.json"
    result = bench.main(
        [
            "--limit", "4", "--images", "5", "--run-images", "5", "--rounds", "1",
            "--clients", "2", "--decode-runs", "1", "--json", str(out),
        ]
    )  # fmt: skip

    assert len(result.images) == 4
    assert all(i.width > 0 and i.height > 0 and i.bytes > 0 for i in result.images)
    assert all(i.draft_ms > 0 and i.full_ms > 0 for i in result.images)
    assert result.route in (bench.BATCH_DETECT, bench.ANALYZE)
    assert set(result.modes) == {"raw", "http", "run"}
    for mode in result.modes.values():
        assert len(mode.rounds) == 1
        assert [m.images for m in mode.rounds] == [5]
        assert mode.rate > 0 and math.isfinite(mode.rate)
        assert mode.cpu_ms_per_image > 0
    # Every mode saw every image, and found something somewhere in them.
    for counts in result.sanity.values():
        assert set(counts) == {i.name for i in result.images}
        assert sum(counts.values()) > 0
    ratios = {r.name: r for r in result.ratios}
    assert set(ratios) == {"http/raw", "run/raw"}
    for name, mode in (("http/raw", "http"), ("run/raw", "run")):
        assert ratios[name].ratio == pytest.approx(
            result.modes[mode].rate / result.modes["raw"].rate
        )
        assert ratios[name].per_round == [pytest.approx(ratios[name].ratio)]
        assert ratios[name].by_cpu > 0
    assert result.run_startup_s is not None and result.run_startup_s > 0
    assert len(result.run_steady_rate) == 1

    written = json.loads(out.read_text())
    assert written["route"] == result.route
    assert written["modes"]["http"]["images_per_s"] == pytest.approx(result.modes["http"].rate)
    assert [r["name"] for r in written["ratios"]] == ["http/raw", "run/raw"]
    assert len(written["images"]) == 4


def test_requests_respect_the_batch_detect_limits() -> None:
    bench = bench_module("bench_animals")
    samples = [bench.Sample(f"{i}.jpg", b"x" * size) for i, size in enumerate((4, 4, 9, 1))]
    queue = bench.PackedQueue(samples, batch=3, max_bytes=10, images=9, seconds=None)
    chunks = []
    while (chunk := queue.take()) is not None:
        assert chunk
        chunks.append([s.name for s in chunk])
    # 4+4 fits, +9 does not; 9+1 fits exactly; the cycle stops after 9 images in all.
    pair, big = ["0.jpg", "1.jpg"], ["2.jpg", "3.jpg"]
    assert chunks == [pair, big, pair, big, ["0.jpg"]]
    lone = bench.PackedQueue(samples[2:3], batch=10, max_bytes=5, images=2, seconds=None)
    assert [len(lone.take() or []), len(lone.take() or [])] == [1, 1]  # too big: sent alone
    assert lone.take() is None
