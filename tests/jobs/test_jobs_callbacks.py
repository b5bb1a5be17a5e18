"""Job-completion webhooks: signing, URL checks and delivery to a real receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.jobs.callbacks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackPolicy,
    _backoff_s,
    check_callback_url,
    deliver_callback,
    sign_callback,
    verify_callback,
)
from local_http import RouteHandler, serve_routes

SECRET = b"s3cr3t-callback-key-0123456789ab"
BODY = b'{"job_id":"job_1","status":"succeeded"}'
NOW = 1_700_000_000
LOCAL = CallbackPolicy(
    attempts=3,
    base_delay_s=0.01,
    max_delay_s=0.02,
    timeout_s=2.0,
    allow_hosts=frozenset({"127.0.0.1"}),
)


@dataclass(frozen=True)
class Received:
    timestamp: str | None
    signature: str | None
    content_type: str | None
    host: str | None
    body: bytes


@dataclass
class Receiver:
    """A webhook endpoint answering ``statuses`` in turn (the last repeats), recording requests."""

    statuses: tuple[int, ...]
    stall_first_s: float = 0.0  # hold the first answer back this long (timeout tests)
    received: list[Received] = field(default_factory=list)

    def __call__(self, h: RouteHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        self.received.append(
            Received(
                h.headers.get(TIMESTAMP_HEADER),
                h.headers.get(SIGNATURE_HEADER),
                h.headers.get("Content-Type"),
                h.headers.get("Host"),
                body,
            )
        )
        if len(self.received) == 1 and self.stall_first_s:
            time.sleep(self.stall_first_s)
        status = self.statuses[min(len(self.received), len(self.statuses)) - 1]
        if 300 <= status < 400:
            h.send(status, b"", Location="/elsewhere")
        else:
            h.send(status, b"receiver says hi")


@dataclass
class Hook:
    """The /hook route of the module's receiver server; each test plugs in its own Receiver."""

    receiver: Receiver = field(default_factory=lambda: Receiver((200,)))

    def __call__(self, h: RouteHandler) -> None:
        self.receiver(h)


@dataclass(frozen=True)
class Server:
    base: str
    hook: Hook
    hits: list[str]  # every path requested, in order


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    # One server for the module: stopping one takes up to half a second (its poll interval).
    hook, hits = Hook(), list[str]()
    with serve_routes({"/hook": hook, "/elsewhere": Receiver((200,))}, hits) as base:
        yield Server(base, hook, hits)


Serve = Callable[[Receiver], str]


@pytest.fixture
def serve(server: Server) -> Serve:
    """Plug a receiver in at /hook (and forget earlier hits); returns the hook's URL."""

    def plug(receiver: Receiver) -> str:
        server.hook.receiver = receiver
        server.hits.clear()
        return f"{server.base}/hook"

    return plug


def deliver(url: str, policy: CallbackPolicy = LOCAL) -> bool:
    return asyncio.run(deliver_callback(url, BODY, SECRET, policy))


def _closed_port() -> int:
    with socket.socket() as s:  # free a moment ago, and nothing listens on it
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- signing -----------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign_callback(SECRET, NOW, BODY) == f"v1={expected}"


def test_verify_accepts_own_signature_and_rejects_tampering() -> None:
    sig = sign_callback(SECRET, NOW, BODY)
    assert verify_callback(SECRET, str(NOW), sig, BODY, now=NOW)
    assert verify_callback(SECRET, str(NOW), "v1=" + sig[3:].upper(), BODY, now=NOW)
    assert not verify_callback(SECRET, str(NOW), sig, BODY + b" ", now=NOW)
    assert not verify_callback(SECRET, str(NOW + 1), sig, BODY, now=NOW)
    assert not verify_callback(SECRET, "0" + str(NOW), sig, BODY, now=NOW)
    assert not verify_callback(b"another-secret-of-some-length!!", str(NOW), sig, BODY, now=NOW)
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert not verify_callback(SECRET, str(NOW), flipped, BODY, now=NOW)


@pytest.mark.parametrize(
    ("offset", "ok"), [(0, True), (300, True), (-300, True), (301, False), (-301, False)]
)
def test_verify_tolerance_both_ways(offset: int, ok: bool) -> None:
    sig = sign_callback(SECRET, NOW, BODY)
    assert verify_callback(SECRET, str(NOW), sig, BODY, now=NOW + offset) is ok


def test_verify_custom_tolerance_and_real_clock() -> None:
    sig = sign_callback(SECRET, NOW, BODY)
    assert not verify_callback(SECRET, str(NOW), sig, BODY, tolerance_s=9, now=NOW + 10)
    assert verify_callback(SECRET, str(NOW), sig, BODY, tolerance_s=10, now=NOW + 10)
    fresh = int(time.time())
    assert verify_callback(SECRET, str(fresh), sign_callback(SECRET, fresh, BODY), BODY)
    assert not verify_callback(SECRET, str(NOW), sig, BODY)  # 2023 is long past


@pytest.mark.parametrize(
    ("secret", "timestamp", "signature"),
    [
        (SECRET, None, "good"),
        (SECRET, str(NOW), None),
        (SECRET, "", "good"),
        (SECRET, str(NOW), ""),
        (SECRET, " " + str(NOW), "good"),
        (SECRET, "+" + str(NOW), "good"),
        (SECRET, "-1", "good"),
        (SECRET, "1" * 16, "good"),
        (SECRET, str(NOW), "v1="),
        (SECRET, str(NOW), "bare"),  # the hex without its v1= prefix
        (SECRET, str(NOW), "v2"),  # an unknown scheme with the right hex
        (SECRET, str(NOW), "v1=zz" + "0" * 62),
        (b"", str(NOW), "good"),
    ],
)
def test_verify_is_false_for_malformed_input(
    secret: bytes, timestamp: str | None, signature: str | None
) -> None:
    good = sign_callback(SECRET, NOW, BODY)
    forms = {"good": good, "bare": good[3:], "v2": "v2=" + good[3:]}
    signature = forms.get(signature or "", signature)
    assert not verify_callback(secret, timestamp, signature, BODY, now=NOW)


def test_empty_secret_cannot_sign() -> None:
    with pytest.raises(ValueError, match="empty"):
        sign_callback(b"", NOW, BODY)


# --- URL check at submit time ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "http://example.com",
        "https://hooks.example.com:8443/a/b?token=abc#frag",
        "http://127.0.0.1:8080/x",  # syntax only: the address is checked at delivery
        "https://example.com/" + "a" * (2048 - len("https://example.com/")),
    ],
)
def test_check_callback_url_accepts(url: str) -> None:
    check_callback_url(url)  # does not raise


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "/relative/hook",
        "example.com/hook",
        "//example.com/hook",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http:///hook",
        "http://user:pw@example.com/hook",
        "http://user@example.com/hook",
        "http://example.com:99999/",
        "https://example.com/hook\n",
        "https://example.com/\x00",
        "https://example.com/" + "a" * (2049 - len("https://example.com/")),
    ],
)
def test_check_callback_url_refuses(url: str) -> None:
    with pytest.raises(BatchVisionError) as info:
        check_callback_url(url)
    assert info.value.code is ErrorCode.INVALID_PARAMETER
    assert info.value.message.startswith("callback_url: ")


# --- delivery ----------------------------------------------------------------------------


def test_delivered_callback_verifies_at_the_receiver(serve: Serve) -> None:
    receiver = Receiver((200,))
    assert deliver(serve(receiver))
    (got,) = receiver.received
    assert got.body == BODY
    assert got.content_type == "application/json"
    assert verify_callback(SECRET, got.timestamp, got.signature, got.body)
    assert not verify_callback(SECRET, got.timestamp, got.signature, got.body + b"x")
    assert got.timestamp is not None
    assert not verify_callback(SECRET, str(int(got.timestamp) - 1), got.signature, got.body)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_loopback_is_refused_by_default_without_retrying(serve: Serve, host: str) -> None:
    receiver = Receiver((200,))
    url = serve(receiver).replace("127.0.0.1", host)
    strict = CallbackPolicy(attempts=5, base_delay_s=1.0)  # a retry would take a second or more
    start = time.monotonic()
    assert not deliver(url, strict)
    assert time.monotonic() - start < 0.9
    assert receiver.received == []


def test_allow_hosts_by_name_connects_with_the_real_host_header(serve: Serve) -> None:
    receiver = Receiver((204,))
    url = serve(receiver).replace("127.0.0.1", "localhost")
    assert deliver(url, CallbackPolicy(allow_hosts=frozenset({"localhost"})))
    (got,) = receiver.received
    assert got.host == url.split("/")[2]


def test_5xx_is_retried_with_a_fresh_signature_each_time(serve: Serve) -> None:
    receiver = Receiver((500, 500, 200))
    assert deliver(serve(receiver))
    assert len(receiver.received) == 3
    for got in receiver.received:
        assert verify_callback(SECRET, got.timestamp, got.signature, got.body)


@pytest.mark.parametrize("status", [408, 429, 502, 503, 599])
def test_retryable_statuses_are_retried(serve: Serve, status: int) -> None:
    receiver = Receiver((status, 200))
    assert deliver(serve(receiver))
    assert len(receiver.received) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_4xx_gives_up_after_one_attempt(serve: Serve, status: int) -> None:
    receiver = Receiver((status, 200))
    assert not deliver(serve(receiver))
    assert len(receiver.received) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(serve: Serve, server: Server, status: int) -> None:
    assert not deliver(serve(Receiver((status, 200))))
    assert server.hits == ["/hook"]  # neither /elsewhere nor a retry


def test_gives_up_when_attempts_run_out_and_logs_no_secret(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver((503,))
    with caplog.at_level("WARNING"):
        assert not deliver(serve(receiver) + "?token=hush")
    assert len(receiver.received) == LOCAL.attempts
    assert f"gave up after {LOCAL.attempts} attempts" in caplog.text
    assert SECRET.decode() not in caplog.text
    assert "hush" not in caplog.text  # URLs are logged by origin only


def test_timeout_is_retried(serve: Serve) -> None:
    receiver = Receiver((200,), stall_first_s=1.0)
    policy = CallbackPolicy(
        attempts=2, base_delay_s=0.01, timeout_s=0.3, allow_hosts=frozenset({"127.0.0.1"})
    )
    assert deliver(serve(receiver), policy)
    assert len(receiver.received) == 2


def test_connection_refused_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        assert not deliver(f"http://127.0.0.1:{_closed_port()}/hook")
    assert caplog.text.count("could not connect") == LOCAL.attempts


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "http://u:p@127.0.0.1/", "nonsense"])
def test_unusable_url_is_false_not_an_exception(url: str) -> None:
    assert deliver(url) is False


# --- policy and backoff ------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    policy = CallbackPolicy(base_delay_s=1.0, max_delay_s=10.0)
    for failures, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
        delays = [_backoff_s(failures, policy) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered


@pytest.mark.parametrize(
    "bad", [{"attempts": 0}, {"base_delay_s": -1.0}, {"max_delay_s": -1.0}, {"timeout_s": 0.0}]
)
def test_policy_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CallbackPolicy(**bad)  # type: ignore[arg-type]
