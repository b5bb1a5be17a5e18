"""SpeciesNet-style roll-up: the most precise taxon the scores are confident about.

SpeciesNet's ensemble (`roll_up_labels_to_first_matching_level`) walks the levels from fine to
coarse; at each level it adds every input's score to its ancestor at that level and stops at the
first level whose best sum reaches the threshold. Two species of one genus at 0.4 each are not
confident species, but 0.8 says "this genus". Inputs coarser than a level add nothing to it (a
family-level score says nothing about genera) and count from their own level on.

Scores may come from a species classifier (many taxa) or from one detector class mapped to its
taxon (one taxon: its score either reaches the threshold or nothing does, and the caller falls
back to the detector's `animal`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from batchvision.taxonomy.tree import Level, Taxon

ROLLUP_LEVELS: tuple[Level, ...] = (
    Level.SPECIES,
    Level.GENUS,
    Level.FAMILY,
    Level.ORDER,
    Level.CLASS,
    Level.KINGDOM,
)

# Sums of float scores land a hair off: 0.4 + 0.25 must reach 0.65.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Rollup:
    """The chosen taxon, its summed score and the level the sum was taken at."""

    taxon: Taxon
    score: float
    level: Level


def roll_up(
    scores: Mapping[Taxon, float] | Iterable[tuple[Taxon, float]],
    threshold: float,
    *,
    levels: Sequence[Level] = ROLLUP_LEVELS,
    allowed: Callable[[Taxon], bool] | None = None,
) -> Rollup | None:
    """The first level (in `levels` order) whose best summed score reaches `threshold`.

    `allowed` (e.g. `Geofence.allows(country)`) drops candidates that may not be reported, as
    SpeciesNet does with its geofence while rolling up. None when no level is confident.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"the roll-up threshold must be in (0, 1], got {threshold}")
    pairs = list(scores.items()) if isinstance(scores, Mapping) else list(scores)
    for level in levels:
        best = _best(_sums_at(pairs, level), allowed)
        if best is not None and best[1] + _EPSILON >= threshold:
            return Rollup(best[0], best[1], level)
    return None


def _sums_at(pairs: Sequence[tuple[Taxon, float]], level: Level) -> dict[Taxon, float]:
    """Each input's score added to its ancestor at `level` (inputs without one add nothing)."""
    sums: dict[Taxon, float] = {}
    for taxon, score in pairs:
        ancestor = taxon.ancestor_at(level)
        if ancestor is not None:
            sums[ancestor] = sums.get(ancestor, 0.0) + score
    return sums


def _best(
    sums: Mapping[Taxon, float], allowed: Callable[[Taxon], bool] | None
) -> tuple[Taxon, float] | None:
    """The highest sum among allowed taxa; on a tie the first seen (the inputs' order)."""
    candidates = [
        (taxon, total) for taxon, total in sums.items() if allowed is None or allowed(taxon)
    ]
    return max(candidates, key=lambda item: item[1], default=None)
