"""Rate limits: per-key token buckets for requests and images per minute, over real HTTP, plus the
bucket arithmetic with a fake clock."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from accounts_support import Keyed, analyze, bearer, error_code, keyed_server

from batchvision.accounts.ratelimit import RateLimiter
from conftest import LiveServer

RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


@pytest.fixture
def keyed(serve: Callable[..., LiveServer]) -> Keyed:
    return keyed_server(serve)


def assert_rate_limited(response: httpx.Response, limit: int) -> int:
    """Check a 429 and its headers; answer Retry-After."""
    assert response.status_code == 429, response.text
    assert error_code(response) == "rate_limited"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert response.headers["x-ratelimit-limit"] == str(limit)
    assert int(response.headers["x-ratelimit-remaining"]) >= 0
    assert 0 <= int(response.headers["x-ratelimit-reset"]) <= 60
    assert response.headers["x-request-id"]
    return retry_after


# --- over HTTP --------------------------------------------------------------------------------


def test_requests_per_minute(keyed: Keyed) -> None:
    key = keyed.store.create("rpm", requests_per_minute=3)
    with keyed.client() as client:
        oks = [client.get("/v1/skills", headers=bearer(key.secret)) for _ in range(3)]
        refused = client.get("/v1/skills", headers=bearer(key.secret))
    for response, remaining in zip(oks, (2, 1, 0), strict=True):
        assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-limit"] == "3"
        assert response.headers["x-ratelimit-remaining"] == str(remaining)
        assert 0 <= int(response.headers["x-ratelimit-reset"]) <= 60
        assert "retry-after" not in response.headers
    retry_after = assert_rate_limited(refused, 3)
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert retry_after <= 20  # one token comes back every 20 s on a 3/min bucket
    assert "3 requests per minute" in refused.json()["error"]["message"]


def test_every_keyed_route_counts_against_the_request_limit(keyed: Keyed) -> None:
    key = keyed.store.create("mixed-routes", requests_per_minute=4)
    with keyed.client() as client:
        headers = bearer(key.secret)
        assert client.get("/v1/usage", headers=headers).status_code == 200
        assert client.get("/v1/keys", headers=headers).status_code == 200
        assert client.get("/v1/models", headers=headers).status_code == 200
        assert analyze(client, key.secret).status_code == 200
        assert_rate_limited(analyze(client, key.secret), 4)
        assert_rate_limited(client.get("/v1/usage", headers=headers), 4)
        # Open routes are not metered.
        assert client.get("/healthz").status_code == 200


def test_limits_are_per_key(keyed: Keyed) -> None:
    first = keyed.store.create("first", requests_per_minute=1)
    second = keyed.store.create("second", requests_per_minute=1)
    unlimited = keyed.store.create("no-limit")
    with keyed.client() as client:
        assert client.get("/v1/skills", headers=bearer(first.secret)).status_code == 200
        assert_rate_limited(client.get("/v1/skills", headers=bearer(first.secret)), 1)
        assert client.get("/v1/skills", headers=bearer(second.secret)).status_code == 200
        for _ in range(5):
            response = client.get("/v1/skills", headers=bearer(unlimited.secret))
            assert response.status_code == 200
            assert not any(name in response.headers for name in RATE_HEADERS)


def test_unauthenticated_requests_do_not_drain_a_bucket(keyed: Keyed) -> None:
    key = keyed.store.create("guarded", requests_per_minute=2)
    wrong = key.secret[:-1] + ("A" if key.secret[-1] != "A" else "B")
    with keyed.client() as client:
        for _ in range(5):
            assert client.get("/v1/skills", headers=bearer(wrong)).status_code == 401
        response = client.get("/v1/skills", headers=bearer(key.secret))
        assert response.status_code == 200
        assert response.headers["x-ratelimit-remaining"] == "1"


def test_images_per_minute(keyed: Keyed) -> None:
    key = keyed.store.create("ipm", images_per_minute=5, credits=100)
    with keyed.client() as client:
        assert analyze(client, key.secret, images=3).status_code == 200
        refused = analyze(client, key.secret, images=3)
        retry_after = assert_rate_limited(refused, 5)
        assert refused.headers["x-ratelimit-remaining"] == "2"
        assert retry_after <= 12  # 1 missing image token at 5/min
        assert "5 images per minute" in refused.json()["error"]["message"]
        # What is left in the bucket can still be used.
        assert analyze(client, key.secret, images=2).status_code == 200
        assert_rate_limited(analyze(client, key.secret, images=1), 5)
        # Reads carry no images and are not held back by the image bucket.
        assert client.get("/v1/skills", headers=bearer(key.secret)).status_code == 200
    assert keyed.store.get(key.info.id).credits == 95  # type: ignore[union-attr]


def test_a_request_bigger_than_the_whole_image_bucket_is_422_and_never_retried(
    keyed: Keyed,
) -> None:
    key = keyed.store.create("tiny-bucket", images_per_minute=2, credits=10)
    with keyed.client() as client:
        refused = analyze(client, key.secret, images=3)
        assert refused.status_code == 422, refused.text
        assert error_code(refused) == "exceeds_rate_limit"
        assert "retry-after" not in refused.headers  # waiting never makes it fit
        message = refused.json()["error"]["message"]
        assert "3 images" in message and "2 images per minute" in message
        # It took no tokens and no credits: the whole bucket is still there.
        assert analyze(client, key.secret, images=2).status_code == 200
    assert keyed.store.get(key.info.id).credits == 8  # type: ignore[union-attr]


def test_a_429_consumes_no_credits(keyed: Keyed) -> None:
    key = keyed.store.create("limited-and-metered", requests_per_minute=2, credits=10)
    image_key = keyed.store.create("image-limited", images_per_minute=2, credits=10)
    with keyed.client() as client:
        assert analyze(client, key.secret).status_code == 200
        assert analyze(client, key.secret).status_code == 200
        for _ in range(3):
            assert_rate_limited(analyze(client, key.secret, images=2), 2)
        assert analyze(client, image_key.secret, images=2).status_code == 200
        assert_rate_limited(analyze(client, image_key.secret, images=2), 2)
        report = client.get("/v1/usage", headers=bearer(image_key.secret)).json()
    assert keyed.store.get(key.info.id).credits == 8  # type: ignore[union-attr]
    assert keyed.store.get(image_key.info.id).credits == 8  # type: ignore[union-attr]
    assert report["totals"] == {"requests": 1, "images": 2, "credits": 2, "uncharged_credits": 0}


def test_429_comes_before_402(keyed: Keyed) -> None:
    """A rate-limited (or hopelessly large) request is refused before credits are looked at."""
    key = keyed.store.create("broke-and-limited", requests_per_minute=1, credits=0)
    hopeless = keyed.store.create("broke-and-oversized", images_per_minute=1, credits=0)
    with keyed.client() as client:
        assert client.get("/v1/skills", headers=bearer(key.secret)).status_code == 200
        assert_rate_limited(analyze(client, key.secret, images=1), 1)
        assert error_code(analyze(client, hopeless.secret, images=2)) == "exceeds_rate_limit"
        assert analyze(client, hopeless.secret, images=1).status_code == 402


# --- the bucket with a fake clock -------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_starts_full_and_drains() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    decisions = [limiter.take(1, "requests", 3) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert [d.retry_after_s for d in decisions] == [0, 0, 0, 20]
    assert decisions[0].limit == 3
    assert decisions[0].reset_s == 20  # one token short of full
    assert decisions[2].reset_s == 60
    assert "Retry-After" not in decisions[0].headers()
    assert decisions[3].headers() == {
        "X-RateLimit-Limit": "3",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "60",
        "Retry-After": "20",
    }


def test_refill_after_twenty_seconds_gives_one_token_back() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    for _ in range(3):
        assert limiter.take(7, "requests", 3).allowed
    clock.now += 19.0
    early = limiter.take(7, "requests", 3)
    assert not early.allowed and early.retry_after_s == 1
    clock.now += 1.0
    back = limiter.take(7, "requests", 3)
    assert back.allowed and back.remaining == 0
    assert not limiter.take(7, "requests", 3).allowed


def test_refill_never_exceeds_capacity() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    assert limiter.take(1, "images", 5, amount=5).allowed
    clock.now += 3600.0
    decision = limiter.take(1, "images", 5, amount=1)
    assert decision.allowed and decision.remaining == 4
    assert not limiter.take(1, "images", 5, amount=5).allowed


def test_a_refused_take_costs_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    assert limiter.take(1, "images", 10, amount=6).allowed
    refused = limiter.take(1, "images", 10, amount=6)
    assert not refused.allowed and refused.remaining == 4
    assert refused.retry_after_s == 12  # 2 missing tokens at 10/min
    assert limiter.take(1, "images", 10, amount=4).allowed


def test_a_take_bigger_than_capacity_says_a_minute_at_most() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    fresh = limiter.take(1, "images", 5, amount=50)
    assert not fresh.allowed
    assert 1 <= fresh.retry_after_s <= 60
    assert fresh.remaining == 5  # nothing was taken
    limiter.take(1, "images", 5, amount=5)
    drained = limiter.take(1, "images", 5, amount=50)
    assert not drained.allowed and drained.retry_after_s == 60


def test_buckets_are_separate_per_key_and_kind() -> None:
    limiter = RateLimiter(FakeClock())
    assert limiter.take(1, "requests", 1).allowed
    assert not limiter.take(1, "requests", 1).allowed
    assert limiter.take(2, "requests", 1).allowed
    assert limiter.take(1, "images", 1).allowed


def test_a_changed_limit_starts_a_new_bucket() -> None:
    limiter = RateLimiter(FakeClock())
    assert limiter.take(1, "requests", 1).allowed
    assert not limiter.take(1, "requests", 1).allowed
    raised = limiter.take(1, "requests", 10)
    assert raised.allowed and raised.limit == 10 and raised.remaining == 9


def test_fractional_tokens_round_down_in_remaining() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    for _ in range(60):
        assert limiter.take(1, "requests", 60).allowed
    clock.now += 1.5  # 1.5 tokens back at 1/s
    decision = limiter.take(1, "requests", 60)
    assert decision.allowed and decision.remaining == 0
    refused = limiter.take(1, "requests", 60)
    assert not refused.allowed and refused.retry_after_s == 1
