"""The SpeciesNet taxonomy: `taxonomy_release.txt` and the classifier's label list, indexed.

Both files hold one entry a line, `uuid;class;order;family;genus;species;common name`, in lower
case. An entry's level is its finest non-empty rank: `mammalia;carnivora;ursidae;;` is the bear
family, `mammalia;carnivora;ursidae;ursus;` the genus Ursus. Three entries carry no ranks at all:
`animal` (the root SpeciesNet rolls everything up to, its "kingdom"), `blank` and `vehicle`.

The five ranks joined by `;` (the "key", SpeciesNet's "full class string") name a taxon; the uuid
names an entry. They are not one to one: the label list repeats three keys under second uuids
(SpeciesNet's cameratrapai issue 52), so every id is kept and each key resolves to one canonical
entry, the taxonomy file's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

ANIMAL = "animal"
BLANK = "blank"
VEHICLE = "vehicle"

# The human species: SpeciesNet's classifier label for people; the genus Homo is human too.
HUMAN_KEY = "mammalia;primates;hominidae;homo;sapiens"
_HOMO_PREFIX = "mammalia;primates;hominidae;homo;"

_RANKS = 5
_FIELDS = _RANKS + 2  # uuid, the five ranks, the common name


class Level(IntEnum):
    """How precise a taxon is; a greater level is finer, so `level >= Level.FAMILY` reads well."""

    NONE = -1  # not a taxon: `blank`, `vehicle`
    KINGDOM = 0  # the plain `animal`
    CLASS = 1
    ORDER = 2
    FAMILY = 3
    GENUS = 4
    SPECIES = 5

    def __str__(self) -> str:
        return self.name.lower()


class UnknownTaxonError(LookupError):
    """No entry of the taxonomy answers to the id, key or name asked for."""


class TaxonomyFormatError(ValueError):
    """A taxonomy or label file line is not `uuid;class;order;family;genus;species;common name`."""


@dataclass(frozen=True, slots=True)
class Taxon:
    """One entry of the taxonomy. `parent()` and `ancestor_at()` need the index it came from."""

    id: str
    class_: str
    order: str
    family: str
    genus: str
    species: str
    common_name: str
    _index: Taxonomy | None = field(default=None, compare=False, repr=False)

    @property
    def ranks(self) -> tuple[str, str, str, str, str]:
        """class, order, family, genus, species; empty strings below the taxon's level."""
        return (self.class_, self.order, self.family, self.genus, self.species)

    @property
    def key(self) -> str:
        """SpeciesNet's five-token "full class string", `class;order;family;genus;species`."""
        return ";".join(self.ranks)

    @property
    def label(self) -> str:
        """SpeciesNet's seven-token label, `uuid;class;order;family;genus;species;common name`."""
        return f"{self.id};{self.key};{self.common_name}"

    @property
    def level(self) -> Level:
        filled = [i for i, rank in enumerate(self.ranks) if rank]
        if filled:
            return Level(filled[-1] + 1)
        return Level.KINGDOM if self.common_name == ANIMAL else Level.NONE

    @property
    def is_taxonomic(self) -> bool:
        """True for a real taxon (class or finer), false for `animal`, `blank` and `vehicle`."""
        return self.level >= Level.CLASS

    @property
    def is_human(self) -> bool:
        """The genus Homo or the human species: people, whom camera traps report apart."""
        return self.key.startswith(_HOMO_PREFIX)

    def parent(self) -> Taxon | None:
        """The next coarser entry present in the data; `animal` above a class; None above that."""
        if not self.is_taxonomic:
            return None
        return self._tree().nearest(_truncate(self.ranks, self.level - 1))

    def ancestor_at(self, level: Level) -> Taxon | None:
        """This taxon's ancestor (or itself) exactly at `level`, if the data has that entry.

        None when the taxon is coarser than `level` or the data lacks that rank's entry, as
        SpeciesNet's `get_ancestor_at_level` answers; `Level.KINGDOM` gives `animal` for any taxon.
        """
        if level == Level.KINGDOM:
            return self._tree().animal if self.level >= Level.KINGDOM else None
        if level == Level.NONE or self.level < level:
            return None
        return self._tree().get_key(_truncate(self.ranks, level))

    def lineage(self) -> Iterator[Taxon]:
        """This taxon, then each coarser entry present, ending at `animal`."""
        taxon: Taxon | None = self
        while taxon is not None:
            yield taxon
            taxon = taxon.parent()

    def descends_from(self, other: Taxon) -> bool:
        """True when `other` is a strictly coarser taxon containing this one (`animal` contains
        every taxon)."""
        if not self.is_taxonomic or self.level <= other.level:
            return False
        if other.level == Level.KINGDOM:
            return True
        depth = int(other.level)
        return other.level >= Level.CLASS and self.ranks[:depth] == other.ranks[:depth]

    def to_dict(self) -> dict[str, str]:
        """The taxonomy object of an annotation, with empty strings for unknown ranks."""
        return {
            "id": self.id,
            "class": self.class_,
            "order": self.order,
            "family": self.family,
            "genus": self.genus,
            "species": self.species,
        }

    def _tree(self) -> Taxonomy:
        if self._index is None:
            raise RuntimeError(f"taxon {self.label!r} was not loaded from a Taxonomy")
        return self._index


def _truncate(ranks: Sequence[str], level: int) -> str:
    """The key of the ancestor at `level` (1 = class … 5 = species; 0 = the empty key)."""
    kept = list(ranks[: max(level, 0)])
    return ";".join(kept + [""] * (_RANKS - len(kept)))


def split_key(key: str) -> tuple[str, ...]:
    """The five ranks of a `class;order;family;genus;species` key, lower case."""
    ranks = tuple(part.strip().lower() for part in key.split(";"))
    if len(ranks) != _RANKS:
        raise ValueError(f"a taxon key has {_RANKS} ';'-separated ranks, got {key!r}")
    return ranks


def ancestor_keys(key: str) -> list[str]:
    """The key itself, then the key of every coarser rank down to the class, from a key alone."""
    ranks = split_key(key)
    depth = sum(1 for rank in ranks if rank)
    return [_truncate(ranks, level) for level in range(depth, 0, -1)]


class Taxonomy:
    """All entries of the taxonomy file and the label list, looked up by id, key or common name.

    `labels` keeps the label list in file order: index i is the classifier's output i.
    """

    def __init__(self, entries: Iterable[Sequence[str]], labels: Iterable[Sequence[str]] = ()):
        self._by_id: dict[str, Taxon] = {}
        self._by_key: dict[str, Taxon] = {}
        self._by_name: dict[str, Taxon] = {}
        for row in entries:
            self._add(row)
        self.labels: tuple[Taxon, ...] = tuple(self._add(row) for row in labels)
        self._index_names()
        self.animal = self._special(ANIMAL)
        self.blank = self._special(BLANK)
        self.vehicle = self._special(VEHICLE)
        self.human = self.get_key(HUMAN_KEY)

    @classmethod
    def from_files(cls, taxonomy_path: Path, labels_path: Path | None = None) -> Taxonomy:
        """Parse `taxonomy_release.txt` and, when given, the classifier's label list."""
        labels = _read_rows(labels_path) if labels_path is not None else []
        return cls(_read_rows(taxonomy_path), labels)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Taxon]:
        return iter(self._by_id.values())

    def __contains__(self, taxon: object) -> bool:
        return isinstance(taxon, Taxon) and self._by_id.get(taxon.id) == taxon

    def by_id(self, taxon_id: str) -> Taxon:
        """The entry with this uuid."""
        found = self._by_id.get(taxon_id.strip().lower())
        if found is None:
            raise UnknownTaxonError(f"no taxon has the id {taxon_id!r}")
        return found

    def by_key(self, key: str) -> Taxon:
        """The canonical entry of `class;order;family;genus;species`; the empty key is `animal`."""
        found = self.get_key(key)
        if found is None:
            raise UnknownTaxonError(f"no taxon is {key!r} (class;order;family;genus;species)")
        return found

    def by_common_name(self, name: str) -> Taxon:
        """The entry with this common name, in any case; a name two entries share resolves to
        the one the classifier can output, then to the finer one (`human` is Homo sapiens)."""
        found = self._by_name.get(name.strip().casefold())
        if found is None:
            raise UnknownTaxonError(f"no taxon is called {name!r}")
        return found

    def lookup(self, text: str) -> Taxon:
        """Resolve any of: a uuid, a five-token key, a seven-token label, a common name."""
        text = text.strip()
        parts = text.split(";")
        if len(parts) == _FIELDS:
            return self.by_id(parts[0])
        if len(parts) == _RANKS:
            return self.by_key(text)
        found = self._by_id.get(text.lower()) or self._by_name.get(text.casefold())
        if found is None:
            raise UnknownTaxonError(f"no taxon has the id, key or common name {text!r}")
        return found

    def get_key(self, key: str) -> Taxon | None:
        """Like `by_key`, None when absent."""
        return self._by_key.get(";".join(split_key(key)))

    def nearest(self, key: str) -> Taxon:
        """The entry for `key` or, when the data lacks it, for its nearest coarser rank present
        (`animal` at worst): the most precise taxon the data supports."""
        for candidate in ancestor_keys(key):
            found = self._by_key.get(candidate)
            if found is not None:
                return found
        return self.animal

    def _add(self, row: Sequence[str]) -> Taxon:
        uuid, class_, order, family, genus, species, common_name = row
        taxon = Taxon(uuid, class_, order, family, genus, species, common_name, _index=self)
        known = self._by_id.setdefault(taxon.id, taxon)
        if known.is_taxonomic:
            # The first file read (the taxonomy) owns the key; label duplicates keep their id.
            self._by_key.setdefault(known.key, known)
        elif known.common_name == ANIMAL:
            self._by_key.setdefault(known.key, known)
        return known

    def _index_names(self) -> None:
        in_labels = {taxon.id for taxon in self.labels}

        def preference(taxon: Taxon) -> tuple[bool, Level]:
            return (taxon.id in in_labels, taxon.level)

        for taxon in self._by_id.values():
            name = taxon.common_name.casefold()
            if not name:
                continue
            known = self._by_name.get(name)
            if known is None or preference(taxon) > preference(known):
                self._by_name[name] = taxon

    def _special(self, name: str) -> Taxon:
        found = self._by_name.get(name)
        if found is None or found.is_taxonomic:
            raise TaxonomyFormatError(f"the taxonomy has no {name!r} entry (;;;;;;{name})")
        return found


def _read_rows(path: Path) -> list[list[str]]:
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            row = line.split(";")
            if len(row) != _FIELDS:
                raise TaxonomyFormatError(
                    f"{path}:{number}: expected {_FIELDS} ';'-separated fields "
                    f"(uuid;class;order;family;genus;species;common name), got {len(row)}"
                )
            uuid, *ranks, common_name = (part.strip() for part in row)
            rows.append([uuid.lower(), *(rank.lower() for rank in ranks), common_name])
    return rows


_cache: dict[tuple[Path, Path | None], Taxonomy] = {}
_cache_lock = threading.Lock()


def load_taxonomy(taxonomy_path: Path, labels_path: Path | None = None) -> Taxonomy:
    """The taxonomy of these files, parsed on first use and shared afterwards (per path pair).

    The lock makes concurrent first calls parse once; parsing takes a few tens of milliseconds.
    """
    cache_key = (taxonomy_path.resolve(), labels_path.resolve() if labels_path else None)
    with _cache_lock:
        taxonomy = _cache.get(cache_key)
        if taxonomy is None:
            taxonomy = Taxonomy.from_files(*cache_key)
            _cache[cache_key] = taxonomy
        return taxonomy
