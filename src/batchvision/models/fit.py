"""Fit your own AI-generated-image detector: a logistic head on a binary card's image embeddings.

`fit_head(real, ai)` takes the embeddings of images known to be real and AI-generated (rows, as
the card's encoder gives them, L2-normalised like the card reads them), and returns a `FitReport`:
the head fitted on all of them, and how well that recipe does on images it did not see — AUC of
out-of-fold scores from stratified k-fold cross-validation (each outer fold's regularisation
chosen by an inner cross-validation on its training part alone), with a bootstrap interval, and
the false-positive rate and recall at the 0.5 threshold. Plain numpy: L2-regularised logistic
regression by Newton's method (a few iterations on 512 features).

`write_card(...)` writes the head (`NAME/head.json`) and a card (`NAME.card.toml`) into a model
directory, where the server reads user cards: the base card's encoder and feeding, the new head,
no calibration (the head's sigmoid is its probability), thresholds at 0.5.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from batchvision.core.fsutil import write_atomic
from batchvision.models.cards import ModelCard

Matrix = npt.NDArray[np.float64]
Vector = npt.NDArray[np.float64]

PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # L2 strengths tried by the inner cross-validation
THRESHOLD = 0.5
MIN_PER_CLASS = 5


@dataclass(frozen=True)
class Head:
    weights: Vector
    bias: float

    def scores(self, x: Matrix) -> Vector:
        return _sigmoid(x @ self.weights + self.bias)


@dataclass(frozen=True)
class FitReport:
    head: Head
    penalty: float  # chosen on all the data, for the head written
    auc: float  # cross-validated
    auc_low: float  # 95% bootstrap interval of that AUC
    auc_high: float
    false_positive_rate: float  # of real images at THRESHOLD, out of fold
    recall: float  # of AI images at THRESHOLD, out of fold
    real: int
    ai: int


def _sigmoid(z: Vector) -> Vector:
    out: Vector = 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for any z
    return out


def fit_logistic(x: Matrix, y: Vector, penalty: float, iterations: int = 25) -> Head:
    """L2-regularised logistic regression (the bias unpenalised), by Newton's method."""
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    ridge = penalty * np.eye(d + 1)
    ridge[d, d] = 0.0
    for _ in range(iterations):
        p = _sigmoid(design @ theta)
        gradient = design.T @ (p - y) / n + ridge @ theta
        hessian = (design.T * (p * (1 - p))) @ design / n + ridge + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return Head(theta[:d].copy(), float(theta[d]))


def auc(scores: Vector, labels: Vector) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    if not len(positive) or not len(negative):
        return math.nan
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positive) * len(negative)))


def folds(labels: Vector, k: int, rng: np.random.Generator) -> list[npt.NDArray[np.int64]]:
    """Stratified folds: each class shuffled and dealt round-robin."""
    parts: list[list[int]] = [[] for _ in range(k)]
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == value))
        for position, index in enumerate(members):
            parts[position % k].append(int(index))
    return [np.asarray(sorted(part), dtype=np.int64) for part in parts]


def out_of_fold(x: Matrix, y: Vector, penalty: float, k: int, seed: int) -> Vector:
    scores = np.zeros(len(y))
    for test in folds(y, k, np.random.default_rng(seed)):
        train = np.setdiff1d(np.arange(len(y)), test)
        scores[test] = fit_logistic(x[train], y[train], penalty).scores(x[test])
    return scores


def choose_penalty(x: Matrix, y: Vector, k: int, seed: int) -> float:
    """The penalty whose cross-validated AUC on (x, y) is best (the strongest among ties)."""
    results = [(auc(out_of_fold(x, y, p, k, seed), y), p) for p in PENALTIES]
    best = max(score for score, _ in results)
    return max(p for score, p in results if score >= best - 1e-12)


def nested_scores(x: Matrix, y: Vector, k: int, seed: int) -> Vector:
    """Out-of-fold scores where each outer fold's penalty was chosen on its training part only."""
    scores = np.zeros(len(y))
    for test in folds(y, k, np.random.default_rng(seed)):
        train = np.setdiff1d(np.arange(len(y)), test)
        inner_k = max(2, min(k, int(min(y[train].sum(), len(train) - y[train].sum()))))
        penalty = choose_penalty(x[train], y[train], inner_k, seed + 1)
        scores[test] = fit_logistic(x[train], y[train], penalty).scores(x[test])
    return scores


def bootstrap_auc(
    scores: Vector, labels: Vector, rounds: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of the AUC over resamples with replacement (within each class)."""
    rng = np.random.default_rng(seed)
    positive, negative = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    values = []
    for _ in range(rounds):
        sample = np.concatenate(
            [rng.choice(positive, len(positive)), rng.choice(negative, len(negative))]
        )
        values.append(auc(scores[sample], labels[sample]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def fit_head(real: Matrix, ai: Matrix, *, k: int = 5, seed: int = 0) -> FitReport:
    if len(real) < MIN_PER_CLASS or len(ai) < MIN_PER_CLASS:
        raise ValueError(f"need at least {MIN_PER_CLASS} real and {MIN_PER_CLASS} AI images")
    x = np.vstack([real, ai]).astype(np.float64)
    y = np.concatenate([np.zeros(len(real)), np.ones(len(ai))])
    k = min(k, len(real), len(ai))
    scores = nested_scores(x, y, k, seed)
    low, high = bootstrap_auc(scores, y, seed=seed)
    penalty = choose_penalty(x, y, k, seed)
    predicted = scores >= THRESHOLD
    return FitReport(
        head=fit_logistic(x, y, penalty),
        penalty=penalty,
        auc=auc(scores, y),
        auc_low=low,
        auc_high=high,
        false_positive_rate=float(predicted[y == 0].mean()),
        recall=float(predicted[y == 1].mean()),
        real=len(real),
        ai=len(ai),
    )


def write_card(model_dir: Path, name: str, base: ModelCard, report: FitReport) -> Path:
    """The head and the card of `name` in `model_dir`; returns the card's path."""
    head_file = f"{name}/head.json"
    body = json.dumps({"weights": report.head.weights.tolist(), "bias": report.head.bias})
    (model_dir / name).mkdir(parents=True, exist_ok=True)
    write_atomic(model_dir / head_file, body.encode())
    assert base.binary is not None
    binary = base.binary.model_dump(exclude_none=True)
    binary.update(
        output="embedding",
        head=head_file,
        head_sha256=hashlib.sha256(body.encode()).hexdigest(),
        thresholds={"low": THRESHOLD, "high": THRESHOLD},
    )
    binary.pop("calibration", None)
    card = base.model_dump(exclude_none=True, exclude={"binary", "wheel"})
    description = (
        f"fitted by fit-synthetic on {report.real} real and {report.ai} AI images "
        f"(cross-validated AUC {report.auc:.3f}) over {base.name}'s encoder"
    )
    card.update(name=name, description=description, version=f"fit-{base.name}")
    card["binary"] = binary
    ModelCard.model_validate(card)  # what the server will read
    path = model_dir / f"{name}.card.toml"
    write_atomic(path, _toml(card).encode())
    return path


def _toml(card: dict[str, Any]) -> str:
    """The card as TOML: top-level keys, then one table per nested mapping."""
    lines = [
        f"{key} = {_value(value)}" for key, value in card.items() if not isinstance(value, dict)
    ]
    for key, value in card.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]"]
            lines += [f"{name} = {_value(item)}" for name, item in value.items()]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to a card")
