"""`batchvision keys ...` and the `serve` bind guard through the real command line, on a real
SQLite file in a temporary data dir."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner, Result

from batchvision.accounts.keys import KeyStore
from batchvision.cli.main import app
from batchvision.core.db import make_engine
from batchvision.core.settings import Settings

SECRET = re.compile(r"^bv_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def bv(data_dir: Path) -> Any:
    runner = CliRunner()

    def invoke(*args: str, **env: str) -> Result:
        return runner.invoke(app, list(args), env={"BATCHVISION_DATA_DIR": str(data_dir), **env})

    return invoke


@pytest.fixture
def store(data_dir: Path) -> Iterator[KeyStore]:
    engine = make_engine(Settings(data_dir=data_dir))
    yield KeyStore(engine)
    engine.dispose()


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def failed(result: Result, code: int, message: str) -> str:
    """A clean failure: the exit code, the message on stderr, no traceback."""
    assert result.exit_code == code, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
    return result.stderr


def create(bv: Any, name: str, *extra: str) -> str:
    result = ok(bv("keys", "create", "--name", name, *extra))
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout  # stdout is the secret and nothing else
    assert SECRET.match(lines[0]), lines[0]
    return lines[0]


# --- keys create ------------------------------------------------------------------------------


def test_create_prints_the_secret_once_and_it_authenticates(bv: Any, store: KeyStore) -> None:
    result = ok(
        bv("keys", "create", "--name", "ops", "--credits", "5", "--rate", "60/min", "--admin")
    )
    secret = result.stdout.strip()
    match = SECRET.match(secret)
    assert match, result.stdout
    assert result.stdout.count(secret) == 1
    assert secret not in result.stderr  # the description goes to stderr, without the secret
    assert "shown once" in result.stderr
    assert f"bv_{match.group(1)}_…" in result.stderr
    key = store.authenticate(secret)
    assert key is not None
    assert key.name == "ops" and key.prefix == match.group(1)
    assert key.credits == 5 and key.requests_per_minute == 60 and key.is_admin
    assert key.images_per_minute is None


def test_create_defaults_and_image_rate(bv: Any, store: KeyStore) -> None:
    plain = create(bv, "plain")
    images = create(bv, "images", "--image-rate", "600/minute", "--rate", "10")
    plain_key = store.authenticate(plain)
    images_key = store.authenticate(images)
    assert plain_key is not None and images_key is not None
    assert plain_key.credits is None and not plain_key.is_admin
    assert plain_key.requests_per_minute is None and plain_key.images_per_minute is None
    assert images_key.images_per_minute == 600 and images_key.requests_per_minute == 10


def test_each_secret_is_different(bv: Any) -> None:
    secrets = {create(bv, f"k{i}") for i in range(5)}
    assert len(secrets) == 5
    assert len({SECRET.match(s).group(1) for s in secrets}) == 5  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--rate", "abc"], 2, "rate must look like 60/min, not 'abc'"),
        (["--rate", "0/min"], 2, "rate must look like"),
        (["--rate", "60/hour"], 2, "rate must look like"),
        (["--rate", "-5/min"], 2, "rate must look like"),
        (["--image-rate", "lots"], 2, "rate must look like"),
        (["--credits", "-1"], 2, "--credits cannot be negative"),
        (["--credits", "99999999999999999999"], 1, "credits must be between"),
        (["--rate", "99999999999/min"], 1, "rates must be between"),
    ],
)
def test_create_refuses_bad_options(
    bv: Any, store: KeyStore, args: list[str], code: int, message: str
) -> None:
    failed(bv("keys", "create", "--name", "bad", *args), code, message)
    if inspect(store.engine).has_table("api_keys"):  # some checks run before the store opens
        assert store.all_keys() == []


def test_create_refuses_a_duplicate_name(bv: Any, store: KeyStore) -> None:
    create(bv, "dup")
    failed(bv("keys", "create", "--name", "dup"), 1, "a key named 'dup' already exists")
    assert [k.name for k in store.all_keys()] == ["dup"]


@pytest.mark.parametrize("name", ["", "bad/name", "-leading-dash", "x" * 101, "tab\tname"])
def test_create_refuses_bad_names(bv: Any, name: str) -> None:
    result = bv("keys", "create", "--name", name)
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert not SECRET.search(result.stdout or "")


# --- keys list / revoke / add-credits / usage ------------------------------------------------


def test_list_shows_prefixes_never_secrets(bv: Any, store: KeyStore) -> None:
    first = create(bv, "first", "--credits", "3")
    second = create(bv, "second", "--admin", "--rate", "5/min")
    listing = ok(bv("keys", "list")).stdout
    as_json = ok(bv("keys", "list", "--json")).stdout
    for secret in (first, second):
        prefix, rest = SECRET.match(secret).groups()  # type: ignore[union-attr]
        assert f"bv_{prefix}_…" in listing
        assert prefix in as_json
        for text in (listing, as_json):
            assert secret not in text and rest not in text
    lines = listing.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[0] == "first" and "credits=3" in lines[0] and "user" in lines[0]
    assert lines[1].split()[0] == "second" and "admin" in lines[1] and "5 req/min" in lines[1]
    assert "credits=unlimited" in lines[1]
    assert "secret_hash" not in as_json


def test_list_on_an_empty_store(bv: Any) -> None:
    assert ok(bv("keys", "list")).stdout == ""


def test_revoke(bv: Any, store: KeyStore) -> None:
    secret = create(bv, "leaky")
    assert store.authenticate(secret) is not None
    line = ok(bv("keys", "revoke", "leaky")).stdout
    assert "revoked" in line and secret not in line
    assert store.authenticate(secret) is None
    assert store.by_name("leaky").revoked_at is not None
    # Revoking again is harmless and keeps the first time.
    first_time = store.by_name("leaky").revoked_at
    ok(bv("keys", "revoke", "leaky"))
    assert store.by_name("leaky").revoked_at == first_time
    assert "revoked" in ok(bv("keys", "list")).stdout


def test_add_credits(bv: Any, store: KeyStore) -> None:
    create(bv, "payer", "--credits", "5")
    assert "credits=15" in ok(bv("keys", "add-credits", "payer", "10")).stdout
    assert "credits=12" in ok(bv("keys", "add-credits", "payer", "-3")).stdout
    assert "credits=0" in ok(bv("keys", "add-credits", "payer", "-100")).stdout
    assert store.by_name("payer").credits == 0


def test_add_credits_to_an_unlimited_key_is_refused(bv: Any, store: KeyStore) -> None:
    create(bv, "free")
    failed(bv("keys", "add-credits", "free", "10"), 1, "unlimited credits")
    assert store.by_name("free").credits is None


def test_usage(bv: Any, store: KeyStore) -> None:
    create(bv, "busy", "--credits", "100")
    key = store.by_name("busy")
    store.record_usage(key.id, requests=2, images=5, credits=4)
    store.record_usage(key.id, requests=1, images=1, credits=1)
    output = ok(bv("keys", "usage", "busy")).stdout
    lines = output.splitlines()
    assert lines[0].startswith("busy")
    assert lines[1].split() == ["date", "requests", "images", "credits", "uncharged"]
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert lines[2].split() == [today, "3", "6", "5", "0"]
    assert len(lines) == 3


def test_usage_of_an_idle_key_has_no_rows(bv: Any) -> None:
    create(bv, "idle")
    assert len(ok(bv("keys", "usage", "idle")).stdout.splitlines()) == 2


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "revoke", "ghost"],
        ["keys", "add-credits", "ghost", "5"],
        ["keys", "usage", "ghost"],
    ],
)
def test_unknown_key(bv: Any, args: list[str]) -> None:
    create(bv, "real")
    failed(bv(*args), 1, "no key named 'ghost'")


def test_add_credits_needs_an_integer(bv: Any) -> None:
    create(bv, "real", "--credits", "1")
    result = bv("keys", "add-credits", "real", "lots")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_commands_share_one_database_file(bv: Any, data_dir: Path) -> None:
    create(bv, "on-disk")
    assert (data_dir / "batchvision.db").is_file()
    assert "on-disk" in ok(bv("keys", "list")).stdout


def test_data_dir_option_wins_over_the_environment(bv: Any, tmp_path: Path) -> None:
    other = tmp_path / "other"
    create(bv, "elsewhere", "--data-dir", str(other))
    assert (other / "batchvision.db").is_file()
    assert "elsewhere" in ok(bv("keys", "list", "--data-dir", str(other))).stdout
    assert ok(bv("keys", "list")).stdout == ""  # BATCHVISION_DATA_DIR's database has no keys


# --- serve refuses an open bind without auth -------------------------------------------------


@pytest.fixture
def uvicorn_runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record uvicorn.run calls instead of serving."""
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    return calls


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--host", "0.0.0.0"], {}),
        (["--host", "192.168.1.10"], {}),
        (["--host", "::"], {}),
        (["--host", "example.com"], {}),
        ([], {"BATCHVISION_HOST": "0.0.0.0"}),
    ],
)
def test_serve_refuses_a_public_bind_with_auth_disabled(
    bv: Any, uvicorn_runs: list[dict[str, Any]], args: list[str], env: dict[str, str]
) -> None:
    result = bv("serve", *args, BATCHVISION_AUTH="disabled", **env)
    message = failed(result, 2, "auth is disabled")
    assert "--insecure" in message
    assert uvicorn_runs == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_serve_binds_loopback_with_auth_disabled(
    bv: Any, uvicorn_runs: list[dict[str, Any]], host: str
) -> None:
    ok(bv("serve", "--host", host, "--port", "0", BATCHVISION_AUTH="disabled"))
    assert [call["host"] for call in uvicorn_runs] == [host]


def test_serve_insecure_allows_a_public_bind(bv: Any, uvicorn_runs: list[dict[str, Any]]) -> None:
    ok(bv("serve", "--host", "0.0.0.0", "--insecure", BATCHVISION_AUTH="disabled"))
    assert [call["host"] for call in uvicorn_runs] == ["0.0.0.0"]
    # uvicorn's own access line would carry query strings; batchvision logs its own instead.
    assert uvicorn_runs[0]["access_log"] is False


def test_serve_allows_a_public_bind_with_auth_required(
    bv: Any, uvicorn_runs: list[dict[str, Any]]
) -> None:
    ok(bv("serve", "--host", "0.0.0.0"))
    ok(bv("serve", "--host", "0.0.0.0", BATCHVISION_AUTH="required"))
    assert [call["host"] for call in uvicorn_runs] == ["0.0.0.0", "0.0.0.0"]


def test_serve_rejects_an_unknown_auth_mode(bv: Any, uvicorn_runs: list[dict[str, Any]]) -> None:
    result = bv("serve", BATCHVISION_AUTH="maybe")
    assert result.exit_code == 2
    assert "invalid settings" in result.stderr
    assert uvicorn_runs == []
