"""Country and first-level region names as SpeciesNet's geofence wants them, via pycountry.

SpeciesNet keys its rules by ISO 3166-1 alpha-3 country codes (CCA3, e.g. `USA`) and, inside a
country, by the ISO 3166-2 subdivision code without its country prefix (`NJ` for `US-NJ`).
Clients send CCA2, CCA3 or an English name; these functions turn any of them into those codes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pycountry

# pycountry leaves the subdivision database's `get` unannotated.
_SUBDIVISIONS: Any = pycountry.subdivisions

# Names people use that ISO 3166 does not list (pycountry knows "Russian Federation", not
# "Russia"; ISO reserves "UK" for the United Kingdom without assigning it).
_ALIASES = {
    "UK": "GBR",
    "RUSSIA": "RUS",
    "GREAT BRITAIN": "GBR",
    "ENGLAND": "GBR",
    "IVORY COAST": "CIV",
    "DR CONGO": "COD",
    "DRC": "COD",
    "DEMOCRATIC REPUBLIC OF THE CONGO": "COD",
}

# A suggestion list longer than this would be noise rather than help.
_MAX_SUGGESTIONS = 3


class UnknownCountryError(ValueError):
    """The country is neither an ISO 3166 code (CCA2/CCA3) nor a country name pycountry knows."""


class UnknownRegionError(ValueError):
    """The region is not a first-level subdivision of the country (ISO 3166-2)."""


@lru_cache(maxsize=1024)
def normalize_country(value: str) -> str:
    """The CCA3 code of a CCA2 code, CCA3 code or English name, in any case: `us`, `USA` and
    `United States` all give `USA`."""
    text = value.strip()
    if not text:
        raise UnknownCountryError("the country is empty: send a CCA2 or CCA3 code or a name")
    alias = _ALIASES.get(text.upper())
    if alias is not None:
        return alias
    try:
        return str(pycountry.countries.lookup(text).alpha_3)
    except LookupError:
        raise UnknownCountryError(_unknown_country_message(text)) from None


@lru_cache(maxsize=1024)
def normalize_region(country: str, region: str) -> str:
    """The subdivision code (no country prefix) of a region of `country`: `NJ`, `US-NJ` and
    `New Jersey` in the USA all give `NJ`."""
    cca3 = normalize_country(country)
    found = pycountry.countries.get(alpha_3=cca3)
    assert found is not None  # normalize_country only answers codes pycountry has
    alpha2 = str(found.alpha_2)
    text = region.strip()
    code = text.upper()
    if not code.startswith(f"{alpha2}-"):
        code = f"{alpha2}-{code}"
    if _SUBDIVISIONS.get(code=code) is not None:
        return code.split("-", 1)[1]
    for subdivision in _SUBDIVISIONS.get(country_code=alpha2) or ():
        if str(subdivision.name).casefold() == text.casefold():
            return str(subdivision.code).split("-", 1)[1]
    raise UnknownRegionError(
        f"unknown region {region!r} in {cca3}: send an ISO 3166-2 subdivision code "
        f"(e.g. 'NJ' or 'US-NJ' in the USA) or its name"
    )


def _unknown_country_message(text: str) -> str:
    message = (
        f"unknown country {text!r}: send an ISO 3166 code (CCA2 like 'KE', CCA3 like 'KEN') "
        f"or an English country name"
    )
    # Fuzzy matching is only a hint here: on short input it also matches subdivision names of
    # unrelated countries, so it never decides the answer.
    try:
        matches = pycountry.countries.search_fuzzy(text) if len(text) > 3 else []
    except LookupError:
        matches = []
    if 0 < len(matches) <= _MAX_SUGGESTIONS:
        names = ", ".join(f"{match.name} ({match.alpha_3})" for match in matches)
        message += f"; did you mean {names}?"
    return message
