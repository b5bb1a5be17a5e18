"""Credits over real HTTP against the real SQLite store: one credit per image reserved before
work starts, 402 when short, refunds for images that fail before inference, exact under
concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from accounts_support import (
    REFUSED_URL,
    Keyed,
    analyze,
    analyze_body,
    bearer,
    error_code,
    good_image,
    keyed_server,
)

from batchvision.accounts.keys import KeyStore
from batchvision.accounts.scoping import Principal
from batchvision.accounts.service import Accounts
from batchvision.core.db import make_engine, migrate
from conftest import LiveServer, coco_image, make_settings
from local_http import RouteHandler, serve_routes


@pytest.fixture
def keyed(serve: Callable[..., LiveServer]) -> Keyed:
    return keyed_server(serve, max_images_per_request=4)


def balance(keyed: Keyed, key_id: int) -> int | None:
    key = keyed.store.get(key_id)
    assert key is not None
    return key.credits


def usage(client: httpx.Client, secret: str) -> dict[str, Any]:
    response = client.get("/v1/usage", headers=bearer(secret))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


# --- exactness under concurrency -------------------------------------------------------------


def test_fifty_concurrent_requests_on_twenty_credits_charge_exactly_twenty(
    keyed: Keyed,
) -> None:
    key = keyed.store.create("contended", credits=20)
    body = analyze_body(1)
    barrier = threading.Barrier(50, timeout=30)

    def one(_: int) -> tuple[int, str | None]:
        with keyed.live.client() as client:
            client.get("/healthz")  # connect before the barrier, so the posts really overlap
            barrier.wait()
            response = client.post("/v1/analyze", json=body, headers=bearer(key.secret))
            code = error_code(response) if response.status_code != 200 else None
            return response.status_code, code

    with ThreadPoolExecutor(50) as pool:
        outcomes = list(pool.map(one, range(50)))

    statuses = sorted(status for status, _ in outcomes)
    assert statuses.count(200) == 20, outcomes
    assert statuses.count(402) == 30, outcomes
    assert {code for status, code in outcomes if status == 402} == {"insufficient_credits"}
    assert balance(keyed, key.info.id) == 0
    with keyed.client() as client:
        report = usage(client, key.secret)
    assert report["balance"] == 0
    assert report["totals"] == {"requests": 20, "images": 20, "credits": 20, "uncharged_credits": 0}
    assert report["days"] == [
        {"date": today(), "requests": 20, "images": 20, "credits": 20, "uncharged_credits": 0}
    ]


def test_concurrent_multi_image_requests_never_overdraw(keyed: Keyed) -> None:
    """20 concurrent 3-image requests on 10 credits: exactly 3 succeed, 1 credit is left."""
    key = keyed.store.create("multi", credits=10)
    body = analyze_body(3)
    barrier = threading.Barrier(20, timeout=30)

    def one(_: int) -> int:
        with keyed.live.client() as client:
            client.get("/healthz")
            barrier.wait()
            return client.post("/v1/analyze", json=body, headers=bearer(key.secret)).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(one, range(20)))
    assert statuses.count(200) == 3 and statuses.count(402) == 17, statuses
    assert balance(keyed, key.info.id) == 1


# --- refunds ----------------------------------------------------------------------------------


def test_images_failing_before_inference_are_refunded(keyed: Keyed) -> None:
    key = keyed.store.create("mixed", credits=10)
    body = {
        "images": [
            good_image("good"),
            {"data": "bm90IGFuIGltYWdl", "id": "undecodable"},  # base64 of "not an image"
            {"url": REFUSED_URL, "id": "refused"},
        ],
        "tasks": ["metadata"],
    }
    with keyed.client() as client:
        response = client.post("/v1/analyze", json=body, headers=bearer(key.secret))
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["status"] for r in results] == ["ok", "error", "error"]
        assert results[1]["errors"][0]["code"] == "image_decode_failed"
        assert results[2]["errors"][0]["code"] == "url_not_allowed"
        assert balance(keyed, key.info.id) == 9  # 3 reserved, 2 handed back
        report = usage(client, key.secret)
    assert report["balance"] == 9
    assert report["totals"] == {"requests": 1, "images": 1, "credits": 1, "uncharged_credits": 0}


def test_a_request_whose_images_all_fail_costs_nothing_but_counts(keyed: Keyed) -> None:
    key = keyed.store.create("all-bad", credits=2)
    body = {"images": [{"url": REFUSED_URL}, {"data": "AAAA"}], "tasks": ["metadata"]}
    with keyed.client() as client:
        response = client.post("/v1/analyze", json=body, headers=bearer(key.secret))
        assert response.status_code == 200, response.text
        assert response.json()["summary"] == {"images": 2, "succeeded": 0, "failed": 2}
        assert balance(keyed, key.info.id) == 2
        assert usage(client, key.secret)["totals"] == {
            "requests": 1,
            "images": 0,
            "credits": 0,
            "uncharged_credits": 0,
        }


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"images": [good_image()], "tasks": ["no-such-skill"]}, 400, "unknown_skill"),
        (analyze_body(5), 413, "too_many_images"),  # the server allows 4
        ({"images": [], "tasks": ["metadata"]}, 400, "invalid_request"),
        ({"images": "nope"}, 400, "invalid_request"),
        ({"images": [good_image()], "tasks": ["metadata", "metadata"]}, 400, "invalid_request"),
        (
            {"images": [good_image()], "tasks": [{"skill": "metadata", "params": {"x": 1}}]},
            422,
            "invalid_parameter",
        ),
    ],
    ids=["unknown-skill", "too-many-images", "no-images", "images-not-a-list", "repeated", "param"],
)
def test_requests_refused_as_a_whole_charge_nothing(
    keyed: Keyed, body: dict[str, Any], status: int, code: str
) -> None:
    key = keyed.store.create("refused", credits=3)
    with keyed.client() as client:
        response = client.post("/v1/analyze", json=body, headers=bearer(key.secret))
        assert response.status_code == status, response.text
        assert error_code(response) == code
        assert balance(keyed, key.info.id) == 3
        report = usage(client, key.secret)
    assert report["days"] == []
    assert report["totals"] == {"requests": 0, "images": 0, "credits": 0, "uncharged_credits": 0}


def test_unreadable_body_charges_nothing(keyed: Keyed) -> None:
    key = keyed.store.create("garbage", credits=3)
    with keyed.client() as client:
        response = client.post(
            "/v1/analyze",
            content=b"{not json",
            headers={**bearer(key.secret), "Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert balance(keyed, key.info.id) == 3


def test_short_balance_is_402_and_leaves_it_untouched(keyed: Keyed) -> None:
    key = keyed.store.create("short", credits=2)
    with keyed.client() as client:
        response = analyze(client, key.secret, images=3)
        assert response.status_code == 402, response.text
        assert error_code(response) == "insufficient_credits"
        assert "3" in response.json()["error"]["message"]  # says what the request needs
        assert response.headers["x-request-id"]
        assert balance(keyed, key.info.id) == 2
        assert usage(client, key.secret)["days"] == []
        # The balance still pays for what it covers.
        assert analyze(client, key.secret, images=2).status_code == 200
        assert balance(keyed, key.info.id) == 0
        empty = analyze(client, key.secret, images=1)
        assert empty.status_code == 402 and error_code(empty) == "insufficient_credits"
        # Topping up makes the key work again at once.
        keyed.store.add_credits("short", 1)
        assert analyze(client, key.secret, images=1).status_code == 200
        assert balance(keyed, key.info.id) == 0


def test_zero_credit_key_authenticates_but_cannot_analyze(keyed: Keyed) -> None:
    key = keyed.store.create("broke", credits=0)
    with keyed.client() as client:
        assert client.get("/v1/skills", headers=bearer(key.secret)).status_code == 200
        assert usage(client, key.secret)["balance"] == 0
        assert analyze(client, key.secret).status_code == 402


def test_unlimited_key_always_works_and_records_usage(keyed: Keyed) -> None:
    key = keyed.store.create("unlimited")
    with keyed.client() as client:
        for images in (1, 4, 2):
            assert analyze(client, key.secret, images=images).status_code == 200
        report = usage(client, key.secret)
    assert balance(keyed, key.info.id) is None
    assert report["balance"] == "unlimited"
    assert report["totals"] == {"requests": 3, "images": 7, "credits": 7, "uncharged_credits": 0}


def test_usage_by_day_adds_up(keyed: Keyed) -> None:
    key = keyed.store.create("daily", credits=100)
    with keyed.client() as client:
        for images in (1, 2, 3):
            assert analyze(client, key.secret, images=images).status_code == 200
        mixed = {"images": [good_image(), {"url": REFUSED_URL}], "tasks": ["metadata"]}
        assert client.post("/v1/analyze", json=mixed, headers=bearer(key.secret)).status_code == 200
        assert analyze(client, key.secret, images=5).status_code == 413  # refused: not counted
        report = usage(client, key.secret)
        narrow = client.get("/v1/usage", params={"days": 1}, headers=bearer(key.secret)).json()
    assert report["key"] == {"id": key.info.id, "name": "daily", "prefix": key.info.prefix}
    assert report["balance"] == 100 - 7
    assert report["days"] == [
        {"date": today(), "requests": 4, "images": 7, "credits": 7, "uncharged_credits": 0}
    ]
    assert report["totals"] == {"requests": 4, "images": 7, "credits": 7, "uncharged_credits": 0}
    assert narrow["days"] == report["days"]


def test_credits_per_image_setting_is_honoured(serve: Callable[..., LiveServer]) -> None:
    keyed = keyed_server(serve, credits_per_image=3)
    key = keyed.store.create("pricey", credits=10)
    with keyed.client() as client:
        assert analyze(client, key.secret, images=2).status_code == 200  # 6
        assert balance(keyed, key.info.id) == 4
        assert analyze(client, key.secret, images=2).status_code == 402  # needs 6, has 4
        mixed = {"images": [good_image(), {"url": REFUSED_URL}], "tasks": ["metadata"]}
        # 6 reserved... only 4 on hand: refused as a whole.
        assert client.post("/v1/analyze", json=mixed, headers=bearer(key.secret)).status_code == 402
        assert analyze(client, key.secret, images=1).status_code == 200
        assert balance(keyed, key.info.id) == 1
        assert usage(client, key.secret)["totals"] == {
            "requests": 2,
            "images": 3,
            "credits": 9,
            "uncharged_credits": 0,
        }


# --- the meter itself -------------------------------------------------------------------------


def test_a_request_failing_after_its_reservation_is_fully_refunded(tmp_path: Path) -> None:
    """A request that fails as a whole after credits were reserved (overload, a crash) gets them
    all back and records no usage."""
    settings = make_settings(tmp_path, auth="required")
    engine = make_engine(settings)
    migrate(engine)
    store = KeyStore(engine)
    key = store.create("meter", credits=5)

    def balance_now() -> int | None:
        info = store.get(key.info.id)
        assert info is not None
        return info.credits

    async def scenario() -> None:
        accounts = Accounts(settings, engine)
        principal = Principal.of(key.info)
        try:
            seen: list[int | None] = []

            async def failing() -> None:
                async with accounts.metered(principal, images=3):
                    seen.append(balance_now())
                    raise RuntimeError("boom")

            with pytest.raises(RuntimeError, match="boom"):
                await failing()
            assert seen == [2]  # reserved while it ran
            async with accounts.metered(principal, images=3) as meter:
                meter.refund_images(1)
                meter.refund_images(5)  # never more than the request's images
            assert meter.processed_images == 0 and meter.refunded_credits == 3
        finally:
            await accounts.close()

    asyncio.run(scenario())
    assert store.get(key.info.id).credits == 5  # type: ignore[union-attr]
    assert store.usage(key.info.id) == [
        {"date": today(), "requests": 1, "images": 0, "credits": 0, "uncharged_credits": 0}
    ]


# --- revocation -------------------------------------------------------------------------------


def test_an_analyze_request_in_flight_when_its_key_is_revoked_finishes_and_is_billed(
    serve: Callable[..., LiveServer],
) -> None:
    """The chosen behaviour (README, Accounts): a request authorized before the revoke finishes
    and pays; the next one with the key is 401. The image URL answers only after the revoke, so
    the request is certainly in flight when it lands."""
    fetched, release = threading.Event(), threading.Event()

    def slow_photo(handler: RouteHandler) -> None:
        fetched.set()
        release.wait(30)
        handler.send(200, coco_image(), Content_Type="image/jpeg")

    with serve_routes({"/photo.jpg": slow_photo}) as base:
        keyed = keyed_server(serve, url_allow_hosts=["127.0.0.1"])
        key = keyed.store.create("in-flight", credits=3)
        body = {"images": [{"url": f"{base}/photo.jpg", "id": "late"}], "tasks": ["metadata"]}
        with ThreadPoolExecutor(1) as pool, keyed.client() as client:
            answer = pool.submit(client.post, "/v1/analyze", json=body, headers=bearer(key.secret))
            assert fetched.wait(30)
            keyed.store.revoke("in-flight")
            release.set()
            response = answer.result(60)
            after = analyze(client, key.secret)
    assert response.status_code == 200, response.text
    assert response.json()["summary"]["succeeded"] == 1
    assert after.status_code == 401 and error_code(after) == "unauthorized"
    assert balance(keyed, key.info.id) == 2
    assert keyed.store.usage(key.info.id) == [
        {"date": today(), "requests": 1, "images": 1, "credits": 1, "uncharged_credits": 0}
    ]
