"""The OpenAPI paths are the server's: no two templates name the same URLs, and a method a path
does not have is a 405 whose Allow header lists exactly the methods the document gives it."""

from __future__ import annotations

import re

from conftest import LiveServer

_PARAMETER = re.compile(r"\{[^}]+\}")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def test_no_two_paths_differ_only_in_a_parameter_name(live_server: LiveServer) -> None:
    with live_server.client() as client:
        paths = list(client.get("/openapi.json").json()["paths"])
    shapes = [_PARAMETER.sub("{}", path) for path in paths]
    assert len(set(shapes)) == len(shapes), sorted(shapes)


def _documented_methods(paths: dict[str, dict[str, object]], url: str) -> set[str]:
    """The methods of every documented path whose template matches `url` (a literal path such as
    `…/assets/signed-url` is also a value of the template `…/assets/{object_path}`)."""
    methods: set[str] = set()
    for path, item in paths.items():
        pattern = "".join(
            "[^/]+" if _PARAMETER.fullmatch(part) else re.escape(part)
            for part in re.split(r"(\{[^}]+\})", path)
        )
        if re.fullmatch(pattern, url):
            methods |= {method.upper() for method in item}
    return methods


def test_a_method_a_path_lacks_is_405_and_allow_lists_what_the_document_lists(
    live_server: LiveServer,
) -> None:
    with live_server.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
        for path in paths:
            url = _PARAMETER.sub("some-id", path)
            documented = _documented_methods(paths, url)
            for method in (m for m in _METHODS if m not in documented):
                response = client.request(method, url)
                assert response.status_code == 405, (method, path, response.text)
                allowed = {m.strip() for m in response.headers["allow"].split(",")}
                assert allowed == documented, (method, path)


def test_moondream_batch_path_allows_the_upload_methods_and_get_together(
    live_server: LiveServer,
) -> None:
    """The path Starlette answered with `Allow: PUT` alone (the first route that matched)."""
    with live_server.client() as client:
        response = client.patch("/v1/batch/some-file")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST, PUT, DELETE"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_get_on_the_signed_url_route_is_405_not_an_asset_lookup(live_server: LiveServer) -> None:
    """`…/assets/signed-url` is POST only; GET there used to reach the asset route (403)."""
    with live_server.client() as client:
        response = client.get("/api/v1/inference/assets/signed-url")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["detail"]["code"] == "method_not_allowed"


def test_a_parameter_error_is_the_documented_400_not_fastapis_422(live_server: LiveServer) -> None:
    """FastAPI documents a 422 HTTPValidationError the server never sends (its handler answers
    400 in the surface's form); the document lists what really comes."""
    with live_server.client() as client:
        spec = client.get("/openapi.json").json()
        response = client.get("/v1/usage", params={"days": "0"})
    assert "HTTPValidationError" not in str(spec)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    documented = spec["paths"]["/v1/usage"]["get"]["responses"]
    assert "400" in documented and "422" not in documented
