"""Secrets never reach the logs or the database; the access log names the key by its prefix.

Every server log record (batchvision and uvicorn, at DEBUG) is captured while one key makes good,
401, 402 and 429 requests; then the raw bytes of the SQLite files are searched.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from accounts_support import analyze, bearer, keyed_server, raw_request

from conftest import LiveServer

ACCESS_LINE = re.compile(
    r"^(?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) key=(?P<key>\S+) "
    r"images=(?P<images>\d+) (?P<ms>\d+\.\d)ms id=(?P<id>[A-Za-z0-9._:-]+)$"
)
# The root logger catches whatever else the server logs. uvicorn's own access log stays off as
# `serve` configures it (access_log=False): a handler on "uvicorn.access" would turn it back on.
SERVER_LOGGERS = ("", "batchvision", "uvicorn", "uvicorn.error")
HANDLED_AT = ("", "uvicorn")  # the others propagate to one of these ("uvicorn" does not)
CLIENT_LOGGERS = ("httpx", "httpcore")  # this test's own HTTP client, not the server


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def server_records(self) -> list[logging.LogRecord]:
        return [r for r in self.records if not r.name.startswith(CLIENT_LOGGERS)]

    def text(self) -> str:
        """Everything a log file could hold: formatted messages with tracebacks and extras."""
        parts = []
        for record in self.server_records():
            parts.append(self.format(record))
            parts.append(repr(record.args))
            parts.append(repr(record.__dict__))
        return "\n".join(parts)


@contextmanager
def server_logs() -> Iterator[_Records]:
    """Capture every record of the server's loggers at DEBUG (uvicorn's do not propagate)."""
    handler = _Records()
    saved = []
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        if name in HANDLED_AT:
            logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


def random_part(secret: str) -> str:
    return secret.split("_", 2)[2]


def data_files(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file()}


def test_secrets_stay_out_of_logs_and_the_access_log_names_the_prefix(
    serve: Callable[..., LiveServer],
) -> None:
    keyed = keyed_server(serve)
    key = keyed.store.create("logged", credits=1, requests_per_minute=5)
    admin = keyed.store.create("root", is_admin=True)
    wrong = key.secret[:12] + ("A" if key.secret[12] != "A" else "B") + key.secret[13:]
    prefix = key.info.prefix

    with server_logs() as logs, keyed.client() as client:
        good = analyze(client, key.secret)  # 200, spends the only credit
        broke = analyze(client, key.secret)  # 402
        denied = client.get("/v1/skills", headers=bearer(wrong))  # 401
        misplaced = client.get("/v1/skills", headers={"Authorization": f"Basic {key.secret}"})
        queried = client.get("/v1/skills", params={"key": key.secret})  # 401, secret in a query
        usage = client.get("/v1/usage", headers=bearer(key.secret))
        skills = client.get("/v1/skills", headers=bearer(key.secret))
        for_models = client.get("/v1/models", headers=bearer(key.secret))
        limited = client.get("/v1/skills", headers=bearer(key.secret))  # 429: sixth request
        created = client.post("/v1/keys", json={"name": "via-http"}, headers=bearer(admin.secret))
        # Bytes the HTTP parser refuses, carrying the secret.
        raw_request(
            keyed.live.url,
            f"GET /v1/skills HTTP/1.1\r\nAuthorization: Bearer {key.secret}\x0b".encode(),
        )

    statuses = [
        r.status_code
        for r in (good, broke, denied, misplaced, queried, usage, skills, for_models, limited)
    ]
    assert statuses == [200, 402, 401, 401, 401, 200, 200, 200, 429]
    assert created.status_code == 201
    new_secret = created.json()["secret"]

    assert not logging.getLogger("uvicorn.access").hasHandlers()
    text = logs.text()
    assert "Invalid HTTP request" in text  # the parser's refusal was logged, without the secret
    for secret in (key.secret, wrong, admin.secret, new_secret):
        assert secret not in text
        assert random_part(secret) not in text

    access = [r.getMessage() for r in logs.records if r.name == "batchvision.access"]
    parsed = [ACCESS_LINE.match(line) for line in access]
    assert all(parsed), access
    lines = [m.groupdict() for m in parsed if m]
    responses = [good, broke, denied, misplaced, queried, usage, skills, for_models, limited]
    assert len(lines) == len(responses) + 1  # plus the admin's POST; the raw one never got in
    for line, response in zip(lines, responses, strict=False):
        assert line["status"] == str(response.status_code)
        assert line["path"] == response.request.url.path  # the path only, no query string
        assert line["id"] == response.headers["x-request-id"]
    assert [line["key"] for line in lines] == [
        prefix,
        prefix,
        "-",
        "-",
        "-",
        prefix,
        prefix,
        prefix,
        prefix,
        admin.info.prefix,
    ]
    assert [line["images"] for line in lines[:2]] == ["1", "1"]
    assert lines[0]["method"] == "POST" and lines[0]["path"] == "/v1/analyze"


def test_request_ids_on_every_response(serve: Callable[..., LiveServer]) -> None:
    keyed = keyed_server(serve)
    key = keyed.store.create("ids", credits=0)
    with keyed.client() as client:
        responses: list[httpx.Response] = [
            client.get("/healthz"),
            client.get("/v1/skills"),
            client.get("/v1/skills", headers=bearer(key.secret)),
            analyze(client, key.secret),
            client.get("/v1/keys/999", headers=bearer(key.secret)),
            client.get("/no-such-route"),
        ]
        echoed = client.get("/v1/skills", headers={"X-Request-ID": "abc-123"})
        refused = client.get("/v1/skills", headers={"X-Request-ID": "bad id with spaces"})
    assert [r.status_code for r in responses] == [200, 401, 200, 402, 404, 404]
    ids = [r.headers["x-request-id"] for r in responses]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    assert echoed.headers["x-request-id"] == "abc-123"
    assert refused.headers["x-request-id"] != "bad id with spaces"


def test_the_database_holds_hashes_never_secrets(serve: Callable[..., LiveServer]) -> None:
    keyed = keyed_server(serve)
    data_dir = keyed.live.settings.data_dir
    keys = [
        keyed.store.create("db-user", credits=5),
        keyed.store.create("db-admin", is_admin=True),
    ]
    with keyed.client() as client:
        assert analyze(client, keys[0].secret).status_code == 200
        made = client.post("/v1/keys", json={"name": "db-http"}, headers=bearer(keys[1].secret))
        assert made.status_code == 201
    secrets = [k.secret for k in keys] + [made.json()["secret"]]

    def check(files: dict[str, bytes]) -> None:
        assert "batchvision.db" in files
        everything = b"".join(files.values())
        for secret in secrets:
            assert secret.encode() not in everything
            assert random_part(secret).encode() not in everything
            digest = hashlib.sha256(secret.encode()).hexdigest()
            assert digest.encode() in everything
            assert secret.split("_")[1].encode() in everything  # the public prefix is stored

    check(data_files(data_dir))  # live: recent writes sit in the -wal file
    keyed.live.stop()
    keyed.store.engine.dispose()
    check(data_files(data_dir))  # stopped: checkpointed into the main file

    with sqlite3.connect(data_dir / "batchvision.db") as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(api_keys)")}
        rows = db.execute("SELECT name, prefix, secret_hash FROM api_keys ORDER BY id").fetchall()
    assert "secret_hash" in columns
    # Secrets are kept only as hashes (the key's, and its OAuth client secret's).
    assert not any("secret" in c and not c.endswith("secret_hash") for c in columns), columns
    assert {"name", "prefix", "credits", "revoked_at", "is_admin"} <= columns
    assert [r[0] for r in rows] == ["db-user", "db-admin", "db-http"]
    for (_, prefix, stored), secret in zip(rows, secrets, strict=True):
        assert re.fullmatch(r"[0-9a-f]{64}", stored)
        assert stored == hashlib.sha256(secret.encode()).hexdigest()
        assert secret.startswith(f"bv_{prefix}_")
