"""The batchAnalyze body read as a proto3 JSON parser reads it, over real HTTP with real OCR:
proto field names beside lowerCamelCase, enum numbers beside names, `null` as unset, oneofs, and
400 messages that name the field path and the reason."""

from __future__ import annotations

from typing import Any

import pytest
from yandex_support import assert_rpc_error, b64, ocr_feature, post, render, spec, words_of

from conftest import LiveServer


def _words(feature_result: dict[str, Any]) -> list[str]:
    return [word.lower() for word in words_of(feature_result)]


def test_yandex_documented_example_in_proto_field_names_is_served(
    live_server: LiveServer,
) -> None:
    """Yandex's own OCR how-to sends `folderId` beside `analyze_specs`, `text_detection_config`
    and `language_codes`; every field here is in its proto spelling but `folderId`."""
    body = {
        "folderId": "b1gvmob95yysaplct532",
        "analyze_specs": [
            {
                "content": b64(render("proto names work")),
                "mime_type": "image/png",
                "features": [
                    {"type": "TEXT_DETECTION", "text_detection_config": {"language_codes": ["en"]}}
                ],
            }
        ],
    }
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 200, response.text
    (feature_result,) = response.json()["results"][0]["results"]
    assert _words(feature_result) == ["proto", "names", "work"]


def test_both_spellings_mix_across_objects(live_server: LiveServer) -> None:
    content = b64(render("mixed", size=(200, 80)))
    body = {
        "folder_id": "b1gvmob95yysaplct532",
        "analyzeSpecs": [
            {"content": content, "mimeType": "image/png", "features": [ocr_feature("en")]},
            {
                "content": content,
                "features": [{"type": 1, "text_detection_config": {"languageCodes": ["en"]}}],
            },
        ],
    }
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 200, response.text
    assert [_words(r["results"][0]) for r in response.json()["results"]] == [["mixed"]] * 2


def _feature_with(**config: Any) -> dict[str, Any]:
    return {"content": "", "features": [{"type": "TEXT_DETECTION", **config}]}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (
            {"analyzeSpecs": [spec("")], "analyze_specs": [spec("")]},
            "analyzeSpecs: set twice, as analyzeSpecs and analyze_specs",
        ),
        (
            {"folderId": "a", "folder_id": "b", "analyzeSpecs": [spec("")]},
            "folderId: set twice, as folderId and folder_id",
        ),
        (
            {"analyzeSpecs": [{**spec(""), "mimeType": "image/png", "mime_type": "image/png"}]},
            "analyzeSpecs.0.mimeType: set twice, as mimeType and mime_type",
        ),
        (
            {
                "analyzeSpecs": [
                    _feature_with(
                        textDetectionConfig={"languageCodes": ["en"]},
                        text_detection_config={"languageCodes": ["en"]},
                    )
                ]
            },
            "analyzeSpecs.0.features.0.textDetectionConfig: set twice",
        ),
        (
            {
                "analyzeSpecs": [
                    _feature_with(
                        textDetectionConfig={"languageCodes": ["en"], "language_codes": ["ru"]}
                    )
                ]
            },
            "analyzeSpecs.0.features.0.textDetectionConfig.languageCodes: set twice, as "
            "languageCodes and language_codes",
        ),
    ],
)
def test_a_field_in_both_spellings_is_400_naming_the_field(
    live_server: LiveServer, body: dict[str, Any], path: str
) -> None:
    """protobuf's JSON parsers refuse a field set twice, whichever names it used."""
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 400
    error = response.json()
    assert_rpc_error(error, 3)
    assert path in error["message"]


def test_feature_types_by_number_and_name(live_server: LiveServer) -> None:
    """Feature.Type numbers as in yandex/cloud/ai/vision/v1/vision_service.proto: 1 is OCR,
    2-4 are the other Vision features (UNIMPLEMENTED), 0 and unknown numbers INVALID_ARGUMENT."""
    config = {"textDetectionConfig": {"languageCodes": ["en"]}}
    types: list[Any] = [1, 2, 3, 4, 0, "TYPE_UNSPECIFIED", 5, -1, 2**31 - 1, "1", "text_detection"]
    features = [{"type": t, **config} for t in types[:8]]
    rest = [{"type": t, **config} for t in types[8:]]
    content = b64(render("numbers", size=(260, 80)))
    body = {"analyzeSpecs": [spec(content, *features), spec(content, *rest)]}
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 200, response.text
    first, second = (r["results"] for r in response.json()["results"])
    assert _words(first[0]) == ["numbers"]
    for result, code in zip(first[1:] + second, [12, 12, 12] + [3] * 7, strict=True):
        assert set(result) == {"error"}
        assert_rpc_error(result["error"], code)
    assert "CLASSIFICATION" in first[1]["error"]["message"]
    assert "5" in first[6]["error"]["message"]


@pytest.mark.parametrize("value", [True, 1.5, 1.0, 2**31, -(2**31) - 1, {}, [1]])
def test_a_type_that_is_neither_name_nor_int32_is_400(live_server: LiveServer, value: Any) -> None:
    body = {"analyzeSpecs": [spec("", {"type": value})]}
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 400
    error = response.json()
    assert_rpc_error(error, 3)
    assert error["message"].startswith("analyzeSpecs.0.features.0.type: ")


def _codes(*codes: Any) -> dict[str, Any]:
    return {"analyzeSpecs": [_feature_with(textDetectionConfig={"languageCodes": list(codes)})]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "body: Input should be a JSON object"),
        ({}, "analyzeSpecs: Field required"),
        ({"analyzeSpecs": None}, "analyzeSpecs: Field required"),
        ({"analyzeSpecs": ["x"]}, "analyzeSpecs.0: Input should be a JSON object"),
        ({"analyzeSpecs": []}, "analyzeSpecs: List should have at least 1 item"),
        ({"analyzeSpecs": [spec("")] * 9}, "analyzeSpecs: List should have at most 8 items"),
        ({"analyzeSpecs": [{"features": [ocr_feature("en")]}]}, "analyzeSpecs.0.content: Field"),
        (
            {"analyzeSpecs": [{"content": 5, "features": [ocr_feature("en")]}]},
            "analyzeSpecs.0.content: Input should be a valid string",
        ),
        (
            {"analyzeSpecs": [{"content": "", "features": []}]},
            "analyzeSpecs.0.features: List should have at least 1 item",
        ),
        (
            {"analyzeSpecs": [spec("", *[ocr_feature("en")] * 9)]},
            "analyzeSpecs.0.features: List should have at most 8 items",
        ),
        (
            {"analyzeSpecs": [spec("", {"textDetectionConfig": {"languageCodes": ["en"]}})]},
            "analyzeSpecs.0.features.0.type: Field required",
        ),
        (_codes(), "analyzeSpecs.0.features.0.textDetectionConfig.languageCodes: List should"),
        (
            _codes(*["en"] * 9),
            "analyzeSpecs.0.features.0.textDetectionConfig.languageCodes: List should have at "
            "most 8 items",
        ),
        (
            _codes("en", "engl"),
            "analyzeSpecs.0.features.0.textDetectionConfig.languageCodes.1: String should have "
            "at most 3 characters",
        ),
        (
            _codes(7),
            "analyzeSpecs.0.features.0.textDetectionConfig.languageCodes.0: Input should be a "
            "valid string",
        ),
        (
            {"analyzeSpecs": [_feature_with(textDetectionConfig={})]},
            "analyzeSpecs.0.features.0.textDetectionConfig.languageCodes: Field required",
        ),
        (
            {"folderId": "f" * 51, "analyzeSpecs": [spec("")]},
            "folderId: String should have at most 50 characters",
        ),
        ({"folderId": 5, "analyzeSpecs": [spec("")]}, "folderId: Input should be a valid string"),
        (
            {"analyzeSpecs": [{**spec(""), "mimeType": "m" * 256}]},
            "analyzeSpecs.0.mimeType: String should have at most 255 characters",
        ),
        (
            {"analyzeSpecs": [{**spec(""), "signature": "s"}]},
            "analyzeSpecs.0.signature: only one of content and signature may be set",
        ),
        (
            {
                "analyzeSpecs": [
                    _feature_with(
                        textDetectionConfig={"languageCodes": ["en"]},
                        classificationConfig={"model": "quality"},
                    )
                ]
            },
            "analyzeSpecs.0.features.0.classificationConfig: only one of textDetectionConfig "
            "and classificationConfig may be set",
        ),
    ],
)
def test_request_level_errors_name_the_field_path_and_the_reason(
    live_server: LiveServer, body: Any, message: str
) -> None:
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 400
    error = response.json()
    assert_rpc_error(error, 3)
    assert error["message"].startswith(message), error["message"]


def test_many_problems_are_listed_up_to_ten_then_counted(live_server: LiveServer) -> None:
    bad_codes = {"textDetectionConfig": {"languageCodes": [1] * 8}}
    body = {"analyzeSpecs": [spec("", *[{"type": "TEXT_DETECTION", **bad_codes}] * 2)]}
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 400
    message = response.json()["message"]
    assert message.count("Input should be a valid string") == 10
    assert message.endswith("; and 6 more")


def test_null_means_unset_and_unknown_fields_are_ignored(live_server: LiveServer) -> None:
    """proto3 JSON: `null` is the default (no folder, no config: the default languages);
    fields the proto has and batchvision does not use (`model`) or it does not know pass."""
    content = b64(render("defaults", size=(260, 80)))
    body = {
        "folderId": None,
        "futureField": {"anything": 1},
        "analyzeSpecs": [
            {
                "content": content,
                "signature": None,
                "features": [
                    {"type": "TEXT_DETECTION", "textDetectionConfig": None},
                    {"type": "TEXT_DETECTION", "textDetectionConfig": {"languageCodes": ["EN"]}},
                    {
                        "type": "TEXT_DETECTION",
                        "textDetectionConfig": {"languageCodes": ["en"], "model": "line"},
                    },
                ],
            }
        ],
    }
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 200, response.text
    results = response.json()["results"][0]["results"]
    assert [_words(r) for r in results] == [["defaults"]] * 3


def test_a_signature_source_is_unimplemented_for_that_spec_only(live_server: LiveServer) -> None:
    body = {
        "analyzeSpecs": [
            {"signature": "c2lnbmVk", "features": [ocr_feature("en")]},
            spec(b64(render("content", size=(240, 80)))),
        ]
    }
    with live_server.client() as client:
        response = post(client, body)
    assert response.status_code == 200, response.text
    signed, sent = response.json()["results"]
    assert set(signed) == {"error"}
    assert_rpc_error(signed["error"], 12)
    assert "signature" in signed["error"]["message"]
    assert _words(sent["results"][0]) == ["content"]
