"""Transport to a backend, against the stand-in: retries, Retry-After, the attempt budget, the
circuit breaker, timeouts, streams, and the bound on calls in flight."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.models.vlm.transport import CallPolicy, CircuitBreaker, Transport
from vlm_standin import VlmStandin

FAST = CallPolicy(
    concurrency=2, timeout_s=1.0, attempts=3, retry_base_s=0.01, breaker_failures=4, cooldown_s=0.3
)


def transport(standin: VlmStandin, policy: CallPolicy = FAST) -> Transport:
    return Transport("test", standin.url, {"Authorization": "Bearer k"}, policy)


def caption(t: Transport) -> Any:
    body = {"image_url": _tiny(), "length": "short", "stream": False}
    return asyncio.run(t.post_json("caption", body))


def _tiny() -> str:
    import base64

    from vlm_standin import square_image

    return "data:image/jpeg;base64," + base64.b64encode(square_image(40, 30, (0, 0, 4, 4))).decode()


def test_transient_failures_are_retried_and_counted(vlm_standin: VlmStandin) -> None:
    vlm_standin.fail_next("500", "drop")
    t = transport(vlm_standin)
    assert caption(t)["caption"].startswith("a short caption of 40x30")
    assert (t.counters.calls, t.counters.attempts, t.counters.retries) == (1, 3, 2)
    assert [r["fault"] for r in vlm_standin.requests] == ["500", "drop", ""]


def test_retry_after_is_honoured(vlm_standin: VlmStandin) -> None:
    vlm_standin.state.retry_after = "0.6"
    vlm_standin.fail_next("429")
    start = time.monotonic()
    caption(transport(vlm_standin))
    assert time.monotonic() - start >= 0.6


def test_after_the_attempt_budget_the_call_fails_naming_the_last_failure(
    vlm_standin: VlmStandin,
) -> None:
    vlm_standin.fail_next("500", "500", "503")
    with pytest.raises(BatchVisionError) as caught:
        caption(transport(vlm_standin))
    assert caught.value.code is ErrorCode.PROCESSING_ERROR
    assert "after 3 attempts" in caught.value.message and "HTTP 503" in caught.value.message


def test_a_client_error_is_not_retried(vlm_standin: VlmStandin) -> None:
    t = transport(vlm_standin)
    with pytest.raises(BatchVisionError) as caught:
        asyncio.run(t.post_json("nowhere", {}))
    assert "HTTP 404" in caught.value.message and t.counters.attempts == 1


def test_a_timeout_is_retried(vlm_standin: VlmStandin) -> None:
    vlm_standin.state.hang_s = 1.5
    vlm_standin.fail_next("timeout")
    policy = CallPolicy(concurrency=2, timeout_s=0.3, attempts=2, retry_base_s=0.01)
    t = transport(vlm_standin, policy)
    assert "caption" in caption(t)
    assert t.counters.attempts == 2


def test_a_malformed_answer_fails_at_once_quoting_it(vlm_standin: VlmStandin) -> None:
    vlm_standin.fail_next("malformed")
    with pytest.raises(BatchVisionError) as caught:
        caption(transport(vlm_standin))
    assert (
        caught.value.code is ErrorCode.PROCESSING_ERROR and '{"choices": [' in caught.value.message
    )


def test_the_breaker_opens_fails_fast_then_probes_and_closes(vlm_standin: VlmStandin) -> None:
    t = transport(vlm_standin)
    vlm_standin.fail_next(*["500"] * 4)
    with pytest.raises(BatchVisionError):
        caption(t)  # 3 failed attempts
    with pytest.raises(BatchVisionError):
        caption(t)  # the 4th opens the breaker, then it fails fast
    assert t.breaker.state == "open"
    sent = len(vlm_standin.requests)
    with pytest.raises(BatchVisionError) as caught:
        caption(t)
    assert (
        caught.value.code is ErrorCode.MODEL_UNAVAILABLE and "circuit open" in caught.value.message
    )
    assert len(vlm_standin.requests) == sent  # failed fast: nothing reached the backend
    time.sleep(0.35)
    assert t.breaker.state == "half_open"
    assert "caption" in caption(t)  # the probe succeeds
    assert t.breaker.state == "closed"


def test_breaker_half_open_lets_one_probe_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker(2, 5.0, clock=lambda: now[0])
    breaker.failed("x")
    assert breaker.allow()
    breaker.failed("y")
    assert not breaker.allow()
    now[0] = 5.0
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failed("z")  # the probe failed: open again for a full cool-down
    now[0] = 9.0
    assert not breaker.allow()


def test_calls_in_flight_are_bounded_by_the_concurrency(vlm_standin: VlmStandin) -> None:
    vlm_standin.state.latency_s = 0.2
    t = transport(vlm_standin)
    body = {"image_url": _tiny(), "length": "short", "stream": False}

    async def many() -> float:
        start = time.monotonic()
        await asyncio.gather(*(t.post_json("caption", body) for _ in range(6)))
        return time.monotonic() - start

    elapsed = asyncio.run(many())
    assert 0.6 <= elapsed < 1.2  # 6 calls, 2 at a time, 0.2 s each


def test_a_stream_yields_events_and_a_cut_stream_is_an_error(vlm_standin: VlmStandin) -> None:
    t = transport(vlm_standin)
    body = {"image_url": _tiny(), "length": "normal", "stream": True}

    async def collect() -> list[str]:
        return [data async for data in t.stream_events("caption", body)]

    events = asyncio.run(collect())
    assert events[-1] == '{"chunk": "", "completed": true}' and len(events) > 3
    vlm_standin.fail_next("cut")
    assert len(asyncio.run(collect())) == 2  # the protocol layer reports the missing end
