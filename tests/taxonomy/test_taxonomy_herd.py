"""Herd smoothing within one image, on real taxa."""

from __future__ import annotations

import pytest
from taxonomy_data import (
    ARTIODACTYLA,
    AVES,
    BLACK_BEAR,
    CATTLE,
    HUMAN,
    IMPALA,
    MAMMALIA,
    PHEASANT,
    SHEEP,
    URSUS,
    real_taxonomy,
)

from batchvision.taxonomy import Taxon, Taxonomy, smooth_herd


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return real_taxonomy()


def keys(taxa: list[Taxon]) -> list[str]:
    return [t.key if t.is_taxonomic else t.common_name for t in taxa]


def labels(taxonomy: Taxonomy, *names: str) -> list[Taxon]:
    """Taxa by key, with `animal`, `blank` and `vehicle` by name."""
    return [taxonomy.lookup(name) if ";" not in name else taxonomy.by_key(name) for name in names]


def test_imprecise_labels_inherit_the_herd_species(taxonomy: Taxonomy) -> None:
    image = labels(taxonomy, IMPALA, IMPALA, MAMMALIA, ARTIODACTYLA, "animal", IMPALA)
    assert keys(smooth_herd(image)) == [IMPALA] * 6


def test_the_most_frequent_compatible_label_wins(taxonomy: Taxonomy) -> None:
    image = labels(taxonomy, CATTLE, CATTLE, CATTLE, SHEEP, MAMMALIA)
    assert keys(smooth_herd(image)) == [CATTLE, CATTLE, CATTLE, SHEEP, CATTLE]


def test_incompatible_labels_stay(taxonomy: Taxonomy) -> None:
    image = labels(taxonomy, CATTLE, CATTLE, AVES)
    assert keys(smooth_herd(image)) == [CATTLE, CATTLE, AVES]


def test_compatibility_is_checked_per_label(taxonomy: Taxonomy) -> None:
    # The bird takes the only bird species present, the mammal the more frequent cattle.
    image = labels(taxonomy, CATTLE, CATTLE, PHEASANT, AVES, MAMMALIA)
    assert keys(smooth_herd(image)) == [CATTLE, CATTLE, PHEASANT, PHEASANT, CATTLE]


def test_a_tie_leaves_the_label_alone(taxonomy: Taxonomy) -> None:
    image = labels(taxonomy, CATTLE, SHEEP, MAMMALIA)
    assert keys(smooth_herd(image)) == [CATTLE, SHEEP, MAMMALIA]
    assert keys(smooth_herd(image, [0.5, 0.5, 0.3])) == [CATTLE, SHEEP, MAMMALIA]


def test_scores_break_a_tie(taxonomy: Taxonomy) -> None:
    image = labels(taxonomy, CATTLE, SHEEP, MAMMALIA)
    assert keys(smooth_herd(image, [0.4, 0.9, 0.3])) == [CATTLE, SHEEP, SHEEP]


def test_genus_level_labels_count_as_precise(taxonomy: Taxonomy) -> None:
    image = labels(taxonomy, URSUS, URSUS, BLACK_BEAR, MAMMALIA)
    # The genus is precise (so not replaced) and the most frequent donor.
    assert keys(smooth_herd(image)) == [URSUS, URSUS, BLACK_BEAR, URSUS]


def test_humans_lend_no_label(taxonomy: Taxonomy) -> None:
    image = labels(taxonomy, HUMAN, HUMAN, "animal", MAMMALIA)
    assert keys(smooth_herd(image)) == [HUMAN, HUMAN, "animal", MAMMALIA]


def test_non_taxa_are_untouched(taxonomy: Taxonomy) -> None:
    image = labels(taxonomy, CATTLE, "blank", "vehicle")
    assert keys(smooth_herd(image)) == [CATTLE, "blank", "vehicle"]


def test_nothing_precise_changes_nothing(taxonomy: Taxonomy) -> None:
    image = labels(taxonomy, MAMMALIA, "animal", AVES)
    assert smooth_herd(image) == image
    assert smooth_herd([]) == []


def test_one_taxon_under_two_ids_counts_once(taxonomy: Taxonomy) -> None:
    shama = [t for t in taxonomy.labels if t.common_name == "white-rumped shama"]
    image = [*shama, taxonomy.by_key(PHEASANT), taxonomy.by_key(AVES)]
    smoothed = smooth_herd(image)
    assert smoothed[3].common_name == "white-rumped shama"


def test_scores_must_match_labels(taxonomy: Taxonomy) -> None:
    with pytest.raises(ValueError, match="scores"):
        smooth_herd(labels(taxonomy, CATTLE, MAMMALIA), [0.5])
