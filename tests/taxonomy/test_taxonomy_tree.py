"""The taxonomy index over the real SpeciesNet taxonomy and label list."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from taxonomy_data import (
    BLACK_BEAR,
    CARNIVORA,
    FILES,
    HUMAN,
    MAMMALIA,
    URSIDAE,
    URSUS,
    real_taxonomy,
)

from batchvision.taxonomy import (
    Level,
    Taxon,
    Taxonomy,
    TaxonomyFormatError,
    UnknownTaxonError,
    load_taxonomy,
)
from batchvision.taxonomy.tree import ancestor_keys

BLACK_BEAR_ID = "436ddfdd-bc43-44c3-a25d-34671d3430a0"
# The label list repeats this key under a second uuid (SpeciesNet's issue 52).
SHAMA_KEY = "aves;passeriformes;muscicapidae;copsychus;malabaricus"
SHAMA_LABEL_ONLY_ID_PREFIX = "15ecc823"


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return real_taxonomy()


def test_files_are_found_and_counted(taxonomy: Taxonomy) -> None:
    assert FILES.labels is not None
    assert FILES.labels.name.endswith(".labels.txt")
    assert FILES.geofence_release is None  # not at hand offline
    assert FILES.geofence_fixes is not None
    # 3,538 taxonomy entries plus 3 label-list duplicates that carry their own uuid.
    assert len(taxonomy) == 3541
    assert len(taxonomy.labels) == 2498
    assert taxonomy.labels[0].common_name == "white/crandall's saddleback tamarin"


def test_lookups_by_id_key_label_and_common_name(taxonomy: Taxonomy) -> None:
    bear = taxonomy.by_id(BLACK_BEAR_ID)
    assert bear.common_name == "american black bear"
    assert taxonomy.by_key(BLACK_BEAR) is bear
    assert taxonomy.by_key(" Mammalia;Carnivora;Ursidae;Ursus;Americanus ") is bear
    assert taxonomy.by_common_name("American BLACK Bear") is bear
    assert taxonomy.lookup(BLACK_BEAR_ID) is bear
    assert taxonomy.lookup(BLACK_BEAR) is bear
    assert taxonomy.lookup(bear.label) is bear
    assert taxonomy.lookup("american black bear") is bear
    assert bear.label == f"{BLACK_BEAR_ID};{BLACK_BEAR};american black bear"


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.by_id("00000000-0000-0000-0000-000000000000"),
        lambda t: t.by_key("mammalia;carnivora;ursidae;ursus;nonexistens"),
        lambda t: t.by_common_name("jackalope"),
        lambda t: t.lookup("jackalope"),
    ],
)
def test_unknown_lookups_raise(taxonomy: Taxonomy, call: Callable[[Taxonomy], Taxon]) -> None:
    with pytest.raises(UnknownTaxonError):
        call(taxonomy)


def test_malformed_key_is_a_value_error(taxonomy: Taxonomy) -> None:
    with pytest.raises(ValueError, match="5"):
        taxonomy.by_key("mammalia;carnivora")


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("animal", Level.KINGDOM),
        ("blank", Level.NONE),
        ("vehicle", Level.NONE),
        ("bird", Level.CLASS),
        ("carnivorous mammal", Level.ORDER),
        ("bear family", Level.FAMILY),
        ("ursus species", Level.GENUS),
        ("american black bear", Level.SPECIES),
    ],
)
def test_levels(taxonomy: Taxonomy, name: str, level: Level) -> None:
    assert taxonomy.by_common_name(name).level is level


def test_parents_walk_up_to_animal(taxonomy: Taxonomy) -> None:
    chain = list(taxonomy.by_key(BLACK_BEAR).lineage())
    assert [t.key for t in chain] == [BLACK_BEAR, URSUS, URSIDAE, CARNIVORA, MAMMALIA, ";;;;"]
    assert [t.level for t in chain] == [
        Level.SPECIES,
        Level.GENUS,
        Level.FAMILY,
        Level.ORDER,
        Level.CLASS,
        Level.KINGDOM,
    ]
    assert chain[-1] is taxonomy.animal
    assert taxonomy.animal.parent() is None
    assert taxonomy.blank.parent() is None
    assert taxonomy.vehicle.parent() is None


def test_parent_skips_levels_the_data_lacks() -> None:
    # A species whose genus has no entry: its parent is the family.
    taxonomy = Taxonomy(
        [
            ("a", "", "", "", "", "", "animal"),
            ("b", "", "", "", "", "", "blank"),
            ("v", "", "", "", "", "", "vehicle"),
            ("c", "mammalia", "", "", "", "", "mammal"),
            ("f", "mammalia", "carnivora", "ursidae", "", "", "bear family"),
            ("s", "mammalia", "carnivora", "ursidae", "ursus", "arctos", "brown bear"),
        ]
    )
    bear = taxonomy.by_id("s")
    assert bear.parent() is taxonomy.by_id("f")
    assert taxonomy.by_id("f").parent() is taxonomy.by_id("c")  # no order entry either
    assert bear.ancestor_at(Level.GENUS) is None
    assert taxonomy.nearest("mammalia;carnivora;ursidae;ursus;") is taxonomy.by_id("f")


def test_ancestor_at_and_descends_from(taxonomy: Taxonomy) -> None:
    bear = taxonomy.by_key(BLACK_BEAR)
    family = taxonomy.by_key(URSIDAE)
    assert bear.ancestor_at(Level.FAMILY) is family
    assert bear.ancestor_at(Level.SPECIES) is bear
    assert bear.ancestor_at(Level.KINGDOM) is taxonomy.animal
    assert family.ancestor_at(Level.GENUS) is None  # coarser than the level asked for
    assert taxonomy.blank.ancestor_at(Level.KINGDOM) is None
    assert bear.descends_from(family)
    assert bear.descends_from(taxonomy.animal)
    assert not bear.descends_from(bear)
    assert not family.descends_from(bear)
    assert not bear.descends_from(taxonomy.by_common_name("cat family"))
    assert not bear.descends_from(taxonomy.blank)
    assert not taxonomy.vehicle.descends_from(taxonomy.animal)


def test_to_dict_has_empty_strings_below_the_level(taxonomy: Taxonomy) -> None:
    family = taxonomy.by_key(URSIDAE)
    assert family.to_dict() == {
        "id": family.id,
        "class": "mammalia",
        "order": "carnivora",
        "family": "ursidae",
        "genus": "",
        "species": "",
    }
    assert taxonomy.animal.to_dict()["class"] == ""


def test_shared_common_name_resolves_to_the_classifier_label(taxonomy: Taxonomy) -> None:
    # Both the genus Homo and Homo sapiens are called "human"; the classifier outputs the species.
    human = taxonomy.by_common_name("Human")
    assert human.key == HUMAN
    assert human.is_human
    genus = human.parent()
    assert genus is not None
    assert (genus.level, genus.common_name) == (Level.GENUS, "human")
    assert taxonomy.human is human


def test_duplicate_keys_keep_both_ids_and_one_canonical_entry(taxonomy: Taxonomy) -> None:
    canonical = taxonomy.by_key(SHAMA_KEY)
    label_only = [t for t in taxonomy.labels if t.key == SHAMA_KEY and t is not canonical]
    assert len(label_only) == 1
    assert taxonomy.by_id(label_only[0].id) is label_only[0]
    assert label_only[0].id.startswith(SHAMA_LABEL_ONLY_ID_PREFIX)
    assert label_only[0].parent() is canonical.parent()


def test_ancestor_keys() -> None:
    assert ancestor_keys(URSUS) == [URSUS, URSIDAE, CARNIVORA, MAMMALIA]
    assert ancestor_keys(";;;;") == []


def test_load_is_cached_per_path(taxonomy: Taxonomy) -> None:
    assert FILES.labels is not None
    assert load_taxonomy(FILES.taxonomy, FILES.labels) is taxonomy
    taxonomy_only = load_taxonomy(FILES.taxonomy)
    assert taxonomy_only is not taxonomy
    assert taxonomy_only.labels == ()
    assert load_taxonomy(FILES.taxonomy) is taxonomy_only


def test_malformed_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.txt"
    path.write_text("1f68;;;;;;animal\n\nbad;mammalia;carnivora\n", encoding="utf-8")
    with pytest.raises(TaxonomyFormatError, match=r"taxonomy\.txt:3"):
        Taxonomy.from_files(path)


def test_taxonomy_without_animal_entry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.txt"
    path.write_text("x;mammalia;;;;;mammal\n", encoding="utf-8")
    with pytest.raises(TaxonomyFormatError, match="animal"):
        Taxonomy.from_files(path)


def test_detached_taxon_cannot_find_its_parent() -> None:
    loose = Taxon("x", "mammalia", "carnivora", "", "", "", "carnivorous mammal")
    assert loose.level is Level.ORDER
    with pytest.raises(RuntimeError, match="not loaded"):
        loose.parent()
