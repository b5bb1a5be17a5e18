"""Country and region normalisation for geofencing, via pycountry."""

from __future__ import annotations

import pytest

from batchvision.taxonomy import (
    UnknownCountryError,
    UnknownRegionError,
    normalize_country,
    normalize_region,
)


@pytest.mark.parametrize(
    ("given", "cca3"),
    [
        ("US", "USA"),
        ("us", "USA"),
        ("USA", "USA"),
        (" usa ", "USA"),
        ("United States", "USA"),
        ("united states of america", "USA"),
        ("GB", "GBR"),
        ("UK", "GBR"),
        ("United Kingdom", "GBR"),
        ("Kenya", "KEN"),
        ("KE", "KEN"),
        ("Russia", "RUS"),
        ("Tanzania", "TZA"),
        ("BES", "BES"),
    ],
)
def test_country_forms_give_cca3(given: str, cca3: str) -> None:
    assert normalize_country(given) == cca3


@pytest.mark.parametrize("given", ["Narnia", "ZZ", "XYZ", "", "   "])
def test_unknown_country_is_a_helpful_value_error(given: str) -> None:
    with pytest.raises(UnknownCountryError) as caught:
        normalize_country(given)
    assert isinstance(caught.value, ValueError)
    assert "CCA2" in str(caught.value)


def test_ambiguous_name_suggests_candidates() -> None:
    with pytest.raises(UnknownCountryError, match=r"did you mean .*KOR"):
        normalize_country("Korea")


@pytest.mark.parametrize(
    ("country", "region", "code"),
    [
        ("USA", "NJ", "NJ"),
        ("US", "nj", "NJ"),
        ("United States", "US-NJ", "NJ"),
        ("USA", "New Jersey", "NJ"),
        ("USA", "district of columbia", "DC"),
    ],
)
def test_region_forms_give_the_subdivision_code(country: str, region: str, code: str) -> None:
    assert normalize_region(country, region) == code


@pytest.mark.parametrize(("country", "region"), [("USA", "ZZ"), ("KEN", "NJ"), ("USA", "Ontario")])
def test_unknown_region_is_a_value_error(country: str, region: str) -> None:
    with pytest.raises(UnknownRegionError, match="ISO 3166-2"):
        normalize_region(country, region)
