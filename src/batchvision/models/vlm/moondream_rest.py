"""Moondream's REST protocol (Moondream Station, Photon, Moondream Cloud).

`POST {base}/caption {image_url, length, stream, settings?}` → `{caption}`;
`POST {base}/query {image_url, question, reasoning, stream, settings?}` → `{answer, reasoning?}`
(`reasoning` a string or `{text}`); `POST {base}/detect {image_url, object, settings?}` →
`{objects: [{x_min, y_min, x_max, y_max}]}` in 0..1; `POST {base}/point {image_url, object}` →
`{points: [{x, y}]}` in 0..1. The key goes in `X-Moondream-Auth`. Streams are server-sent events
`data: {"chunk": "…", "completed": false}` ending with `"completed": true`. Token counts come from
`usage` or `metrics` (`input_tokens`, `output_tokens`) when the server sends them.

One image per call: a query over several images needs an openai-protocol backend.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.models.vlm.calls import PreparedCall, Usage, VlmAnswer
from batchvision.models.vlm.grounding import native_boxes, native_points
from batchvision.models.vlm.protocol import VlmProtocol, bad_answer, read_usage, text_field

AUTH_HEADER = "X-Moondream-Auth"


class MoondreamRest(VlmProtocol):
    async def answer(self, call: PreparedCall) -> VlmAnswer:
        self._one_image(call)
        payload = await self.transport.post_json(call.op, self.body(call, stream=False))
        if not isinstance(payload, dict):
            raise bad_answer(payload, "not a JSON object")
        usage = _usage(payload)
        if call.op == "caption":
            return VlmAnswer(text=text_field(payload, "caption"), usage=usage)
        if call.op == "query":
            reasoning = _reasoning(payload) if call.reasoning else None
            return VlmAnswer(text=text_field(payload, "answer"), reasoning=reasoning, usage=usage)
        raw = json.dumps(payload)
        if call.op == "detect":
            return VlmAnswer(boxes=native_boxes(payload.get("objects"), raw), usage=usage)
        return VlmAnswer(points=native_points(payload.get("points"), raw), usage=usage)

    async def stream(self, call: PreparedCall) -> AsyncIterator[str]:
        self._one_image(call)
        if call.op not in ("caption", "query"):
            raise BatchVisionError(ErrorCode.INVALID_PARAMETER, f"{call.op} does not stream")
        async for data in self.transport.stream_events(call.op, self.body(call, stream=True)):
            chunk, completed = _event(data)
            if chunk:
                yield chunk
            if completed:
                return
        raise bad_answer("", "the stream ended before completed: true")

    def body(self, call: PreparedCall, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"image_url": call.images[0].data_url}
        if call.op == "caption":
            body.update(length=call.length, stream=stream)
        elif call.op == "query":
            body.update(question=call.question, reasoning=call.reasoning, stream=stream)
        else:
            body["object"] = call.target
        settings = {
            k: v
            for k in ("temperature", "top_p", "max_tokens")
            if (v := getattr(call.generation, k)) is not None
        }
        if settings and call.op != "point":
            body["settings"] = settings
        return body

    def _one_image(self, call: PreparedCall) -> None:
        if len(call.images) != 1:
            raise BatchVisionError(
                ErrorCode.INVALID_PARAMETER,
                f"{call.op}: this backend takes one image per call; a query over several "
                "images needs an openai-protocol backend",
            )


def _usage(payload: dict[str, Any]) -> Usage | None:
    for key in ("usage", "metrics"):
        usage = read_usage(payload.get(key), "input_tokens", "output_tokens")
        if usage is not None:
            return usage
    return None


def _reasoning(payload: dict[str, Any]) -> str | None:
    value = payload.get("reasoning")
    if isinstance(value, dict):
        value = value.get("text")
    return value if isinstance(value, str) and value else None


def _event(data: str) -> tuple[str, bool]:
    try:
        event = json.loads(data)
    except ValueError:
        raise bad_answer(data, "a stream event that is not JSON") from None
    if not isinstance(event, dict):
        raise bad_answer(data, "a stream event that is not an object")
    chunk = event.get("chunk")
    return (chunk if isinstance(chunk, str) else ""), event.get("completed") is True
