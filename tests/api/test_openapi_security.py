"""The OpenAPI document's security schemes are the ones the server checks: for every operation
that names schemes, credentials placed as each scheme says are accepted, and a wrong key in the
same place is refused with 401."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from accounts.accounts_support import Keyed
from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import LiveServer, make_settings, start_server


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    """One auth-required server for the module, with an OAuth-capable key."""
    live = start_server(make_settings(tmp_path_factory.mktemp("sec"), auth="required"))
    try:
        yield Keyed(live, KeyStore(make_engine(live.settings)))
    finally:
        live.stop()


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]


def _credentials(
    client: httpx.Client, scheme: dict[str, Any], secret: str, oauth: tuple[str, str]
) -> dict[str, str]:
    """Headers that put `secret` where `scheme` says (an oauth2 scheme: a token fetched from its
    tokenUrl with client credentials in HTTP Basic, as Swagger UI's "Authorize" does)."""
    if scheme["type"] == "http":
        assert scheme["scheme"] == "bearer"
        return {"Authorization": f"Bearer {secret}"}
    if scheme["type"] == "apiKey":
        assert scheme["in"] == "header"
        if scheme["name"].lower() == "authorization":  # the value names its scheme
            word = re.search(r"`(\S+) <key>`", scheme["description"])
            assert word is not None, scheme["description"]
            return {scheme["name"]: f"{word[1]} {secret}"}
        return {scheme["name"]: secret}
    assert scheme["type"] == "oauth2"
    basic = base64.b64encode(":".join(oauth).encode()).decode()
    token_url = scheme["flows"]["clientCredentials"]["tokenUrl"]
    response = client.post(
        token_url,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _call(
    client: httpx.Client, method: str, path: str, operation: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    url = re.sub(r"\{[^}]+\}", "no-such-id", path)
    content = operation.get("requestBody", {}).get("content", {})
    example = content.get("application/json", {}).get("example")
    return client.request(method, url, json=example, headers=headers)


def test_every_secured_operation_accepts_its_schemes_and_refuses_a_wrong_key(
    keyed: Keyed,
) -> None:
    created = keyed.store.create("docs-user", oauth=True, credits=1000, is_admin=True)
    assert created.info.oauth_client_id and created.client_secret
    oauth = (created.info.oauth_client_id, created.client_secret)
    wrong = "bv_00000000_" + "x" * 43
    with keyed.client() as client:
        spec = client.get("/openapi.json").json()
        schemes = spec["components"]["securitySchemes"]
        secured = [op for op in _operations(spec) if op[2].get("security")]
        assert len(secured) > 30
        for method, path, operation in secured:
            for requirement in operation["security"]:
                [name] = requirement
                good = _credentials(client, schemes[name], created.secret, oauth)
                answered = _call(client, method, path, operation, good)
                assert answered.status_code not in (401, 403), (method, path, name, answered.text)
                bad = _credentials(client, schemes[name], wrong, oauth)
                if schemes[name]["type"] == "oauth2":
                    bad = {"Authorization": "Bearer bvat_wrong"}
                refused = _call(client, method, path, operation, bad)
                # A route that reads its body before the key refuses a missing body first.
                expected = {401} if answered.status_code != 400 else {400, 401}
                assert refused.status_code in expected, (method, path, name, refused.text)


def test_each_surface_names_its_own_scheme(keyed: Keyed) -> None:
    with keyed.client() as client:
        spec = client.get("/openapi.json").json()

    def names(path: str, method: str = "post") -> set[str]:
        return {name for req in spec["paths"][path][method]["security"] for name in req}

    assert names("/v1/analyze") == {"bearer"}
    assert names("/api/v1/batch-detect") == {"bearer"}
    assert names("/api/v1/inference/predict/batch/v2") == {"bearer"}
    assert names("/v1/caption") == {"moondreamAuth"}
    assert names("/v1/batch", "get") == {"moondreamAuth"}
    assert names("/vision/v1/batchAnalyze") == {"yandexApiKey", "bearer"}
    assert names("/batch_image") == {"bearer", "bitmindOAuth"}
    open_paths = ["/healthz", "/readyz", "/health"]
    assert all("security" not in spec["paths"][p]["get"] for p in open_paths)


def test_a_server_with_auth_disabled_documents_the_same_schemes(
    live_server: LiveServer, keyed: Keyed
) -> None:
    with live_server.client() as open_client, keyed.client() as keyed_client:
        open_spec = open_client.get("/openapi.json").json()
        keyed_spec = keyed_client.get("/openapi.json").json()
    assert open_spec["components"]["securitySchemes"] == keyed_spec["components"]["securitySchemes"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("post", "/v1/analyze", 200),
        ("post", "/vision/v1/batchAnalyze", 200),
        ("post", "/v1/jobs", 202),
    ],
)
def test_a_documented_example_body_works_as_it_stands(
    keyed: Keyed, method: str, path: str, status: int
) -> None:
    """What "Try it out" sends unedited: the example of the route's request body."""
    secret = keyed.store.create(f"example-{path.replace('/', '-')}", credits=100).secret
    with keyed.client() as client:
        spec = client.get("/openapi.json").json()
        [(media, content)] = [
            item
            for item in spec["paths"][path][method]["requestBody"]["content"].items()
            if "example" in item[1]
        ]
        example = content["example"]
        body = example.encode() if isinstance(example, str) else json.dumps(example).encode()
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": media}
        response = client.request(method, path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert _errors_in(response.json()) == [], response.text


def _errors_in(node: Any) -> list[Any]:
    """Every non-empty `error` or `errors` value anywhere in a response body."""
    if isinstance(node, list):
        return [found for item in node for found in _errors_in(item)]
    if not isinstance(node, dict):
        return []
    own = [value for key, value in node.items() if key in ("error", "errors") and value]
    return own + [found for value in node.values() for found in _errors_in(value)]
