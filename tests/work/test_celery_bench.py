"""bench/bench_celery.py at a tiny size: a real redis-server, API servers with both job runners
and `batchvision worker` subprocesses (one, then two), real jobs checked line by line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import bench_module


def test_parts_and_sizes_are_parsed() -> None:
    bench = bench_module("bench_celery")
    config = bench.parse_args(["--lines", "30", "--parts", "throughput"])
    assert (config.metadata_lines, config.detect_lines, config.throughput_lines) == (30, 30, 30)
    assert config.parts == ("throughput",)
    assert len(config.models) == 2
    with pytest.raises(SystemExit):
        bench.parse_args(["--parts", "overhead,nonsense"])


def test_tiny_celery_benchmark(tmp_path: Path) -> None:
    bench = bench_module("bench_celery")
    out = tmp_path / "celery.json"
    # Chunks of 10 lines: several chunks per job and per worker slot.
    sizes = ["--metadata-lines", "30", "--detect-lines", "20", "--throughput-lines", "40"]
    tiny = ["--rounds", "1", "--chunk-lines", "10", "--image-count", "2", "--quiet"]
    result = bench.main([*sizes, *tiny, "--json", str(out)])

    overhead = result["comparisons"]
    assert [(c.skill, c.lines) for c in overhead] == [("metadata", 30), ("detect", 20)]
    throughput = result["throughput"]
    for comparison in [*overhead, throughput]:
        runs = comparison.first + comparison.second
        assert len(runs) == 2
        for run in runs:
            assert run.check.complete, run.check
            assert run.wall_s > 0
            assert run.cpu.server > 0
        assert math.isfinite(comparison.overhead_ms())
        assert comparison.ratio() > 0
    assert [r.setup for r in overhead[0].first + overhead[0].second] == ["local", "celery"]
    # Only the Celery setups have workers (and a broker) doing the work.
    assert overhead[1].first[0].cpu.workers == 0
    assert overhead[1].second[0].cpu.workers > 0
    assert [r.setup for r in throughput.first + throughput.second] == ["celery-1", "celery-2"]
    assert all(r.check.objects > 0 for r in throughput.first + throughput.second)

    written = json.loads(out.read_text())
    assert [c["skill"] for c in written["comparisons"]] == ["metadata", "detect"]
    assert written["throughput"]["second"][0]["setup"] == "celery-2"
    assert written["comparisons"][0]["overhead_ms_per_line"] == pytest.approx(
        overhead[0].overhead_ms()
    )
