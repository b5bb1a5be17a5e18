"""COCO classes -> MegaDetector categories and SpeciesNet taxa, on the real taxonomy."""

from __future__ import annotations

import pytest
from taxonomy_data import HUMAN, real_taxonomy

from batchvision.taxonomy import (
    DetectorCategory,
    Level,
    Taxonomy,
    category_taxon,
    coco_category,
    coco_taxon,
)
from conftest import MODELS

YOLOX_CLASSES = (MODELS / "yolox_nano" / "coco_classes.txt").read_text().splitlines()
VEHICLES = ["bicycle", "car", "motorcycle", "bus", "truck", "train", "boat", "airplane"]


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return real_taxonomy()


@pytest.mark.parametrize(
    ("coco", "level", "ranks", "common_name"),
    [
        ("bird", Level.CLASS, ("aves", "", "", "", ""), "bird"),
        ("cat", Level.SPECIES, ("mammalia", "carnivora", "felidae", "felis", "catus"), None),
        ("dog", Level.SPECIES, ("mammalia", "carnivora", "canidae", "canis", "familiaris"), None),
        (
            "horse",
            Level.SPECIES,
            ("mammalia", "perissodactyla", "equidae", "equus", "caballus"),
            None,
        ),
        ("sheep", Level.SPECIES, ("mammalia", "artiodactyla", "bovidae", "ovis", "aries"), None),
        ("cow", Level.SPECIES, ("mammalia", "artiodactyla", "bovidae", "bos", "taurus"), None),
        ("elephant", Level.FAMILY, ("mammalia", "proboscidea", "elephantidae", "", ""), None),
        ("bear", Level.FAMILY, ("mammalia", "carnivora", "ursidae", "", ""), "bear family"),
        ("zebra", Level.GENUS, ("mammalia", "perissodactyla", "equidae", "equus", ""), None),
        ("giraffe", Level.GENUS, ("mammalia", "artiodactyla", "giraffidae", "giraffa", ""), None),
    ],
)
def test_animal_classes_land_on_real_taxa(
    taxonomy: Taxonomy,
    coco: str,
    level: Level,
    ranks: tuple[str, ...],
    common_name: str | None,
) -> None:
    taxon = coco_taxon(coco, taxonomy)
    assert taxon is not None
    assert taxon in taxonomy
    assert taxon.level is level
    assert taxon.ranks == ranks
    if common_name is not None:
        assert taxon.common_name == common_name
    assert coco_category(coco) is DetectorCategory.ANIMAL


def test_domestic_species_are_named(taxonomy: Taxonomy) -> None:
    names = {coco: coco_taxon(coco, taxonomy) for coco in ("cow", "dog", "cat", "horse", "sheep")}
    assert {coco: t.common_name for coco, t in names.items() if t is not None} == {
        "cow": "domestic cattle",
        "dog": "domestic dog",
        "cat": "domestic cat",
        "horse": "domestic horse",
        "sheep": "domestic sheep",
    }


def test_every_zebra_species_lies_in_the_zebra_taxon(taxonomy: Taxonomy) -> None:
    zebra = coco_taxon("zebra", taxonomy)
    assert zebra is not None
    for name in ("plains zebra", "grevy's zebra", "mountain zebra"):
        assert taxonomy.by_common_name(name).descends_from(zebra)


def test_person_is_the_human_species(taxonomy: Taxonomy) -> None:
    person = coco_taxon("person", taxonomy)
    assert person is not None
    assert person.key == HUMAN
    assert person in taxonomy.labels
    assert coco_category("person") is DetectorCategory.HUMAN


@pytest.mark.parametrize("coco", [*VEHICLES, "motorbike", "aeroplane"])
def test_vehicles_are_the_vehicle_entry(taxonomy: Taxonomy, coco: str) -> None:
    assert coco_category(coco) is DetectorCategory.VEHICLE
    assert coco_taxon(coco, taxonomy) is taxonomy.vehicle
    assert taxonomy.vehicle.common_name == "vehicle"


def test_other_classes_mean_nothing_to_a_camera_trap(taxonomy: Taxonomy) -> None:
    others = [name for name in YOLOX_CLASSES if name not in [*VEHICLES, "motorbike", "aeroplane"]]
    mapped = [name for name in others if coco_category(name) is not None]
    assert sorted(mapped) == sorted(
        [
            "person",
            "bird",
            "cat",
            "dog",
            "horse",
            "sheep",
            "cow",
            "elephant",
            "bear",
            "zebra",
            "giraffe",
        ]
    )
    for name in ("teddy bear", "stop sign", "tvmonitor", "chair"):
        assert coco_category(name) is None
        assert coco_taxon(name, taxonomy) is None


def test_yolox_class_file_is_fully_covered() -> None:
    categories = [coco_category(name) for name in YOLOX_CLASSES]
    assert len(YOLOX_CLASSES) == 80
    assert categories.count(DetectorCategory.VEHICLE) == 8
    assert categories.count(DetectorCategory.ANIMAL) == 10
    assert categories.count(DetectorCategory.HUMAN) == 1


def test_megadetector_ids_and_names() -> None:
    assert [(c.megadetector_id, c.megadetector_name) for c in DetectorCategory] == [
        ("1", "animal"),
        ("2", "person"),
        ("3", "vehicle"),
    ]


def test_category_taxa(taxonomy: Taxonomy) -> None:
    assert category_taxon(DetectorCategory.ANIMAL, taxonomy) is taxonomy.animal
    assert category_taxon(DetectorCategory.HUMAN, taxonomy).key == HUMAN
    assert category_taxon(DetectorCategory.VEHICLE, taxonomy) is taxonomy.vehicle


def test_a_release_without_the_species_falls_back_to_its_genus() -> None:
    taxonomy = Taxonomy(
        [
            ("a", "", "", "", "", "", "animal"),
            ("b", "", "", "", "", "", "blank"),
            ("v", "", "", "", "", "", "vehicle"),
            ("g", "mammalia", "artiodactyla", "bovidae", "bos", "", "bos species"),
        ]
    )
    cow = coco_taxon("cow", taxonomy)
    assert cow is taxonomy.by_id("g")
    assert coco_taxon("bird", taxonomy) is taxonomy.animal
