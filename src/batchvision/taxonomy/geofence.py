"""SpeciesNet geofencing: which taxa may be reported in which country (and US state).

The rules are SpeciesNet's format, a dict from a five-token taxon key to its rules:

    {"mammalia;carnivora;ursidae;ursus;americanus": {
        "allow": {"CAN": [], "MEX": [], "USA": ["AK", "AL", ...]},
        "block": {"GBR": []}}}

Each rule maps a CCA3 country to a list of first-level regions (only US states in SpeciesNet's
data); an empty list means the whole country. A taxon without rules is allowed everywhere; a taxon
with allow rules is blocked in every country (or region of a listed country) they leave out;
block rules win over allow rules. As SpeciesNet's release builder propagates block rules down the
tree, a taxon here is also blocked wherever any of its ancestors is.

Sources: `geofence_release.json` (the full rules, when a user has pulled them) and
`geofence_fixes.csv` (rows `species,rule,country_code,admin1_region_code`, `#` comments), the
corrections SpeciesNet's builder applies on top of its base rules. A fix `allow` row widens an
existing allow list (adds a country or state). Without base rules there is no list to widen, and
creating one would restrict the taxon to that single place (the hippo's `allow,COL` row would
block hippos in Africa), so fixes alone apply their block rows only and report
`has_base_rules=False`.
"""

from __future__ import annotations

import copy
import csv
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from batchvision.taxonomy.countries import normalize_country, normalize_region
from batchvision.taxonomy.tree import Taxon, ancestor_keys, split_key

RuleKind = Literal["allow", "block"]
# country CCA3 -> regions; [] = the whole country
CountryLists = dict[str, list[str]]
# taxon key -> "allow" | "block" -> country lists
Rules = dict[str, dict[str, CountryLists]]

_RULE_KINDS: tuple[RuleKind, ...] = ("allow", "block")
_FIXES_HEADER = ["species", "rule", "country_code", "admin1_region_code"]


class GeofenceFormatError(ValueError):
    """A geofence JSON or fixes CSV does not follow SpeciesNet's format."""


@dataclass(frozen=True, slots=True)
class GeofenceFix:
    """One row of a fixes CSV: allow or block `key` in `country` (one `region`, or all of it)."""

    key: str
    rule: RuleKind
    country: str
    region: str
    line: int


class Geofence:
    """Geofence rules, queried per taxon and place. Build with `load_geofence` or from a dict."""

    def __init__(
        self,
        rules: Mapping[str, Mapping[str, Mapping[str, Sequence[str]]]],
        *,
        has_base_rules: bool,
        sources: Sequence[Path] = (),
    ) -> None:
        self._rules: Rules = _validated(rules)
        self.has_base_rules = has_base_rules
        self.sources = tuple(sources)

    def __len__(self) -> int:
        """How many taxa carry rules."""
        return len(self._rules)

    def rules_for(self, key: str) -> dict[str, CountryLists]:
        """A copy of the rules stored for one taxon key (empty when it has none)."""
        return copy.deepcopy(self._rules.get(";".join(split_key(key)), {}))

    def is_allowed(self, taxon: Taxon, country: str, state: str | None = None) -> bool:
        """May `taxon` be reported in `country` (CCA2, CCA3 or name) and, optionally, `state`?

        Raises UnknownCountryError / UnknownRegionError (ValueErrors) for a place not known.
        """
        cca3, region = self._place(country, state)
        return self._allowed(taxon, cca3, region)

    def geofenced(self, taxon: Taxon, country: str, state: str | None = None) -> Taxon:
        """`taxon` if allowed here, else its nearest ancestor that is (`animal` at worst)."""
        cca3, region = self._place(country, state)
        lineage = list(taxon.lineage())
        # `animal` ends every taxon's lineage and is never geofenced, so the default is moot.
        return next((t for t in lineage if self._allowed(t, cca3, region)), lineage[-1])

    def allows(self, country: str, state: str | None = None) -> Callable[[Taxon], bool]:
        """A predicate for one place (normalised once), e.g. for `roll_up(allowed=...)`."""
        cca3, region = self._place(country, state)
        return lambda taxon: self._allowed(taxon, cca3, region)

    def info(self) -> dict[str, Any]:
        """What an API's `info` can say about the geofence in force."""
        return {
            "has_base_rules": self.has_base_rules,
            "taxa_with_rules": len(self._rules),
            "sources": [path.name for path in self.sources],
        }

    def _place(self, country: str, state: str | None) -> tuple[str, str | None]:
        cca3 = normalize_country(country)
        return cca3, normalize_region(cca3, state) if state else None

    def _allowed(self, taxon: Taxon, cca3: str, region: str | None) -> bool:
        if not taxon.is_taxonomic:
            return True  # `animal`, `blank`, `vehicle` are never geofenced
        return not any(
            _blocks(self._rules[key], cca3, region)
            for key in ancestor_keys(taxon.key)
            if key in self._rules
        )


def _blocks(rules: Mapping[str, CountryLists], cca3: str, region: str | None) -> bool:
    """SpeciesNet's `should_geofence_animal_classification` for one taxon's own rules."""
    allow = rules.get("allow")
    if allow:
        if cca3 not in allow:
            return True
        if region and allow[cca3] and region not in allow[cca3]:
            return True
    block = rules.get("block", {})
    if cca3 in block:
        regions = block[cca3]
        return not regions or (region is not None and region in regions)
    return False


def _validated(rules: Mapping[str, Mapping[str, Mapping[str, Sequence[str]]]]) -> Rules:
    """A normalised deep copy (lower-case keys, upper-case codes); GeofenceFormatError if the
    shape is not SpeciesNet's."""
    if not isinstance(rules, Mapping):
        raise GeofenceFormatError("geofence rules must be an object keyed by taxon")
    result: Rules = {}
    for key, taxon_rules in rules.items():
        try:
            clean_key = ";".join(split_key(key))
        except ValueError as exc:
            raise GeofenceFormatError(str(exc)) from None
        if not isinstance(taxon_rules, Mapping) or set(taxon_rules) - set(_RULE_KINDS):
            raise GeofenceFormatError(f"{key!r}: rules must be an object with allow/block")
        result[clean_key] = {
            kind: _country_lists(key, kind, lists) for kind, lists in taxon_rules.items()
        }
    return result


def _country_lists(key: str, kind: str, lists: Mapping[str, Sequence[str]]) -> CountryLists:
    if not isinstance(lists, Mapping):
        raise GeofenceFormatError(f"{key!r} {kind}: expected an object of country -> regions")
    result: CountryLists = {}
    for country, regions in lists.items():
        valid_regions = isinstance(regions, list) and all(isinstance(r, str) for r in regions)
        if len(country) != 3 or not valid_regions:
            raise GeofenceFormatError(f"{key!r} {kind}: bad entry {country!r}: {regions!r}")
        result[country.upper()] = sorted({region.upper() for region in regions})
    return result


def read_geofence_json(path: Path) -> Rules:
    """The rules of a SpeciesNet geofence JSON (`geofence_release.json` or its base)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GeofenceFormatError(f"{path}: not JSON: {exc}") from None
    return _validated(data)


def read_fixes(path: Path) -> list[GeofenceFix]:
    """The rows of a SpeciesNet fixes CSV, comments and blank lines skipped."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [
            (number, row)
            for number, row in enumerate(csv.reader(handle), start=1)
            if any(cell.strip() for cell in row) and not row[0].startswith("#")
        ]
    if not rows or [cell.strip() for cell in rows[0][1]] != _FIXES_HEADER:
        raise GeofenceFormatError(f"{path}: the first row must be {','.join(_FIXES_HEADER)}")
    return [_parse_fix(path, number, row) for number, row in rows[1:]]


def _parse_fix(path: Path, number: int, row: list[str]) -> GeofenceFix:
    def bad(why: str) -> GeofenceFormatError:
        return GeofenceFormatError(f"{path}:{number}: {why}: {','.join(row)!r}")

    if len(row) != len(_FIXES_HEADER):
        raise bad(f"expected {len(_FIXES_HEADER)} columns")
    key, rule, country, region = (cell.strip() for cell in row)
    try:
        clean_key = ";".join(split_key(key))
    except ValueError:
        raise bad("the taxon is not class;order;family;genus;species") from None
    rule = rule.lower()
    if rule not in _RULE_KINDS:
        raise bad("the rule must be allow or block")
    if len(country) != 3:
        raise bad("the country must be a CCA3 code")
    kind: RuleKind = "allow" if rule == "allow" else "block"
    return GeofenceFix(clean_key, kind, country.upper(), region.upper(), number)


def apply_fixes(rules: Rules, fixes: Iterable[GeofenceFix], *, has_base_rules: bool) -> Rules:
    """`rules` with the fixes applied as SpeciesNet's `fix_geofence_base` does (a new dict).

    Without base rules, allow rows that would create an allow list are skipped (see the module
    docstring): they only widen lists that exist.
    """
    result = copy.deepcopy(rules)
    for fix in fixes:
        taxon_rules = result.get(fix.key, {})
        if fix.rule == "allow" and "allow" not in taxon_rules and not has_base_rules:
            continue
        _widen(taxon_rules.setdefault(fix.rule, {}), fix.country, fix.region)
        result[fix.key] = taxon_rules
    return result


def _widen(lists: CountryLists, country: str, region: str) -> None:
    """Add one place to an allow or block list; a whole-country row replaces a state list."""
    if not region:
        lists[country] = []
    elif country not in lists:
        lists[country] = [region]
    elif lists[country]:  # an empty list already covers the whole country
        lists[country] = sorted({*lists[country], region})


_cache: dict[tuple[Path | None, Path | None], Geofence] = {}
_cache_lock = threading.Lock()


def load_geofence(release_path: Path | None = None, fixes_path: Path | None = None) -> Geofence:
    """The geofence of a rules JSON and/or a fixes CSV, read once per path pair and shared.

    With neither, the geofence is empty (everything allowed) and says it has no base rules.
    """
    cache_key = (
        release_path.resolve() if release_path else None,
        fixes_path.resolve() if fixes_path else None,
    )
    with _cache_lock:
        geofence = _cache.get(cache_key)
        if geofence is None:
            geofence = _build(*cache_key)
            _cache[cache_key] = geofence
        return geofence


def _build(release_path: Path | None, fixes_path: Path | None) -> Geofence:
    rules = read_geofence_json(release_path) if release_path else {}
    has_base = release_path is not None
    if fixes_path is not None:
        rules = apply_fixes(rules, read_fixes(fixes_path), has_base_rules=has_base)
    sources = [path for path in (release_path, fixes_path) if path is not None]
    return Geofence(rules, has_base_rules=has_base, sources=sources)
