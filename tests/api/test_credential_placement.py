"""Where each surface's clients put the key; the compat surfaces call these same extractors."""

from __future__ import annotations

import pytest

from batchvision.api.access import bearer_token, field_token, scheme_token
from batchvision.api.compat.moondream.router import moondream_token
from batchvision.api.compat.yandex.router import yandex_token

KEY = "bv_0123abcd_" + "x" * 43


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"authorization": f"Bearer {KEY}"}, KEY),
        ({"authorization": f"bearer   {KEY}  "}, KEY),
        ({"authorization": "Bearer"}, None),
        ({"authorization": f"Basic {KEY}"}, None),
        ({"authorization": f"Bearer {KEY} extra"}, None),
        ({"authorization": f"Api-Key {KEY}"}, None),
        ({}, None),
    ],
)
def test_bearer(headers: dict[str, str], expected: str | None) -> None:
    assert bearer_token(headers) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"authorization": f"Api-Key {KEY}"}, KEY),
        ({"authorization": f"api-key {KEY}"}, KEY),
        ({"authorization": f"Bearer {KEY}"}, KEY),
        ({"authorization": f"Token {KEY}"}, None),
        ({"authorization": "Api-Key "}, None),
    ],
)
def test_yandex_accepts_api_key_or_bearer(headers: dict[str, str], expected: str | None) -> None:
    assert yandex_token(headers) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-moondream-auth": KEY}, KEY),
        ({"x-moondream-auth": f"  {KEY} "}, KEY),
        ({"x-moondream-auth": ""}, None),
        ({"x-moondream-auth": f"Bearer {KEY}"}, None),
        ({"authorization": f"Bearer {KEY}"}, None),
    ],
)
def test_moondream_header(headers: dict[str, str], expected: str | None) -> None:
    assert moondream_token(headers) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"api_key": KEY}, KEY),
        ({"api_key": [KEY]}, KEY),
        ({"api_key": ["old", KEY]}, KEY),
        ({"api_key": ""}, None),
        ({"api_key": 5}, None),
        ({"api_key": []}, None),
        ({"apikey": KEY}, None),
    ],
)
def test_raku_body_field(fields: dict[str, object], expected: str | None) -> None:
    assert field_token(fields) == expected


def test_scheme_names_are_case_insensitive() -> None:
    assert scheme_token({"authorization": f"API-KEY {KEY}"}, "Api-Key") == KEY
