"""COCO detector classes as camera-trap categories and SpeciesNet taxa.

Without a MegaDetector export the `animals` skill runs a COCO detector (yolox-nano); this module
says what each of its classes means to a camera-trap user: the MegaDetector category (animal,
human or vehicle; None for the other 66 classes) and the most precise taxon of the SpeciesNet
taxonomy that is right for every animal the class covers. A COCO `bear` may be any bear, so it is
the bear family; a `zebra` is one of three Equus species and the data has no zebra-only group, so
it is the genus Equus; a `cow` is domestic cattle.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType

from batchvision.taxonomy.tree import HUMAN_KEY, Taxon, Taxonomy


class DetectorCategory(StrEnum):
    """MegaDetector's three categories, named as camera-trap APIs label them."""

    ANIMAL = "animal"
    HUMAN = "human"
    VEHICLE = "vehicle"

    @property
    def megadetector_id(self) -> str:
        """The category id in MegaDetector's batch output (`detection_categories`)."""
        return _MEGADETECTOR_IDS[self]

    @property
    def megadetector_name(self) -> str:
        """The category name in MegaDetector's batch output: `person`, not `human`."""
        return "person" if self is DetectorCategory.HUMAN else self.value


_MEGADETECTOR_IDS = {
    DetectorCategory.ANIMAL: "1",
    DetectorCategory.HUMAN: "2",
    DetectorCategory.VEHICLE: "3",
}

# YOLOX's class file spells four COCO names the VOC way.
_SPELLINGS = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "tvmonitor": "tv",
}

_VEHICLES = ("bicycle", "car", "motorcycle", "bus", "truck", "train", "boat", "airplane")

# Each COCO animal class -> the SpeciesNet key of the taxon covering all it means.
COCO_ANIMAL_KEYS: MappingProxyType[str, str] = MappingProxyType(
    {
        "bird": "aves;;;;",
        "cat": "mammalia;carnivora;felidae;felis;catus",
        "dog": "mammalia;carnivora;canidae;canis;familiaris",
        "horse": "mammalia;perissodactyla;equidae;equus;caballus",
        "sheep": "mammalia;artiodactyla;bovidae;ovis;aries",
        "cow": "mammalia;artiodactyla;bovidae;bos;taurus",
        "elephant": "mammalia;proboscidea;elephantidae;;",  # African or Asian
        "bear": "mammalia;carnivora;ursidae;;",
        "zebra": "mammalia;perissodactyla;equidae;equus;",  # grevyi, quagga or zebra
        "giraffe": "mammalia;artiodactyla;giraffidae;giraffa;",  # one species or four
    }
)

COCO_CATEGORIES: MappingProxyType[str, DetectorCategory] = MappingProxyType(
    {
        "person": DetectorCategory.HUMAN,
        **dict.fromkeys(_VEHICLES, DetectorCategory.VEHICLE),
        **dict.fromkeys(COCO_ANIMAL_KEYS, DetectorCategory.ANIMAL),
    }
)


def canonical_coco_name(name: str) -> str:
    """The standard COCO spelling of a class name (`motorbike` -> `motorcycle`)."""
    clean = name.strip().lower()
    return _SPELLINGS.get(clean, clean)


def coco_category(name: str) -> DetectorCategory | None:
    """The MegaDetector category of a COCO class; None for classes camera traps ignore."""
    return COCO_CATEGORIES.get(canonical_coco_name(name))


def coco_taxon(name: str, taxonomy: Taxonomy) -> Taxon | None:
    """The SpeciesNet entry for a COCO class: its animal taxon, the human species for `person`,
    the `vehicle` entry for vehicles; None for other classes.

    If a taxonomy release lacks the exact entry, its nearest coarser entry answers.
    """
    clean = canonical_coco_name(name)
    if clean in COCO_ANIMAL_KEYS:
        return taxonomy.nearest(COCO_ANIMAL_KEYS[clean])
    category = COCO_CATEGORIES.get(clean)
    return category_taxon(category, taxonomy) if category is not None else None


def category_taxon(category: DetectorCategory, taxonomy: Taxonomy) -> Taxon:
    """The entry a MegaDetector category alone supports: `animal`, the human species, `vehicle`."""
    if category is DetectorCategory.HUMAN:
        return taxonomy.nearest(HUMAN_KEY)
    if category is DetectorCategory.VEHICLE:
        return taxonomy.vehicle
    return taxonomy.animal
