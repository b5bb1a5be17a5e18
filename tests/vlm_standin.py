"""The stand-in vision-language server (the one stand-in the project allows): a real HTTP server
on 127.0.0.1 that speaks the OpenAI chat-completions protocol (`POST /v1/chat/completions`) and
Moondream's REST protocol (`POST /v1/caption|query|detect|point`), streams included.

Its answers are computed from the image it received, so tests prove the right image, prompt and
parameters arrived: captions and answers give the image's size and mean colour; detect and point
find the one strongly coloured square a test drew on a grey background and answer its box /
centre in the convention of the server's `grounding` (qwen2.5-vl: pixels of the received image;
norm1000: 0..1000; moondream REST: 0..1). Every request is recorded (`requests`, image data
replaced by what was seen).

Faults: `fail_next(*actions)` scripts the next requests (`500`, `429` with `Retry-After`,
`timeout` (answers after `hang_s`), `drop` (closes without answering), `malformed` (not JSON),
`prose` (coordinates as prose), `bad_coords` (three numbers in a box), `cut` (a stream stops
halfway)); `latency_s` delays every answer, `chunk_gap_s` every streamed chunk after the first;
`failure_rate` answers that share with 503s.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

SATURATION = 80  # max - min channel above this: the test's coloured square, not the grey


@dataclass(frozen=True)
class Seen:
    width: int
    height: int
    mean: tuple[int, int, int]
    square: tuple[int, int, int, int] | None  # x1, y1, x2, y2 (exclusive) in received pixels

    def describe(self) -> str:
        r, g, b = self.mean
        return f"{self.width}x{self.height} mean ({r}, {g}, {b})"


def look(data_url: str) -> Seen:
    header, _, encoded = data_url.partition(",")
    assert header == "data:image/jpeg;base64", header
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"))
    mean = tuple(round(float(v)) for v in pixels.reshape(-1, 3).mean(axis=0))
    spread = pixels.max(axis=2).astype(int) - pixels.min(axis=2).astype(int)
    ys, xs = np.nonzero(spread > SATURATION)
    square = None
    if len(xs):
        square = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    height, width = pixels.shape[:2]
    return Seen(width, height, (mean[0], mean[1], mean[2]), square)


@dataclass
class StandinState:
    grounding: str = "qwen2.5-vl"  # how openai-protocol coordinates are answered
    report_usage: bool = True
    fence: bool = True  # openai JSON answers inside ```json fences, as Qwen writes them
    latency_s: float = 0.0
    chunk_gap_s: float = 0.0  # a pause before each streamed chunk after the first
    failure_rate: float = 0.0
    retry_after: str = "1"
    hang_s: float = 3.0
    script: deque[str] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    answered: int = 0
    streams_ended: int = 0  # streams whose last event was written
    lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = field(default_factory=lambda: random.Random(12))

    def next_action(self) -> str:
        with self.lock:
            if self.script:
                return self.script.popleft()
            if self.failure_rate and self.rng.random() < self.failure_rate:
                return "503"
            return ""


class StandinHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, the client's delayed ACK adds ~40 ms
    # to every answer, a cost of this stand-in that no real model server has.
    disable_nagle_algorithm = True
    state: StandinState

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_json(200, {"object": "list", "data": [{"id": "standin"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        action = self.state.next_action()
        self.record(body, action)
        if self.state.latency_s:
            time.sleep(self.state.latency_s)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if not self.fault(action):
                self.answer(body, action)

    def record(self, body: dict[str, Any], action: str) -> None:
        seen = [look(url).describe() for url in _image_urls(body)]
        shown = {k: v for k, v in body.items() if k not in ("image_url", "messages")}
        if "messages" in body:
            shown["prompt"] = _prompt(body)
        entry = {
            "path": self.path,
            "body": shown,
            "images": seen,
            "auth": self.headers.get("Authorization"),
            "md_auth": self.headers.get("X-Moondream-Auth"),
            "fault": action,
        }
        with self.state.lock:
            self.state.requests.append(entry)

    def fault(self, action: str) -> bool:
        if action in ("500", "503"):
            self.send_raw(int(action), b"backend exploded", "text/plain")
        elif action == "429":
            self.send_raw(429, b"slow down", "text/plain", {"Retry-After": self.state.retry_after})
        elif action == "timeout":
            time.sleep(self.state.hang_s)
            self.send_raw(500, b"too late", "text/plain")
        elif action == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
        elif action == "malformed":
            self.send_raw(200, b'{"choices": [', "application/json")
        else:
            return False
        return True

    def answer(self, body: dict[str, Any], action: str) -> None:
        with self.state.lock:
            self.state.answered += 1
        if self.path == "/v1/chat/completions":
            self.openai(body, action)
        elif self.path in ("/v1/caption", "/v1/query", "/v1/detect", "/v1/point"):
            self.moondream(self.path.removeprefix("/v1/"), body, action)
        else:
            self.send_json(404, {"error": "no such route"})

    # --- openai ---------------------------------------------------------------------------
    def openai(self, body: dict[str, Any], action: str) -> None:
        prompt = _prompt(body)
        seen = [look(url) for url in _image_urls(body)]
        content = self.openai_content(prompt, seen, action)
        if body.get("stream"):
            self.openai_stream(content, action)
            return
        reply: dict[str, Any] = {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        }
        if self.state.report_usage:
            reply["usage"] = {
                "prompt_tokens": len(prompt.split()) + 100 * len(seen),
                "completion_tokens": len(content.split()),
            }
        self.send_json(200, reply)

    def openai_content(self, prompt: str, seen: list[Seen], action: str) -> str:
        if "bbox_2d" in prompt or "point_2d" in prompt:
            return self.grounded(prompt, seen[0], action)
        described = "; ".join(s.describe() for s in seen)
        if "'Answer:'" in prompt:
            return f"I looked at {len(seen)} image(s): {described}.\nAnswer: {described}"
        return f"{described} | {prompt}"

    def grounded(self, prompt: str, seen: Seen, action: str) -> str:
        if action == "prose":
            return "There is a red square near the top left, roughly a quarter of the way in."
        entries = []
        if seen.square is not None:
            key = "bbox_2d" if "bbox_2d" in prompt else "point_2d"
            coordinates = self.openai_coordinates(seen, key)
            if action == "bad_coords":
                coordinates = coordinates[:3] if key == "bbox_2d" else coordinates[:1]
            entries.append({key: coordinates, "label": "thing"})
        text = json.dumps(entries)
        return f"```json\n{text}\n```" if self.state.fence else text

    def openai_coordinates(self, seen: Seen, key: str) -> list[float]:
        assert seen.square is not None
        x1, y1, x2, y2 = seen.square
        values = [x1, y1, x2, y2] if key == "bbox_2d" else [(x1 + x2) / 2, (y1 + y2) / 2]
        if self.state.grounding == "norm1000":
            extents = [seen.width, seen.height] * 2
            return [round(v / e * 1000) for v, e in zip(values, extents, strict=False)]
        return values

    def openai_stream(self, content: str, action: str) -> None:
        words = content.split(" ")
        self.start_events()
        for index, word in enumerate(words):
            if action == "cut" and index == 2:
                return self.end_events(cut=True)
            text = word if index == 0 else " " + word
            chunk = {"choices": [{"index": 0, "delta": {"content": text}}]}
            self.pause(index)
            self.event(json.dumps(chunk))
        self.event("[DONE]")
        self.end_events()

    # --- moondream REST -----------------------------------------------------------------------
    def moondream(self, op: str, body: dict[str, Any], action: str) -> None:
        seen = look(body["image_url"])
        if op in ("caption", "query"):
            text = self.moondream_text(op, body, seen)
            if body.get("stream"):
                return self.moondream_stream(text, action)
            key = "caption" if op == "caption" else "answer"
            reply: dict[str, Any] = {"request_id": "standin", key: text}
            if op == "query" and body.get("reasoning"):
                reply["reasoning"] = {"text": f"reasoned about {seen.describe()}", "grounding": []}
        else:
            reply = self.moondream_coordinates(op, seen, action)
        if self.state.report_usage:
            reply["metrics"] = {"input_tokens": 700, "output_tokens": 12}
        self.send_json(200, reply)

    def moondream_text(self, op: str, body: dict[str, Any], seen: Seen) -> str:
        if op == "caption":
            return f"a {body.get('length')} caption of {seen.describe()} {body.get('settings')}"
        return f"{body.get('question')} -> {seen.describe()}"

    def moondream_coordinates(self, op: str, seen: Seen, action: str) -> dict[str, Any]:
        if action == "prose":
            return {"objects": "a red square top left"} if op == "detect" else {"points": "left"}
        rows: list[dict[str, float]] = []
        if seen.square is not None:
            x1, y1, x2, y2 = seen.square
            w, h = seen.width, seen.height
            if op == "detect":
                rows.append({"x_min": x1 / w, "y_min": y1 / h, "x_max": x2 / w, "y_max": y2 / h})
            else:
                rows.append({"x": (x1 + x2) / 2 / w, "y": (y1 + y2) / 2 / h})
        return {"objects": rows} if op == "detect" else {"points": rows}

    def moondream_stream(self, text: str, action: str) -> None:
        self.start_events()
        for index, word in enumerate(text.split(" ")):
            if action == "cut" and index == 2:
                return self.end_events(cut=True)
            chunk = word if index == 0 else " " + word
            self.pause(index)
            self.event(json.dumps({"chunk": chunk, "completed": False}))
        self.event(json.dumps({"chunk": "", "completed": True}))
        self.end_events()

    # --- wire helpers -----------------------------------------------------------------------
    def start_events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def pause(self, index: int) -> None:
        if index and self.state.chunk_gap_s:
            time.sleep(self.state.chunk_gap_s)

    def event(self, data: str) -> None:
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()

    def end_events(self, cut: bool = False) -> None:
        self.wfile.flush()
        with self.state.lock:
            self.state.streams_ended += 1
        if cut:
            self.connection.shutdown(2)

    def send_json(self, status: int, body: Any) -> None:
        self.send_raw(status, json.dumps(body).encode(), "application/json")

    def send_raw(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _image_urls(body: dict[str, Any]) -> list[str]:
    if "image_url" in body:
        return [body["image_url"]]
    if "messages" not in body:
        return []
    parts = body["messages"][0]["content"]
    return [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]


def _prompt(body: dict[str, Any]) -> str:
    parts = body["messages"][0]["content"]
    return " ".join(p["text"] for p in parts if p["type"] == "text")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@dataclass
class VlmStandin:
    url: str  # base URL, …/v1, for both protocols
    state: StandinState

    def fail_next(self, *actions: str) -> None:
        with self.state.lock:
            self.state.script.extend(actions)

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.requests)


@contextlib.contextmanager
def run_standin(**state: Any) -> Iterator[VlmStandin]:
    """The stand-in on a free port of 127.0.0.1; stopped on exit."""
    shared = StandinState(**state)
    handler = type("Handler", (StandinHandler,), {"state": shared})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield VlmStandin(f"http://127.0.0.1:{server.server_address[1]}/v1", shared)
    finally:
        server.shutdown()
        server.server_close()


def square_image(
    width: int,
    height: int,
    box: tuple[int, int, int, int],
    colour: tuple[int, int, int] = (220, 30, 30),
) -> bytes:
    """A grey JPEG with one coloured square at `box` (x1, y1, x2, y2, exclusive)."""
    pixels = np.full((height, width, 3), 128, dtype=np.uint8)
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = colour
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()
