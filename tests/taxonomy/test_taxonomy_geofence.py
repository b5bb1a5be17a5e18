"""Geofence rules: a small constructed rule set, then the real fixes CSV."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from taxonomy_data import (
    BLACK_BEAR,
    BROWN_BEAR,
    CARNIVORA,
    DOG,
    FILES,
    URSIDAE,
    URSUS,
    real_taxonomy,
)

from batchvision.taxonomy import (
    Geofence,
    GeofenceFormatError,
    Taxonomy,
    UnknownCountryError,
    UnknownRegionError,
    load_geofence,
    roll_up,
)
from batchvision.taxonomy.geofence import GeofenceFix, Rules, apply_fixes, read_fixes

DINGO = "mammalia;carnivora;canidae;canis;lupus dingo"
HIPPO = "mammalia;artiodactyla;hippopotamidae;hippopotamus;amphibius"
SIKA = "mammalia;artiodactyla;cervidae;cervus;nippon"

RULES: dict[str, Any] = {
    BLACK_BEAR: {"allow": {"USA": ["AK", "NJ"], "CAN": []}},
    BROWN_BEAR: {"allow": {"USA": [], "RUS": []}, "block": {"USA": ["NJ"]}},
    URSIDAE: {"block": {"GBR": []}},
}


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return real_taxonomy()


@pytest.fixture(scope="module")
def small() -> Geofence:
    return Geofence(RULES, has_base_rules=True)


@pytest.fixture(scope="module")
def fixes_only() -> Geofence:
    assert FILES.geofence_fixes is not None
    return load_geofence(None, FILES.geofence_fixes)


def test_allowed_where_the_allow_list_says(taxonomy: Taxonomy, small: Geofence) -> None:
    bear = taxonomy.by_key(BLACK_BEAR)
    assert small.is_allowed(bear, "CAN")
    assert small.is_allowed(bear, "USA", "NJ")
    assert small.is_allowed(bear, "United States", "Alaska")
    assert small.is_allowed(bear, "USA")  # no state given: the country is listed
    assert small.geofenced(bear, "CA") is bear


def test_blocked_outside_the_allow_list_rolls_up(taxonomy: Taxonomy, small: Geofence) -> None:
    bear = taxonomy.by_key(BLACK_BEAR)
    assert not small.is_allowed(bear, "MEX")
    assert not small.is_allowed(bear, "USA", "TX")
    assert small.geofenced(bear, "Mexico").key == URSUS
    assert small.geofenced(bear, "US", "TX").key == URSUS


def test_block_wins_over_allow(taxonomy: Taxonomy, small: Geofence) -> None:
    bear = taxonomy.by_key(BROWN_BEAR)
    assert small.is_allowed(bear, "USA", "CA")
    assert not small.is_allowed(bear, "USA", "NJ")
    assert small.geofenced(bear, "USA", "NJ").key == URSUS


def test_an_ancestor_block_blocks_the_whole_subtree(taxonomy: Taxonomy, small: Geofence) -> None:
    bear = taxonomy.by_key(BROWN_BEAR)
    assert not small.is_allowed(taxonomy.by_key(URSUS), "GB")
    assert small.geofenced(bear, "GB").key == CARNIVORA
    assert small.is_allowed(taxonomy.by_key(DOG), "GB")


def test_taxa_without_rules_and_non_taxa_are_allowed(taxonomy: Taxonomy, small: Geofence) -> None:
    for taxon in (taxonomy.by_key(DOG), taxonomy.animal, taxonomy.blank, taxonomy.vehicle):
        assert small.is_allowed(taxon, "GBR")
        assert small.geofenced(taxon, "GBR") is taxon


def test_unknown_places_raise(taxonomy: Taxonomy, small: Geofence) -> None:
    bear = taxonomy.by_key(BLACK_BEAR)
    with pytest.raises(UnknownCountryError):
        small.is_allowed(bear, "Atlantis")
    with pytest.raises(UnknownRegionError):
        small.geofenced(bear, "USA", "XX")


def test_roll_up_honours_the_geofence(taxonomy: Taxonomy, small: Geofence) -> None:
    scores = {taxonomy.by_key(BLACK_BEAR): 0.9, taxonomy.by_key(BROWN_BEAR): 0.05}
    in_mexico = roll_up(scores, 0.65, allowed=small.allows("MX"))
    in_canada = roll_up(scores, 0.65, allowed=small.allows("CA"))
    assert in_mexico is not None
    assert in_canada is not None
    assert in_mexico.taxon.key == URSUS
    assert in_canada.taxon.key == BLACK_BEAR


def test_constructed_rules_report_base_rules(small: Geofence) -> None:
    assert small.info() == {"has_base_rules": True, "taxa_with_rules": 3, "sources": []}
    assert small.rules_for(BLACK_BEAR) == {"allow": {"USA": ["AK", "NJ"], "CAN": []}}
    assert small.rules_for(DOG) == {}


@pytest.mark.parametrize(
    "rules",
    [
        {BLACK_BEAR: {"allow": {"US": []}}},  # a CCA2 code
        {BLACK_BEAR: {"permit": {"USA": []}}},
        {BLACK_BEAR: {"allow": {"USA": "NJ"}}},
        {"mammalia;ursidae": {"allow": {"USA": []}}},
    ],
)
def test_malformed_rules_are_refused(rules: dict[str, Any]) -> None:
    with pytest.raises(GeofenceFormatError):
        Geofence(rules, has_base_rules=True)


def test_real_fixes_file_is_read_whole() -> None:
    assert FILES.geofence_fixes is not None
    fixes = read_fixes(FILES.geofence_fixes)
    assert len(fixes) == 1318
    assert sum(fix.rule == "allow" for fix in fixes) == 14
    assert fixes[0] == GeofenceFix(BLACK_BEAR, "allow", "USA", "NJ", line=4)
    assert fixes[-1] == GeofenceFix(URSIDAE, "block", "GBR", "", line=1335)


def test_real_fixes_block_bears_in_britain(taxonomy: Taxonomy, fixes_only: Geofence) -> None:
    bear = taxonomy.by_key(BROWN_BEAR)
    assert not fixes_only.is_allowed(bear, "United Kingdom")
    assert fixes_only.geofenced(bear, "GB").key == CARNIVORA
    assert fixes_only.geofenced(bear, "RUS") is bear


def test_real_fixes_keep_dingos_in_australia(taxonomy: Taxonomy, fixes_only: Geofence) -> None:
    dingo = taxonomy.by_key(DINGO)
    assert fixes_only.is_allowed(dingo, "Australia")
    assert fixes_only.geofenced(dingo, "Kenya").key == "mammalia;carnivora;canidae;canis;"


def test_real_fixes_state_rules(taxonomy: Taxonomy, fixes_only: Geofence) -> None:
    sika = taxonomy.by_key(SIKA)
    assert fixes_only.is_allowed(sika, "USA", "NJ")  # feral populations
    assert fixes_only.is_allowed(sika, "USA", "DE")
    assert fixes_only.geofenced(sika, "USA", "VA").key == "mammalia;artiodactyla;cervidae;cervus;"
    assert fixes_only.is_allowed(sika, "JPN")


def test_fixes_alone_apply_no_allow_list(taxonomy: Taxonomy, fixes_only: Geofence) -> None:
    # The hippo's `allow,COL` row widens the base list; alone it must not ban hippos from Africa.
    hippo = taxonomy.by_key(HIPPO)
    assert fixes_only.is_allowed(hippo, "KEN")
    assert fixes_only.is_allowed(hippo, "COL")
    assert fixes_only.geofenced(hippo, "USA").key == "mammalia;artiodactyla;;;"
    assert fixes_only.rules_for(BLACK_BEAR) == {}
    assert fixes_only.info() == {
        "has_base_rules": False,
        "taxa_with_rules": 15,
        "sources": ["geofence_fixes.csv"],
    }


def test_fixes_widen_base_rules_as_speciesnet_does() -> None:
    base: Rules = {BLACK_BEAR: {"allow": {"USA": ["AK"]}}, DOG: {"allow": {"USA": []}}}
    fixes = [
        GeofenceFix(BLACK_BEAR, "allow", "USA", "NJ", 1),
        GeofenceFix(DOG, "allow", "USA", "NJ", 2),  # already country-wide: no-op
        GeofenceFix(HIPPO, "allow", "COL", "", 3),  # with a base this creates the list
        GeofenceFix(BROWN_BEAR, "block", "USA", "NJ", 4),
        GeofenceFix(BROWN_BEAR, "block", "USA", "", 5),  # country-wide replaces the state
    ]
    fixed = apply_fixes(base, fixes, has_base_rules=True)
    assert fixed[BLACK_BEAR] == {"allow": {"USA": ["AK", "NJ"]}}
    assert fixed[DOG] == {"allow": {"USA": []}}
    assert fixed[HIPPO] == {"allow": {"COL": []}}
    assert fixed[BROWN_BEAR] == {"block": {"USA": []}}
    assert base[BLACK_BEAR] == {"allow": {"USA": ["AK"]}}  # the input is left alone


def test_release_file_plus_fixes(tmp_path: Path, taxonomy: Taxonomy) -> None:
    release = tmp_path / "geofence_release.json"
    release.write_text(json.dumps({BLACK_BEAR: {"allow": {"USA": ["AK"], "CAN": []}}}))
    assert FILES.geofence_fixes is not None
    geofence = load_geofence(release, FILES.geofence_fixes)
    assert geofence.has_base_rules
    assert geofence.info()["sources"] == ["geofence_release.json", "geofence_fixes.csv"]
    bear = taxonomy.by_key(BLACK_BEAR)
    assert geofence.is_allowed(bear, "USA", "NJ")  # added by the fixes
    assert not geofence.is_allowed(bear, "USA", "TX")
    assert not geofence.is_allowed(bear, "KEN")
    assert load_geofence(release, FILES.geofence_fixes) is geofence


def test_no_geofence_data_allows_everything(taxonomy: Taxonomy) -> None:
    empty = load_geofence()
    assert empty.info() == {"has_base_rules": False, "taxa_with_rules": 0, "sources": []}
    assert empty.is_allowed(taxonomy.by_key(DINGO), "KEN")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("species,rule\n", "first row"),
        ("species,rule,country_code,admin1_region_code\naves;;;;,permit,USA,\n", "allow or block"),
        ("species,rule,country_code,admin1_region_code\naves;;;;,block,US,\n", "CCA3"),
        ("species,rule,country_code,admin1_region_code\naves,block,USA,\n", "class;order"),
    ],
)
def test_malformed_fixes_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "fixes.csv"
    path.write_text(content)
    with pytest.raises(GeofenceFormatError, match=message):
        read_fixes(path)


def test_malformed_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "geofence_release.json"
    path.write_text("{not json")
    with pytest.raises(GeofenceFormatError, match="not JSON"):
        load_geofence(path)
