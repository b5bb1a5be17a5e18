"""BitMind's auth over real HTTP: API keys and OAuth access tokens as Bearer tokens, the
client_credentials grant, token expiry and revocation, and client certificates pinned to keys
(`batchvision keys create --oauth / --client-cert`, through the real command line)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from bitmind_support import AI_JPEG, Keyed, batch, bearer, error_of, keyed_server, single
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text
from typer.testing import CliRunner

from batchvision.cli.main import app
from conftest import LiveServer

TOKEN = "/v1/oauth/token"


def token_response(client: httpx.Client, client_id: str, secret: str) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    return client.post(TOKEN, data=form)


def access_token(client: httpx.Client, client_id: str, secret: str) -> str:
    response = token_response(client, client_id, secret)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_description"} and body["error"] == error, body
    assert response.headers["cache-control"] == "no-store"


def oauth_key(keyed: Keyed, name: str = "client") -> tuple[int, str, str]:
    created = keyed.store.create(name, oauth=True)
    assert created.info.oauth_client_id is not None and created.client_secret is not None
    return created.info.id, created.info.oauth_client_id, created.client_secret


def test_client_credentials_give_a_bearer_token_that_is_metered_as_its_key(
    serve: Callable[..., LiveServer],
) -> None:
    keyed = keyed_server(serve)
    key_id, client_id, secret = oauth_key(keyed)
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    with keyed.client() as client:
        issued = token_response(client, client_id, secret)
        by_basic = client.post(
            TOKEN,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {basic}"},
        )
        token = issued.json()["access_token"]
        one = single(client, AI_JPEG, "image/jpeg", bearer(token))
        two = batch(client, [("a.jpg", AI_JPEG), ("b.jpg", AI_JPEG)], bearer(token))
    assert issued.status_code == 200, issued.text
    assert issued.json()["token_type"] == "Bearer" and issued.json()["expires_in"] == 3600
    assert issued.headers["cache-control"] == "no-store"
    assert by_basic.status_code == 200, by_basic.text
    assert one.status_code == 200 and two.status_code == 200, (one.text, two.text)
    [today] = keyed.store.usage(key_id)
    assert (today["requests"], today["images"]) == (2, 3)
    with keyed.store.engine.connect() as db:
        stored = db.execute(text("SELECT oauth_secret_hash FROM api_keys")).scalar_one()
    assert stored == hashlib.sha256(secret.encode()).hexdigest()  # the hash, never the secret


def test_bad_client_credentials_and_grants_are_refused_as_rfc_6749_says(
    serve: Callable[..., LiveServer],
) -> None:
    keyed = keyed_server(serve)
    _, client_id, secret = oauth_key(keyed)
    plain = keyed.store.create("plain")  # no client credentials
    with keyed.client() as client:
        wrong_secret = token_response(client, client_id, secret[:-1] + "x")
        unknown = token_response(client, "bvc_00000000", secret)
        no_oauth = token_response(client, f"bvc_{plain.info.prefix}", plain.secret)
        missing = client.post(TOKEN, data={"grant_type": "client_credentials"})
        password = client.post(TOKEN, data={"grant_type": "password", "username": "u"})
        as_json = client.post(TOKEN, json={"grant_type": "client_credentials"})
    for refused in (wrong_secret, unknown, no_oauth):
        oauth_error(refused, 401, "invalid_client")
        assert refused.headers["www-authenticate"].startswith("Basic")
    oauth_error(missing, 400, "invalid_request")
    oauth_error(password, 400, "unsupported_grant_type")
    oauth_error(as_json, 400, "invalid_request")


def test_a_forged_or_expired_token_is_a_401(serve: Callable[..., LiveServer]) -> None:
    keyed = keyed_server(serve, access_token_lifetime_s=2)
    key_id, client_id, secret = oauth_key(keyed)
    other_id = keyed.store.create("other").info.id
    with keyed.client() as client:
        token = access_token(client, client_id, secret)
        fresh = single(client, AI_JPEG, "image/jpeg", bearer(token))
        # The same signature under another key's id, and a signature with one character changed.
        moved = token.replace(f"bvat_{key_id}_", f"bvat_{other_id}_")
        flipped = token[:-1] + ("0" if token[-1] != "0" else "1")
        forged = [single(client, AI_JPEG, "image/jpeg", bearer(t)) for t in (moved, flipped)]
        time.sleep(3)
        expired = single(client, AI_JPEG, "image/jpeg", bearer(token))
    assert fresh.status_code == 200, fresh.text
    for response in forged:
        error_of(response, 401, "unauthorized")
    assert "expired" in error_of(expired, 401, "unauthorized")


def test_revoking_the_key_kills_its_tokens_and_replicas_share_them(
    serve: Callable[..., LiveServer],
) -> None:
    keyed = keyed_server(serve)
    replica = serve(auth="required")  # the same data directory: the same database and secret
    _, client_id, secret = oauth_key(keyed)
    with keyed.client() as client, replica.client() as other:
        token = access_token(client, client_id, secret)
        on_replica = single(other, AI_JPEG, "image/jpeg", bearer(token))
        keyed.store.revoke("client")
        revoked = single(client, AI_JPEG, "image/jpeg", bearer(token))
        new_token = token_response(client, client_id, secret)
    assert on_replica.status_code == 200, on_replica.text
    error_of(revoked, 401, "unauthorized")
    oauth_error(new_token, 401, "invalid_client")


# --- client certificates ---------------------------------------------------------------------


def certificate_pem(common_name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def cert_header(pem: bytes) -> dict[str, str]:
    return {"X-Client-Cert": base64.b64encode(pem).decode()}


def cli_create(data_dir: Path, *args: str) -> list[str]:
    """`batchvision keys create`; its stdout lines (the secrets)."""
    env = {"BATCHVISION_DATA_DIR": str(data_dir)}
    result = CliRunner().invoke(app, ["keys", "create", *args], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout.split()


def test_a_key_with_a_pinned_certificate_needs_it_and_other_keys_ignore_it(
    serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    keyed = keyed_server(serve)
    pem, stranger = certificate_pem("client"), certificate_pem("someone else")
    (tmp_path / "client.pem").write_bytes(pem)
    data_dir = keyed.live.settings.data_dir
    pinned, client_id, client_secret = cli_create(
        data_dir, "--name", "pinned", "--oauth", "--client-cert", str(tmp_path / "client.pem")
    )
    [plain] = cli_create(data_dir, "--name", "plain")
    assert client_id.startswith("bvc_") and client_secret.startswith("bvcs_")
    with keyed.client() as client:
        without = single(client, AI_JPEG, "image/jpeg", bearer(pinned))
        other = single(client, AI_JPEG, "image/jpeg", {**bearer(pinned), **cert_header(stranger)})
        garbage = single(client, AI_JPEG, "image/jpeg", {**bearer(pinned), "X-Client-Cert": "%%"})
        right = single(client, AI_JPEG, "image/jpeg", {**bearer(pinned), **cert_header(pem)})
        token = access_token(client, client_id, client_secret)
        token_without = batch(client, [("a.jpg", AI_JPEG)], bearer(token))
        token_with = batch(client, [("a.jpg", AI_JPEG)], {**bearer(token), **cert_header(pem)})
        ignored = single(client, AI_JPEG, "image/jpeg", {**bearer(plain), "X-Client-Cert": "%%"})
    assert "requires an X-Client-Cert" in error_of(without, 403, "forbidden")
    for refused in (other, garbage, token_without):
        error_of(refused, 403, "forbidden")
    for allowed in (right, token_with, ignored):
        assert allowed.status_code == 200, allowed.text


def test_a_client_cert_file_that_is_not_a_certificate_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "not.pem").write_text("hello")
    env = {"BATCHVISION_DATA_DIR": str(tmp_path / "data")}
    args = ["keys", "create", "--name", "x", "--client-cert", str(tmp_path / "not.pem")]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2
    assert "no PEM certificate" in result.output
    assert not (tmp_path / "data").exists()  # refused before the database was created


def test_post_v1_keys_creates_oauth_and_pinned_keys_over_http(
    serve: Callable[..., LiveServer],
) -> None:
    """An admin creates BitMind-ready keys through the API, as `keys create --oauth
    --client-cert` does: the client credentials work at the token route, the pin is enforced."""
    keyed = keyed_server(serve)
    admin = bearer(keyed.store.create("root", is_admin=True).secret)
    pem = certificate_pem("client")
    with keyed.client() as client:
        made = client.post(
            "/v1/keys",
            json={"name": "bitmind", "oauth": True, "client_cert": pem.decode()},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        body = made.json()
        fingerprint = hashlib.sha256(
            x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        ).hexdigest()
        assert body["key"]["client_cert_sha256"] == fingerprint
        assert body["client_id"] == body["key"]["oauth_client_id"]
        token = access_token(client, body["client_id"], body["client_secret"])
        pinned = {**bearer(token), **cert_header(pem)}
        assert single(client, AI_JPEG, "image/jpeg", pinned).status_code == 200
        error_of(single(client, AI_JPEG, "image/jpeg", bearer(token)), 403, "forbidden")
        plain = client.post("/v1/keys", json={"name": "plain"}, headers=admin).json()
        assert "client_secret" not in plain and plain["key"]["oauth_client_id"] is None
        bad = client.post("/v1/keys", json={"name": "bad", "client_cert": "hello"}, headers=admin)
    assert bad.status_code == 422 and "no PEM certificate" in bad.json()["error"]["message"]
    assert "bad" not in [key.name for key in keyed.store.all_keys()]
