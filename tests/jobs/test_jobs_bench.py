"""bench/bench_jobs.py at a tiny size: real server subprocesses, real jobs, the raw pipeline."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pytest

from conftest import COCO_IMAGES, bench_module


def test_jsonl_file_is_one_request_per_line(tmp_path: Path) -> None:
    bench = bench_module("bench_jobs")
    images = bench.load_images(COCO_IMAGES, 3, 160, 85)
    assert all(max(i.width, i.height) == 160 for i in images)
    path = tmp_path / "input.jsonl"
    size = bench.write_jsonl(path, 7, "metadata", images)
    raw = path.read_bytes()
    assert size == len(raw)
    assert raw.endswith(b"\n")
    lines = [json.loads(line) for line in raw.splitlines()]
    assert [line["id"] for line in lines] == [f"l{i}" for i in range(7)]
    assert {line["skill"] for line in lines} == {"metadata"}
    for index, line in enumerate(lines):
        assert set(line) == {"id", "skill", "image"}
        assert base64.b64decode(line["image"]) == images[index % 3].jpeg


def test_bad_setting_is_refused() -> None:
    bench = bench_module("bench_jobs")
    with pytest.raises(SystemExit):
        bench.parse_args(["--setting", "no_such_setting=1"])
    config = bench.parse_args(["--setting", "BATCHVISION_JOB_CHUNK_LINES=20", "--ort-threads", "1"])
    assert config.settings == {"job_chunk_lines": "20", "ort_intra_op_threads": "1"}


def test_tiny_job_benchmark(tmp_path: Path) -> None:
    bench = bench_module("bench_jobs")
    out = tmp_path / "jobs.json"
    result = bench.main(
        [
            "--lines",
            "40,80",
            "--raw-images",
            "16",
            "--warmup-lines",
            "8",
            "--skill",
            "detect",
            # Chunks of 20 and result files of 40 lines: several chunks and output files.
            "--setting",
            "job_chunk_lines=20",
            "--setting",
            "job_output_lines=40",
            "--json",
            str(out),
        ]
    )

    assert [job.lines for job in result.jobs] == [40, 80]
    for job in result.jobs:
        check = job.check
        assert job.state == "completed"
        assert check.complete, check
        assert check.ok == job.lines
        assert (check.errors, check.missing, check.duplicates, check.bad) == (0, 0, 0, 0)
        assert check.files == job.lines // 40
        assert check.objects > 0  # detect found something in the small COCO images
        assert job.total_s > 0
        assert job.lines_per_s > 0
        assert job.cpu_ms_per_line > 0
        assert job.rss_warm_kb > 0
        assert job.peak_job_kb > 0
        assert job.peak_process_kb >= job.peak_job_kb
        assert job.peak_sampled_kb > 0
        assert math.isfinite(result.overhead_ms_per_line(job))
        assert math.isfinite(result.overhead_cpu_ms_per_line(job))
        assert result.throughput_ratio(job) > 0

    assert [raw.images for raw in result.raw] == [16, 16]
    assert all(raw.rate > 0 and raw.cpu_ms_per_image > 0 for raw in result.raw)
    assert result.raw_rate > 0
    assert result.peak_ratio() > 0
    # A fresh server per size, 40 vs 80 lines: memory does not double with the job.
    assert result.peak_ratio() < 1.5

    written = json.loads(out.read_text())
    assert written["skill"] == "detect"
    assert written["raw_images_per_s"] == pytest.approx(result.raw_rate)
    assert [job["lines"] for job in written["jobs"]] == [40, 80]
    assert all(job["check"]["complete"] for job in written["jobs"])
    assert {"lines_per_s", "overhead_ms_per_line", "job_over_raw", "peak_job_kb"} <= set(
        written["jobs"][0]
    )
    assert written["peak_rss_ratio"] == pytest.approx(result.peak_ratio())
