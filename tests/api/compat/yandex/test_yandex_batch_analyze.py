"""Yandex Vision `POST /vision/v1/batchAnalyze` over real HTTP with real OCR.

Checks the seed page's request and response shapes, every documented limit at and just past its
boundary, per-spec and per-feature errors as google.rpc codes, and auth in Yandex's own format.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image
from yandex_support import ROUTE, assert_rpc_error, b64, ocr_feature, post, render, spec, words_of

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import LiveServer


def _int_string(value: Any) -> int:
    assert isinstance(value, str), f"int64 fields are strings on the wire, got {value!r}"
    return int(value)


def assert_documented_shape(result: dict[str, Any], width: int, height: int) -> None:
    (page,) = result["textDetection"]["pages"]
    assert _int_string(page["width"]) == width
    assert _int_string(page["height"]) == height
    assert page["blocks"]
    for block in page["blocks"]:
        assert set(block) == {"boundingBox", "lines"}
        for line in block["lines"]:
            assert set(line) == {"boundingBox", "words", "confidence"}
            assert isinstance(line["confidence"], float | int)
            assert 0.0 <= line["confidence"] <= 1.0
            for box in (block["boundingBox"], line["boundingBox"]):
                assert all(0 <= _int_string(v["x"]) <= width for v in box["vertices"])
                assert all(0 <= _int_string(v["y"]) <= height for v in box["vertices"])
            for word in line["words"]:
                assert set(word) == {"boundingBox", "text", "confidence", "languages"}
                assert len(word["boundingBox"]["vertices"]) == 4
                assert isinstance(word["text"], str)
                assert 0.0 <= word["confidence"] <= 1.0
                for language in word["languages"]:
                    assert set(language) == {"languageCode", "confidence"}
                    assert isinstance(language["languageCode"], str)
                    assert 0.0 <= language["confidence"] <= 1.0


def test_seed_request_round_trips_with_every_documented_field(live_server: LiveServer) -> None:
    image = render("Hello batch vision")
    body = {"folderId": "b1gvmob95yysaplct532", "analyzeSpecs": [spec(b64(image))]}
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 200, response.text
    (spec_result,) = response.json()["results"]
    (feature_result,) = spec_result["results"]
    assert_documented_shape(feature_result, 640, 120)
    assert [w.lower() for w in words_of(feature_result)] == ["hello", "batch", "vision"]
    word = feature_result["textDetection"]["pages"][0]["blocks"][0]["lines"][0]["words"][0]
    assert word["languages"][0]["languageCode"] == "en"


def test_cyrillic_text_is_read_back(live_server: LiveServer) -> None:
    image = render("Привет мир", fmt="JPEG")
    with live_server.client() as client:
        response = post(client, {"analyzeSpecs": [spec(b64(image), ocr_feature("ru"))]})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]["results"][0]
    assert [w.lower() for w in words_of(result)] == ["привет", "мир"]


def test_results_keep_spec_and_feature_order_with_per_item_errors(live_server: LiveServer) -> None:
    good = b64(render("alpha"))
    gif = io.BytesIO()
    Image.new("RGB", (40, 40), "white").save(gif, "GIF")
    body = {
        "analyzeSpecs": [
            spec(good, ocr_feature("en"), {"type": "CLASSIFICATION"}, {"type": "NOPE"}),
            spec(b64(b"\xff\xd8\xff\xe0 truncated jpeg")),
            spec(b64(gif.getvalue())),
            spec("!!! not base64 !!!"),
            spec(b64(render("omega"))),
        ]
    }
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 5
    first = results[0]["results"]
    assert [w.lower() for w in words_of(first[0])] == ["alpha"]
    assert_rpc_error(first[1]["error"], 12)  # a Vision feature we do not implement
    assert_rpc_error(first[2]["error"], 3)  # not a feature type at all
    for broken in results[1:4]:
        assert set(broken) == {"error"}
        assert_rpc_error(broken["error"], 3)
    assert [w.lower() for w in words_of(results[4]["results"][0])] == ["omega"]


def test_unsupported_language_fails_that_feature_only(live_server: LiveServer) -> None:
    content = b64(render("words"))
    body = {"analyzeSpecs": [spec(content, ocr_feature("xx"), ocr_feature("en"))]}
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 200, response.text
    bad, good = response.json()["results"][0]["results"]
    assert_rpc_error(bad["error"], 3)
    assert [w.lower() for w in words_of(good)] == ["words"]


def _words_with_languages(result: dict[str, Any]) -> list[tuple[str, str, float]]:
    (page,) = result["textDetection"]["pages"]
    return [
        (word["text"], language["languageCode"], language["confidence"])
        for block in page["blocks"]
        for line in block["lines"]
        for word in line["words"]
        for language in word["languages"]
    ]


STAR_TEXTS = [
    ("Съешь же ещё этих мягких", "ru"),
    ("Ξεσκεπάζω την ψυχοφθόρα", "el"),
    ("Please sign the contract", "en"),
]


def test_star_language_code_detects_each_image_language(live_server: LiveServer) -> None:
    body = {"analyzeSpecs": [spec(b64(render(text)), ocr_feature("*")) for text, _ in STAR_TEXTS]}
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 200, response.text
    for (text, language), result in zip(STAR_TEXTS, response.json()["results"], strict=True):
        (feature,) = result["results"]
        assert_documented_shape(feature, 640, 120)
        words = _words_with_languages(feature)
        assert " ".join(word for word, _, _ in words) == text
        assert {code for _, code, _ in words} == {language}


def test_star_beside_another_code_fails_that_feature(live_server: LiveServer) -> None:
    body = {"analyzeSpecs": [spec(b64(render("words")), ocr_feature("*", "en"), ocr_feature("*"))]}
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 200, response.text
    mixed, alone = response.json()["results"][0]["results"]
    assert_rpc_error(mixed["error"], 3)
    assert "'*'" in mixed["error"]["message"]
    assert words_of(alone) == ["words"]


def _worn(png: bytes, seed: int) -> bytes:
    """The rendering with a third of its ink pixels erased at random (a worn, patchy print)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).copy()
    ink = pixels.min(axis=2) < 128
    pixels[ink & (np.random.default_rng(seed).random(ink.shape) < 0.3)] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_word_language_confidence_is_measured_and_lower_on_a_worn_print(
    live_server: LiveServer,
) -> None:
    clean = render("Invoice number 4711 paid")
    prints = [clean] + [_worn(clean, seed) for seed in range(4)]
    body = {"analyzeSpecs": [spec(b64(png), ocr_feature("*")) for png in prints]}
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 200, response.text
    readings = [_words_with_languages(r["results"][0]) for r in response.json()["results"]]
    clean_values = [conf for _, _, conf in readings[0]]
    worn_values = [conf for reading in readings[1:] for _, _, conf in reading]
    assert [code for _, code, _ in readings[0]] == ["en"] * 4
    assert len(set(clean_values)) > 1 and max(clean_values) < 1.0
    assert all(0.0 <= v <= 1.0 for v in clean_values + worn_values)
    assert len(worn_values) >= 12
    assert sum(worn_values) / len(worn_values) < sum(clean_values) / len(clean_values) - 0.02


def _padded_png(total_bytes: int) -> bytes:
    """A valid PNG padded after IEND to exactly `total_bytes` (decoders ignore the tail)."""
    png = render("pad", size=(200, 90))
    return png + b"\x00" * (total_bytes - len(png))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"analyzeSpecs": []}, 400),
        ({}, 400),
        ({"analyzeSpecs": "x"}, 400),
        ({"analyzeSpecs": [{"content": "", "features": []}]}, 400),
        ({"analyzeSpecs": [{"content": "", "features": [ocr_feature("en")] * 9}]}, 400),
        ({"analyzeSpecs": [{"features": [ocr_feature("en")]}]}, 400),
        ({"analyzeSpecs": [{"content": "", "features": [ocr_feature()]}]}, 400),
        ({"analyzeSpecs": [{"content": "", "features": [ocr_feature(*["en"] * 9)]}]}, 400),
        ({"analyzeSpecs": [{"content": "", "features": [ocr_feature("engl")]}]}, 400),
        (
            {
                "folderId": "f" * 51,
                "analyzeSpecs": [{"content": "", "features": [ocr_feature("en")]}],
            },
            400,
        ),
        ({"folderId": 5, "analyzeSpecs": [{"content": "", "features": [ocr_feature("en")]}]}, 400),
        ({"analyzeSpecs": [{"content": 5, "features": [ocr_feature("en")]}]}, 400),
        ([], 400),
    ],
)
def test_request_level_violations_are_400_invalid_argument(
    live_server: LiveServer, body: Any, expected: int
) -> None:
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == expected
    assert_rpc_error(response.json(), 3)


def test_nine_specs_are_refused_and_eight_are_served(live_server: LiveServer) -> None:
    content = b64(render("ok", size=(120, 60)))
    with live_server.client() as client:
        nine = post(client, {"analyzeSpecs": [spec(content)] * 9})
        eight = post(client, {"analyzeSpecs": [spec(content)] * 8})
    assert nine.status_code == 400
    assert_rpc_error(nine.json(), 3)
    assert eight.status_code == 200
    assert len(eight.json()["results"]) == 8
    assert all("results" in r for r in eight.json()["results"])


def test_boundaries_of_features_languages_and_folder_id(live_server: LiveServer) -> None:
    content = b64(render("edge", size=(160, 60)))
    body = {
        "folderId": "f" * 50,
        "analyzeSpecs": [
            spec(content, *[ocr_feature("en", "ru", "de", "uk", "fr", "es", "it", "pl")] * 8)
        ],
    }
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 200, response.text
    assert len(response.json()["results"][0]["results"]) == 8


def test_malformed_json_is_400(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = client.post(
            ROUTE, content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert_rpc_error(response.json(), 3)


def test_content_length_limit_at_and_past_the_boundary(live_server: LiveServer) -> None:
    exact = b64(_padded_png(786_432))  # 786,432 bytes encode to exactly 1,048,576 characters
    assert len(exact) == 1_048_576
    over = b64(_padded_png(786_432 + 3))
    with live_server.client() as client:
        response = post(client, {"analyzeSpecs": [spec(exact), spec(over)]})
    assert response.status_code == 200, response.text
    at, past = response.json()["results"]
    assert [w.lower() for w in words_of(at["results"][0])] == ["pad"]
    assert_rpc_error(past["error"], 3)


def test_twenty_megapixels_at_and_past_the_boundary(live_server: LiveServer) -> None:
    def blank_png(width: int, height: int) -> str:
        buffer = io.BytesIO()
        Image.new("L", (width, height), 255).save(buffer, "PNG")
        return b64(buffer.getvalue())

    with live_server.client() as client:
        response = post(
            client, {"analyzeSpecs": [spec(blank_png(5000, 4000)), spec(blank_png(5000, 4001))]}
        )
    assert response.status_code == 200, response.text
    at, past = response.json()["results"]
    assert "results" in at
    assert at["results"][0]["textDetection"]["pages"][0]["width"] == "5000"
    assert_rpc_error(past["error"], 3)
    assert "pixels" in past["error"]["message"]


@pytest.fixture
def keyed(serve: Any) -> tuple[LiveServer, KeyStore]:
    live = serve(auth="required")
    return live, KeyStore(make_engine(live.settings))


def test_api_key_and_bearer_authenticate_and_errors_use_rpc_codes(
    keyed: tuple[LiveServer, KeyStore],
) -> None:
    live, store = keyed
    secret = store.create("yandex-user", credits=1).secret
    body = {"analyzeSpecs": [spec(b64(render("paid", size=(160, 60))))]}
    with live.client() as client:
        missing = post(client, body)
        wrong = post(client, body, authorization="Api-Key bv_00000000_" + "x" * 43)
        paid = post(client, body, authorization=f"Api-Key {secret}")
        broke = post(client, body, authorization=f"Bearer {secret}")
    assert missing.status_code == 401
    assert_rpc_error(missing.json(), 16)
    assert wrong.status_code == 401
    assert_rpc_error(wrong.json(), 16)
    assert paid.status_code == 200, paid.text
    assert broke.status_code == 402
    assert_rpc_error(broke.json(), 8)
