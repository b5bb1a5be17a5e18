"""SpeciesNet-style roll-up on constructed score sets over the real taxonomy."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from taxonomy_data import (
    AVES,
    BLACK_BEAR,
    BROWN_BEAR,
    CARNIVORA,
    CAT,
    CATTLE,
    DOG,
    MAMMALIA,
    SUN_BEAR,
    URSIDAE,
    URSUS,
    real_taxonomy,
)

from batchvision.taxonomy import Level, Rollup, Taxon, Taxonomy, roll_up
from batchvision.taxonomy.rollup import ROLLUP_LEVELS

THRESHOLD = 0.65


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return real_taxonomy()


def rolled(
    taxonomy: Taxonomy,
    pairs: list[tuple[str, float]],
    *,
    levels: Sequence[Level] = ROLLUP_LEVELS,
    allowed: Callable[[Taxon], bool] | None = None,
) -> Rollup | None:
    """Roll up scores given by taxon key at the test threshold."""
    taxa = [(taxonomy.by_key(key), score) for key, score in pairs]
    return roll_up(taxa, THRESHOLD, levels=levels, allowed=allowed)


def test_confident_species_stays_a_species(taxonomy: Taxonomy) -> None:
    result = rolled(taxonomy, [(BLACK_BEAR, 0.9), (BROWN_BEAR, 0.05)])
    assert result == Rollup(taxonomy.by_key(BLACK_BEAR), 0.9, Level.SPECIES)


def test_split_between_two_species_of_a_genus_gives_the_genus(taxonomy: Taxonomy) -> None:
    result = rolled(taxonomy, [(BLACK_BEAR, 0.4), (BROWN_BEAR, 0.35), (DOG, 0.2)])
    assert result is not None
    assert (result.taxon.key, result.level) == (URSUS, Level.GENUS)
    assert result.score == pytest.approx(0.75)


def test_split_between_genera_gives_the_family(taxonomy: Taxonomy) -> None:
    result = rolled(taxonomy, [(BLACK_BEAR, 0.35), (SUN_BEAR, 0.35)])
    assert result is not None
    assert (result.taxon.key, result.level) == (URSIDAE, Level.FAMILY)


def test_split_between_families_gives_the_order(taxonomy: Taxonomy) -> None:
    result = rolled(taxonomy, [(BLACK_BEAR, 0.3), (DOG, 0.3), (CAT, 0.2)])
    assert result is not None
    assert (result.taxon.key, result.level) == (CARNIVORA, Level.ORDER)
    assert result.score == pytest.approx(0.8)


def test_split_between_orders_gives_the_class(taxonomy: Taxonomy) -> None:
    result = rolled(taxonomy, [(CATTLE, 0.4), (DOG, 0.4)])
    assert result is not None
    assert (result.taxon.key, result.level) == (MAMMALIA, Level.CLASS)


def test_split_between_classes_gives_animal(taxonomy: Taxonomy) -> None:
    result = rolled(taxonomy, [(AVES, 0.4), (DOG, 0.4)])
    assert result is not None
    assert result.taxon is taxonomy.animal
    assert result.level is Level.KINGDOM


def test_nothing_confident_gives_none(taxonomy: Taxonomy) -> None:
    assert rolled(taxonomy, [(DOG, 0.3)]) is None
    assert roll_up({taxonomy.blank: 0.9, taxonomy.vehicle: 0.05}, THRESHOLD) is None


def test_single_detector_class_either_passes_or_not(taxonomy: Taxonomy) -> None:
    bear_family = taxonomy.by_key(URSIDAE)
    assert roll_up({bear_family: 0.7}, THRESHOLD) == Rollup(bear_family, 0.7, Level.FAMILY)
    assert roll_up({bear_family: 0.6}, THRESHOLD) is None


def test_coarse_inputs_count_from_their_own_level(taxonomy: Taxonomy) -> None:
    # A family-level score says nothing about genera, so the genus sum stays 0.3.
    result = rolled(taxonomy, [(URSIDAE, 0.5), (BLACK_BEAR, 0.3)])
    assert result is not None
    assert (result.taxon.key, result.level) == (URSIDAE, Level.FAMILY)
    assert result.score == pytest.approx(0.8)


def test_sums_that_reach_the_threshold_exactly_pass(taxonomy: Taxonomy) -> None:
    # In floats 0.35 + 0.3 is 0.6499999999999999.
    result = rolled(taxonomy, [(BLACK_BEAR, 0.35), (BROWN_BEAR, 0.3)])
    assert result is not None
    assert result.taxon.key == URSUS


def test_the_same_taxon_under_two_ids_sums_as_one(taxonomy: Taxonomy) -> None:
    shama = [t for t in taxonomy.labels if t.common_name == "white-rumped shama"]
    assert len(shama) == 2
    result = roll_up({shama[0]: 0.4, shama[1]: 0.4}, THRESHOLD)
    assert result is not None
    assert result.level is Level.SPECIES
    assert result.taxon.common_name == "white-rumped shama"


def test_disallowed_taxa_are_skipped(taxonomy: Taxonomy) -> None:
    black_bear = taxonomy.by_key(BLACK_BEAR)
    result = rolled(
        taxonomy,
        [(BLACK_BEAR, 0.9), (BROWN_BEAR, 0.05)],
        allowed=lambda taxon: taxon != black_bear,
    )
    assert result is not None
    assert (result.taxon.key, result.level) == (URSUS, Level.GENUS)


def test_levels_can_start_coarser(taxonomy: Taxonomy) -> None:
    # SpeciesNet's fallback roll-up starts at the genus.
    result = rolled(
        taxonomy, [(BLACK_BEAR, 0.9)], levels=(Level.GENUS, Level.FAMILY, Level.KINGDOM)
    )
    assert result is not None
    assert result.taxon.key == URSUS


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_threshold_must_be_a_probability(taxonomy: Taxonomy, threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        roll_up({taxonomy.by_key(DOG): 0.9}, threshold)
