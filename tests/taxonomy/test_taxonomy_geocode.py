"""Offline reverse geocoding to a US state for state-level geofence rules (real GeoNames data)."""

from __future__ import annotations

import pytest

from batchvision.taxonomy.geocode import nearest_region


@pytest.mark.parametrize(
    ("latitude", "longitude", "region", "town"),
    [
        (40.2206, -74.7597, "NJ", "Trenton"),
        (39.1582, -75.5244, "DE", "Dover"),
        (37.7749, -122.4194, "CA", "San Francisco"),
        (61.2181, -149.9003, "AK", "Anchorage"),
        (21.3069, -157.8583, "HI", "Honolulu"),
    ],
)
def test_a_point_lands_in_the_state_of_its_nearest_town(
    latitude: float, longitude: float, region: str, town: str
) -> None:
    place = nearest_region("USA", latitude, longitude)
    assert place is not None
    assert (place.region, place.town) == (region, town)
    assert place.distance_km < 5


def test_only_countries_with_region_rules_are_geocoded() -> None:
    assert nearest_region("KEN", -1.2864, 36.8172) is None  # Nairobi: no region-level rules
    assert nearest_region("GBR", 51.5072, -0.1276) is None


def test_a_point_far_out_at_sea_is_not_placed() -> None:
    assert nearest_region("USA", 30.0, -140.0) is None
    inland = nearest_region("USA", 44.0, -103.0)  # South Dakota plains: a town within reach
    assert inland is not None and inland.region == "SD"
