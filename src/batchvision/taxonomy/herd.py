"""Herd smoothing: imprecise labels in one image take the precise label of their herd-mates.

A herd photographed by a camera trap is mostly one species, but far or hidden animals get
coarse labels (`mammalia`, `artiodactyla`, plain `animal`). Each such label takes the most
frequent precise label (family or finer) in the same image that it contains: a `mammalia`
beside three impalas becomes an impala, an `aves` beside them stays a bird. Humans never lend
their label to an animal. When two candidates are equally frequent (and equally scored, if
scores are given) there is no herd to follow and the label is left as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from batchvision.taxonomy.tree import Level, Taxon

PRECISE_LEVEL = Level.FAMILY
_IMPRECISE_LEVELS = frozenset({Level.KINGDOM, Level.CLASS, Level.ORDER})


def is_precise(taxon: Taxon) -> bool:
    """A label herd-mates may inherit: an animal taxon of family level or finer."""
    return taxon.level >= PRECISE_LEVEL and not taxon.is_human


def is_imprecise(taxon: Taxon) -> bool:
    """A label that may be replaced: class or order level, or the plain `animal`."""
    return taxon.level in _IMPRECISE_LEVELS


def compatible(imprecise: Taxon, precise: Taxon) -> bool:
    """Whether `precise` can stand for `imprecise`: it lies inside it (all lie inside animal)."""
    return precise.descends_from(imprecise)


@dataclass(slots=True)
class _Candidate:
    taxon: Taxon
    count: int = 0
    score: float = 0.0

    @property
    def rank(self) -> tuple[int, float]:
        return (self.count, self.score)


def smooth_herd(taxa: Sequence[Taxon], scores: Sequence[float] | None = None) -> list[Taxon]:
    """The labels of one image's annotations after smoothing, in the same order.

    `scores` (one per annotation) only break ties in frequency: the candidate whose annotations
    score more in total wins.
    """
    if scores is not None and len(scores) != len(taxa):
        raise ValueError(f"{len(taxa)} labels but {len(scores)} scores")
    candidates = _tally(taxa, scores or [0.0] * len(taxa))
    return [_smoothed(taxon, candidates) if is_imprecise(taxon) else taxon for taxon in taxa]


def _tally(taxa: Sequence[Taxon], scores: Sequence[float]) -> list[_Candidate]:
    """The precise labels of the image, counted by key (the same taxon under two ids is one)."""
    by_key: dict[str, _Candidate] = {}
    for taxon, score in zip(taxa, scores, strict=True):
        if is_precise(taxon):
            candidate = by_key.setdefault(taxon.key, _Candidate(taxon))
            candidate.count += 1
            candidate.score += score
    return list(by_key.values())


def _smoothed(taxon: Taxon, candidates: Sequence[_Candidate]) -> Taxon:
    fitting = sorted(
        (c for c in candidates if compatible(taxon, c.taxon)), key=lambda c: c.rank, reverse=True
    )
    if not fitting or (len(fitting) > 1 and fitting[0].rank == fitting[1].rank):
        return taxon
    return fitting[0].taxon
