"""The real SpeciesNet files beside the repo, shared by the taxonomy tests."""

from __future__ import annotations

from batchvision.taxonomy import SpeciesNetFiles, Taxonomy
from conftest import MODELS

SPECIESNET_DIR = MODELS / "speciesnet_data"
FILES = SpeciesNetFiles.find(SPECIESNET_DIR)


def real_taxonomy() -> Taxonomy:
    return FILES.taxonomy_index()


BLACK_BEAR = "mammalia;carnivora;ursidae;ursus;americanus"
BROWN_BEAR = "mammalia;carnivora;ursidae;ursus;arctos"
SUN_BEAR = "mammalia;carnivora;ursidae;helarctos;malayanus"
URSUS = "mammalia;carnivora;ursidae;ursus;"
URSIDAE = "mammalia;carnivora;ursidae;;"
CARNIVORA = "mammalia;carnivora;;;"
MAMMALIA = "mammalia;;;;"
AVES = "aves;;;;"
ARTIODACTYLA = "mammalia;artiodactyla;;;"
CATTLE = "mammalia;artiodactyla;bovidae;bos;taurus"
SHEEP = "mammalia;artiodactyla;bovidae;ovis;aries"
IMPALA = "mammalia;artiodactyla;bovidae;aepyceros;melampus"
DOG = "mammalia;carnivora;canidae;canis;familiaris"
CAT = "mammalia;carnivora;felidae;felis;catus"
PHEASANT = "aves;galliformes;phasianidae;phasianus;colchicus"
HUMAN = "mammalia;primates;hominidae;homo;sapiens"
