"""Rate limits shared through Redis (a real redis-server on 127.0.0.1): one bucket per key
across limiters and across two API replicas, Redis's clock, the fall-back while Redis is down,
and the start-up errors of a misconfigured store."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from batchvision.accounts.keys import KeyStore
from batchvision.accounts.ratelimit import RateLimiter, RedisRateLimiter, make_limiter
from batchvision.core.db import make_engine
from conftest import make_settings, start_server
from redis_server import RedisServer, start_redis


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


def test_two_limiters_share_one_bucket_per_key_and_kind(redis_server: RedisServer) -> None:
    replicas = [RedisRateLimiter(redis_server.url, prefix="t1:") for _ in range(2)]
    decisions = [replicas[i % 2].take(7, "requests", 5) for i in range(8)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    refused = decisions[-1]
    assert refused.retry_after_s in (11, 12) and refused.headers()["Retry-After"] == str(
        refused.retry_after_s
    )  # one token comes back every 12 s at 5/min
    assert replicas[0].take(8, "requests", 5).allowed  # another key has its own bucket
    assert replicas[1].take(7, "images", 5, amount=5).allowed  # and another kind
    for limiter in replicas:
        limiter.close()


def test_a_refused_take_costs_nothing_and_a_new_limit_starts_full(
    redis_server: RedisServer,
) -> None:
    limiter = RedisRateLimiter(redis_server.url, prefix="t2:")
    assert limiter.take(1, "images", 10, amount=8).allowed
    assert not limiter.take(1, "images", 10, amount=5).allowed  # 2 left: refused, none taken
    assert limiter.take(1, "images", 10, amount=2).allowed
    assert limiter.take(1, "images", 20, amount=20).allowed  # the key's limit was raised
    limiter.close()


def test_while_redis_is_down_each_process_limits_alone(caplog: pytest.LogCaptureFixture) -> None:
    server = start_redis()
    limiter = RedisRateLimiter(server.url, prefix="t3:")
    assert limiter.take(1, "requests", 3).allowed
    server.stop()
    with caplog.at_level("WARNING"):
        during = [limiter.take(1, "requests", 3).allowed for _ in range(4)]
    assert during == [True, True, True, False]  # the process's own bucket, still a limit
    assert "rate-limit store unreachable" in caplog.text
    assert caplog.text.count("rate-limit store unreachable") == 1  # not once per request
    limiter.close()


def test_a_key_gets_its_limit_across_two_replicas_not_twice_it(
    redis_server: RedisServer, tmp_path: Any
) -> None:
    settings = make_settings(
        tmp_path, auth="required", rate_limit_store="redis", broker_url=redis_server.url
    )
    replicas = [start_server(settings), start_server(settings)]  # one database, one Redis
    try:
        key = KeyStore(make_engine(settings)).create("shared", requests_per_minute=4)
        headers = {"Authorization": f"Bearer {key.secret}"}
        statuses = []
        for i in range(8):
            with replicas[i % 2].client(headers=headers) as client:
                statuses.append(client.get("/v1/usage").status_code)
        assert statuses == [200] * 4 + [429] * 4
    finally:
        for replica in replicas:
            replica.stop()


def test_a_redis_store_needs_a_url_and_its_client(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError, match="needs broker_url"):
        make_settings(tmp_path, rate_limit_store="redis")
    settings = make_settings(tmp_path, rate_limit_store="redis", broker_url="redis://127.0.0.1:1")
    monkeypatch.setitem(sys.modules, "redis", None)  # as if batchvision[redis] were not installed
    with pytest.raises(RuntimeError, match=r"pip install 'batchvision\[redis\]'"):
        make_limiter(settings)
    assert isinstance(make_limiter(make_settings(tmp_path)), RateLimiter)
