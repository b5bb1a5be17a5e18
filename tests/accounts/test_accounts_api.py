"""Authentication and tenant isolation on the native API: the real app over real HTTP, keys in a
real SQLite file.

Every /v1 route needs `Authorization: Bearer <key>` when auth is required; a missing, wrong,
unknown, revoked or malformed credential is 401 `unauthorized` (never a 500); another key's
objects answer 404 exactly like objects that do not exist.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from accounts_support import (
    Keyed,
    analyze,
    analyze_body,
    bearer,
    error_code,
    keyed_server,
    raw_request,
)

from batchvision.accounts.keys import KeyStore, NewKey
from batchvision.core.db import make_engine
from batchvision.core.settings import Settings
from conftest import LiveServer, make_settings, start_server

WWW_AUTHENTICATE = 'Bearer realm="batchvision"'
# A first-hour user's copied example: the 401 says how to send the key, to curl and to the CLI.
MISSING_KEY_MESSAGE = (
    "missing API key: send 'Authorization: Bearer <key>' "
    "(the CLI: --api-key or BATCHVISION_API_KEY)"
)

# (method, path, JSON body): every route behind a key.
ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/analyze", analyze_body(1)),
    ("GET", "/v1/skills", None),
    ("GET", "/v1/models", None),
    ("GET", "/v1/usage", None),
    ("GET", "/v1/keys", None),
    ("GET", "/v1/keys/1", None),
    ("POST", "/v1/keys", {"name": "made-without-auth"}),
    ("POST", "/v1/keys/1/revoke", None),
    ("POST", "/v1/keys/1/credits", {"amount": 5}),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _ in ROUTES]


@dataclass
class Tenants:
    live: LiveServer
    store: KeyStore
    admin: NewKey
    alice: NewKey
    bob: NewKey

    def client(self) -> httpx.Client:
        return self.live.client()


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    """One keyed server for the module: an unlimited admin and two unlimited tenants."""
    live = start_server(make_settings(tmp_path_factory.mktemp("accounts-api"), auth="required"))
    store = KeyStore(make_engine(live.settings))
    yield Tenants(
        live,
        store,
        admin=store.create("admin", is_admin=True),
        alice=store.create("alice"),
        bob=store.create("bob"),
    )
    live.stop()
    store.engine.dispose()


@pytest.fixture
def client(tenants: Tenants) -> Iterator[httpx.Client]:
    with tenants.client() as c:
        yield c


def call(
    client: httpx.Client, method: str, path: str, body: Any, headers: dict[str, Any]
) -> httpx.Response:
    return client.request(method, path, json=body, headers=headers)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert error_code(response) == "unauthorized"
    assert response.headers["www-authenticate"] == WWW_AUTHENTICATE
    assert response.headers["x-request-id"]


def wrong_rest(secret: str) -> str:
    """The same public prefix, a different random part of the same shape."""
    head, rest = secret[:12], secret[12:]
    return head + ("A" if rest[0] != "A" else "B") + rest[1:]


# --- every route needs a key ----------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=ROUTE_IDS)
def test_missing_key_is_401_on_every_route(
    client: httpx.Client, tenants: Tenants, method: str, path: str, body: Any
) -> None:
    missing = call(client, method, path, body, {})
    assert_unauthorized(missing)
    assert missing.json()["error"]["message"] == MISSING_KEY_MESSAGE
    # Nothing happened: no key was made, none revoked, no credits moved.
    assert [k.name for k in tenants.store.all_keys()][:3] == ["admin", "alice", "bob"]
    assert all(k.active and k.credits is None for k in tenants.store.all_keys()[:3])


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=ROUTE_IDS)
def test_wrong_secret_is_401_on_every_route(
    client: httpx.Client, tenants: Tenants, method: str, path: str, body: Any
) -> None:
    headers = bearer(wrong_rest(tenants.admin.secret))
    wrong = call(client, method, path, body, headers)
    assert_unauthorized(wrong)
    assert wrong.json()["error"]["message"] == "invalid or revoked API key"


@pytest.mark.parametrize(
    ("path", "expect"),
    [
        ("/v1/skills", "skills"),
        ("/v1/models", "models"),
        ("/v1/usage", "balance"),
        ("/v1/keys", "keys"),
    ],
)
def test_a_valid_key_opens_every_read_route(
    client: httpx.Client, tenants: Tenants, path: str, expect: str
) -> None:
    response = client.get(path, headers=bearer(tenants.alice.secret))
    assert response.status_code == 200, response.text
    assert expect in response.json()
    assert response.headers["x-request-id"]


def test_a_valid_key_analyzes(client: httpx.Client, tenants: Tenants) -> None:
    response = analyze(client, tenants.alice.secret, images=2)
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["ok", "ok"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/docs", "/openapi.json"])
def test_ops_and_docs_routes_stay_open(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert "www-authenticate" not in response.headers


# --- credential placement and malformed headers ---------------------------------------------


def _bad_headers(t: Tenants) -> dict[str, dict[str, Any]]:
    secret = t.alice.secret
    prefix = t.alice.info.prefix
    return {
        "wrong-rest": bearer(wrong_rest(secret)),
        "unknown-prefix": bearer(f"bv_{'0' * 8 if prefix != '0' * 8 else '1' * 8}{secret[11:]}"),
        "truncated": bearer(secret[:-1]),
        "one-char-more": bearer(secret + "x"),
        "uppercase-prefix": bearer(secret.replace(prefix, prefix.upper()))
        if prefix.upper() != prefix
        else bearer(secret.upper()),
        "not-a-key": bearer("hunter2"),
        "empty-authorization": {"Authorization": ""},
        "bearer-alone": {"Authorization": "Bearer"},
        "basic-garbage": {"Authorization": "Basic xxx"},
        "basic-with-the-key": {"Authorization": f"Basic {secret}"},
        "no-scheme": {"Authorization": secret},
        "token-scheme": {"Authorization": f"Token {secret}"},
        "two-tokens": {"Authorization": "Bearer a b"},
        "key-then-junk": {"Authorization": f"Bearer {secret} extra"},
        "tab-separator": {"Authorization": f"Bearer\t{secret}"},
        "non-ascii": {"Authorization": "Bearer bv_ünïcødé_ключ".encode()},
        "non-ascii-after-key": {"Authorization": f"Bearer {secret}é".encode()},
        "latin1-bytes": {"Authorization": b"Bearer \xff\xfe\xfd"},
        "10-kb": {"Authorization": "Bearer " + "x" * 10_240},
        "10-kb-after-prefix": {"Authorization": f"Bearer {secret}{'a' * 10_240}"},
        "key-in-other-header": {"X-API-Key": secret},
        "key-in-query-only": {},  # the request adds ?api_key=...
    }


BAD_NAMES = [
    "wrong-rest",
    "unknown-prefix",
    "truncated",
    "one-char-more",
    "uppercase-prefix",
    "not-a-key",
    "empty-authorization",
    "bearer-alone",
    "basic-garbage",
    "basic-with-the-key",
    "no-scheme",
    "token-scheme",
    "two-tokens",
    "key-then-junk",
    "tab-separator",
    "non-ascii",
    "non-ascii-after-key",
    "latin1-bytes",
    "10-kb",
    "10-kb-after-prefix",
    "key-in-other-header",
    "key-in-query-only",
]


def test_bad_names_cover_every_variant(tenants: Tenants) -> None:
    assert sorted(BAD_NAMES) == sorted(_bad_headers(tenants))


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/skills"), ("POST", "/v1/analyze")])
def test_bad_credentials_are_401_never_500(
    client: httpx.Client, tenants: Tenants, name: str, method: str, path: str
) -> None:
    headers = _bad_headers(tenants)[name]
    params = {"api_key": tenants.alice.secret} if name == "key-in-query-only" else None
    body = analyze_body(1) if method == "POST" else None
    response = client.request(method, path, json=body, headers=headers, params=params)
    assert_unauthorized(response)


@pytest.mark.parametrize(
    "template",
    ["Bearer {}", "bearer {}", "BEARER {}", "bEaReR {}", "Bearer   {}", "  Bearer {}"],
    ids=["canonical", "lowercase", "uppercase", "mixed-case", "extra-spaces", "leading-space"],
)
def test_scheme_is_case_insensitive_and_spaces_are_tolerated(
    tenants: Tenants, template: str
) -> None:
    # Raw bytes: an HTTP client would normalise leading whitespace away.
    head = f"GET /v1/usage HTTP/1.1\r\nAuthorization: {template.format(tenants.alice.secret)}"
    status, _, body = raw_request(tenants.live.url, head.encode())
    assert status == 200, body
    assert json.loads(body)["key"]["name"] == "alice"


def test_trailing_whitespace_after_the_key_is_tolerated(tenants: Tenants) -> None:
    head = f"GET /v1/usage HTTP/1.1\r\nAuthorization: Bearer {tenants.alice.secret} \t "
    status, _, body = raw_request(tenants.live.url, head.encode())
    assert status == 200, body


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer \xc3\xa9\xc3\xa9",
        b"Bearer bv_00000000_" + b"\x80" * 43,
        b"\xff\xff\xff",
        b"Bearer " + b"y" * 10_240,
        b"Bearer\x0bkey",
        b"Bearer    ",
        b"",
    ],
    ids=[
        "utf8",
        "high-bytes-in-key-shape",
        "binary-scheme",
        "10-kb",
        "vertical-tab",
        "bearer-spaces",
        "empty",
    ],
)
def test_raw_malformed_authorization_is_refused_without_500(tenants: Tenants, value: bytes) -> None:
    status, headers, body = raw_request(
        tenants.live.url, b"GET /v1/skills HTTP/1.1\r\nAuthorization: " + value
    )
    # 401 from the app, or 400 where the HTTP parser rejects the bytes outright.
    assert status in (400, 401), (status, body)
    if status == 401:
        assert json.loads(body)["error"]["code"] == "unauthorized"
        assert headers["www-authenticate"] == WWW_AUTHENTICATE


def test_two_authorization_headers_do_not_crash(tenants: Tenants) -> None:
    head = (
        "GET /v1/skills HTTP/1.1\r\nAuthorization: Bearer nope\r\n"
        f"Authorization: Bearer {tenants.alice.secret}"
    )
    status, _, _ = raw_request(tenants.live.url, head.encode())
    assert status in (200, 401)


def test_request_id_is_on_401_and_echoed(client: httpx.Client) -> None:
    response = client.get("/v1/skills", headers={"X-Request-ID": "trace-401"})
    assert_unauthorized(response)
    assert response.headers["x-request-id"] == "trace-401"


# --- revoked keys -----------------------------------------------------------------------------


def test_key_revoked_in_the_store_fails_at_once(client: httpx.Client, tenants: Tenants) -> None:
    key = tenants.store.create("revoked-in-store")
    assert client.get("/v1/usage", headers=bearer(key.secret)).status_code == 200
    revoked = tenants.store.revoke("revoked-in-store")
    assert revoked.revoked_at is not None and not revoked.active
    for method, path, body in ROUTES:
        assert_unauthorized(call(client, method, path, body, bearer(key.secret)))


def test_key_revokes_itself_over_http(client: httpx.Client, tenants: Tenants) -> None:
    key = tenants.store.create("self-revoker")
    response = client.post(f"/v1/keys/{key.info.id}/revoke", headers=bearer(key.secret))
    assert response.status_code == 200, response.text
    assert response.json()["revoked_at"] is not None
    assert_unauthorized(client.get("/v1/usage", headers=bearer(key.secret)))
    assert_unauthorized(analyze(client, key.secret))


def test_admin_revokes_another_key_over_http(client: httpx.Client, tenants: Tenants) -> None:
    key = tenants.store.create("admin-revoked")
    response = client.post(f"/v1/keys/{key.info.id}/revoke", headers=bearer(tenants.admin.secret))
    assert response.status_code == 200, response.text
    assert_unauthorized(client.get("/v1/skills", headers=bearer(key.secret)))
    # The admin still sees the key, marked revoked.
    shown = client.get(f"/v1/keys/{key.info.id}", headers=bearer(tenants.admin.secret)).json()
    assert shown["name"] == "admin-revoked" and shown["revoked_at"] is not None


# --- admin and non-admin ----------------------------------------------------------------------


def test_non_admin_cannot_create_keys(client: httpx.Client, tenants: Tenants) -> None:
    before = len(tenants.store.all_keys())
    response = client.post(
        "/v1/keys", json={"name": "sneaky", "admin": True}, headers=bearer(tenants.alice.secret)
    )
    assert response.status_code == 403, response.text
    assert error_code(response) == "forbidden"
    assert len(tenants.store.all_keys()) == before


def test_non_admin_cannot_add_credits(client: httpx.Client, tenants: Tenants) -> None:
    response = client.post(
        f"/v1/keys/{tenants.alice.info.id}/credits",
        json={"amount": 100},
        headers=bearer(tenants.alice.secret),
    )
    assert response.status_code == 403
    assert error_code(response) == "forbidden"


def test_admin_creates_a_key_whose_secret_works(client: httpx.Client, tenants: Tenants) -> None:
    response = client.post(
        "/v1/keys",
        json={"name": "made-over-http", "credits": 7, "requests_per_minute": 100},
        headers=bearer(tenants.admin.secret),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    secret = body["secret"]
    assert secret.startswith(f"bv_{body['key']['prefix']}_")
    assert body["key"]["credits"] == 7 and body["key"]["is_admin"] is False
    assert "secret_hash" not in body["key"]
    usage = client.get("/v1/usage", headers=bearer(secret))
    assert usage.status_code == 200, usage.text
    assert usage.json()["key"]["name"] == "made-over-http"
    assert usage.json()["balance"] == 7
    # The secret is in that response only: no listing or lookup repeats it.
    listed = client.get("/v1/keys", headers=bearer(tenants.admin.secret)).text
    fetched = client.get(f"/v1/keys/{body['key']['id']}", headers=bearer(secret)).text
    assert secret not in listed and secret not in fetched
    assert secret[12:] not in listed and secret[12:] not in fetched


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "admin"},  # taken
        {"name": ""},
        {"name": "x", "credits": -1},
        {"name": "x", "credits": "5"},
        {"name": "x", "credits": 10**30},
        {"name": "x", "requests_per_minute": 0},
        {"name": "x", "requests_per_minute": 2**64},
        {"name": "x", "images_per_minute": 2**40},
        {"name": "x", "surprise": 1},
        {"name": "bad/name"},
        ["not", "an", "object"],
    ],
)
def test_admin_key_creation_refuses_bad_specs(
    client: httpx.Client, tenants: Tenants, spec: Any
) -> None:
    before = len(tenants.store.all_keys())
    response = client.post("/v1/keys", json=spec, headers=bearer(tenants.admin.secret))
    assert response.status_code == 422, response.text
    assert error_code(response) == "invalid_parameter"
    assert len(tenants.store.all_keys()) == before


def test_admin_adds_credits_over_http(client: httpx.Client, tenants: Tenants) -> None:
    key = tenants.store.create("topped-up", credits=1)
    response = client.post(
        f"/v1/keys/{key.info.id}/credits",
        json={"amount": 9},
        headers=bearer(tenants.admin.secret),
    )
    assert response.status_code == 200, response.text
    assert response.json()["credits"] == 10
    assert tenants.store.get(key.info.id).credits == 10  # type: ignore[union-attr]
    huge = client.post(
        f"/v1/keys/{key.info.id}/credits",
        json={"amount": 2**70},
        headers=bearer(tenants.admin.secret),
    )
    assert huge.status_code == 422 and error_code(huge) == "invalid_parameter"
    unlimited = client.post(
        f"/v1/keys/{tenants.bob.info.id}/credits",
        json={"amount": 5},
        headers=bearer(tenants.admin.secret),
    )
    assert unlimited.status_code == 422 and error_code(unlimited) == "invalid_parameter"
    assert tenants.store.get(tenants.bob.info.id).credits is None  # type: ignore[union-attr]


def test_key_listing_is_scoped(client: httpx.Client, tenants: Tenants) -> None:
    mine = client.get("/v1/keys", headers=bearer(tenants.alice.secret))
    assert mine.status_code == 200
    assert [k["name"] for k in mine.json()["keys"]] == ["alice"]
    everyone = client.get("/v1/keys", headers=bearer(tenants.admin.secret)).json()["keys"]
    names = {k["name"] for k in everyone}
    assert {"admin", "alice", "bob"} <= names
    assert names == {k.name for k in tenants.store.all_keys()}
    for listed in everyone:
        assert "secret" not in listed and "secret_hash" not in listed


def test_a_key_fetches_itself(client: httpx.Client, tenants: Tenants) -> None:
    response = client.get(f"/v1/keys/{tenants.alice.info.id}", headers=bearer(tenants.alice.secret))
    assert response.status_code == 200
    assert response.json()["name"] == "alice"


def _shape(response: httpx.Response, object_id: int) -> tuple[int, str, list[str]]:
    """A response with its id blanked out, and its header names less the per-response ones."""
    text = response.text.replace(str(object_id), "<id>")
    names = sorted(set(response.headers) - {"x-request-id", "date", "content-length"})
    return response.status_code, text, names


@pytest.mark.parametrize(
    ("method", "template"),
    [("GET", "/v1/keys/{}"), ("POST", "/v1/keys/{}/revoke")],
)
def test_another_keys_object_is_indistinguishable_from_a_missing_one(
    client: httpx.Client, tenants: Tenants, method: str, template: str
) -> None:
    other = tenants.bob.info.id
    missing = max(k.id for k in tenants.store.all_keys()) + 1000
    as_alice = bearer(tenants.alice.secret)
    theirs = client.request(method, template.format(other), headers=as_alice)
    nothing = client.request(method, template.format(missing), headers=as_alice)
    assert theirs.status_code == 404, theirs.text
    assert error_code(theirs) == "not_found"
    assert _shape(theirs, other) == _shape(nothing, missing)
    # And bob is untouched.
    assert tenants.store.get(other).active  # type: ignore[union-attr]
    assert client.get("/v1/usage", headers=bearer(tenants.bob.secret)).status_code == 200


@pytest.mark.parametrize("key_id", ["0", "-1", "99999999999999999999999", str(2**63)])
def test_out_of_range_key_ids_are_404_not_500(
    client: httpx.Client, tenants: Tenants, key_id: str
) -> None:
    for method, template in [("GET", "/v1/keys/{}"), ("POST", "/v1/keys/{}/revoke")]:
        response = client.request(
            method, template.format(key_id), headers=bearer(tenants.admin.secret)
        )
        assert response.status_code == 404, response.text
        assert error_code(response) == "not_found"


def test_usage_reports_only_the_calling_key(client: httpx.Client, tenants: Tenants) -> None:
    carol = tenants.store.create("carol", credits=10)
    dave = tenants.store.create("dave", credits=10)
    assert analyze(client, carol.secret, images=2).status_code == 200
    assert analyze(client, carol.secret, images=1).status_code == 200
    assert analyze(client, dave.secret, images=1).status_code == 200
    mine = client.get("/v1/usage", headers=bearer(carol.secret)).json()
    theirs = client.get("/v1/usage", headers=bearer(dave.secret)).json()
    assert mine["key"] == {"id": carol.info.id, "name": "carol", "prefix": carol.info.prefix}
    assert mine["balance"] == 7
    assert mine["totals"] == {"requests": 2, "images": 3, "credits": 3, "uncharged_credits": 0}
    assert theirs["key"]["name"] == "dave"
    assert theirs["balance"] == 9
    assert theirs["totals"] == {"requests": 1, "images": 1, "credits": 1, "uncharged_credits": 0}
    # An admin's own usage is its own too, not everyone's.
    admin = client.get("/v1/usage", headers=bearer(tenants.admin.secret)).json()
    assert admin["key"]["name"] == "admin" and admin["totals"]["images"] == 0


def test_usage_days_parameter_is_validated(client: httpx.Client, tenants: Tenants) -> None:
    for days in ("0", "367", "abc"):
        response = client.get(
            "/v1/usage", params={"days": days}, headers=bearer(tenants.alice.secret)
        )
        assert response.status_code == 400, response.text
        assert error_code(response) == "invalid_request"


# --- auth disabled ----------------------------------------------------------------------------


def test_auth_disabled_needs_no_key(serve: Callable[..., LiveServer]) -> None:
    live = serve(auth="disabled")
    with live.client() as client:
        assert client.get("/v1/skills").status_code == 200
        assert client.get("/v1/models").status_code == 200
        response = analyze(client, None)
        assert response.status_code == 200, response.text
        # A bogus key is ignored rather than refused: there are no keys.
        assert analyze(client, "bv_nope").status_code == 200
        usage = client.get("/v1/usage")
        assert usage.status_code == 404 and error_code(usage) == "not_found"


def test_auth_required_is_the_default(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).auth == "required"


def test_keyed_helper_server_requires_auth(serve: Callable[..., LiveServer]) -> None:
    keyed: Keyed = keyed_server(serve)
    key = keyed.store.create("k")
    with keyed.client() as client:
        assert_unauthorized(client.get("/v1/skills"))
        assert client.get("/v1/skills", headers=bearer(key.secret)).status_code == 200
