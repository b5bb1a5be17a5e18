"""The OpenAI chat-completions protocol (Ollama, vLLM, llama.cpp, LM Studio, SGLang, TGI).

`POST {base}/chat/completions` with one user message: a text part, then one `image_url` part
per image (a JPEG data URL); `max_tokens`, `temperature`, `top_p` when given. The answer is
`choices[0].message.content`; tokens from `usage.prompt_tokens` / `usage.completion_tokens`.
Streams use `stream: true`: `data: {"choices": [{"delta": {"content": …}}]}` until `[DONE]`.

Prompts: captions by length (below); a query is the question itself; with `reasoning`, the
server's own `reasoning_content` / `reasoning` field when it sends one, else the model is asked
to reason first and end with a line `Answer: …`, which is split off (no marker: all of it is the
answer and no reasoning is reported). Detect and point ask for JSON coordinates in the card's
grounding (`models.vlm.grounding`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.models.vlm.calls import PreparedCall, VlmAnswer
from batchvision.models.vlm.grounding import box_prompt, point_prompt, read_boxes, read_points
from batchvision.models.vlm.protocol import VlmProtocol, bad_answer, read_usage

CAPTION_PROMPTS = {
    "short": "Describe this image in one short sentence.",
    "normal": "Describe this image in two or three sentences.",
    "long": "Describe this image in detail: the subjects, the setting, colours and any text.",
}
REASONING_SUFFIX = (
    "\n\nThink it through step by step first, then give the final answer on a last line "
    "that starts with 'Answer:'."
)
ANSWER_MARKER = "Answer:"


class OpenAiChat(VlmProtocol):
    async def answer(self, call: PreparedCall) -> VlmAnswer:
        payload = await self.transport.post_json("chat/completions", self.body(call, stream=False))
        message = _message(payload)
        content = message.get("content")
        if not isinstance(content, str):
            raise bad_answer(payload, "no message content")
        usage = read_usage(payload.get("usage"), "prompt_tokens", "completion_tokens")
        return self._read(call, content, message, usage)

    def _read(
        self, call: PreparedCall, content: str, message: dict[str, Any], usage: Any
    ) -> VlmAnswer:
        sent = call.images[0].sent
        if call.op == "detect":
            return VlmAnswer(boxes=read_boxes(content, self.grounding, sent), usage=usage)
        if call.op == "point":
            return VlmAnswer(points=read_points(content, self.grounding, sent), usage=usage)
        if call.op == "query" and call.reasoning:
            answer, reasoning = _split_reasoning(content, message)
            return VlmAnswer(text=answer, reasoning=reasoning, usage=usage)
        return VlmAnswer(text=content.strip(), usage=usage)

    async def stream(self, call: PreparedCall) -> AsyncIterator[str]:
        if call.op not in ("caption", "query"):
            raise BatchVisionError(ErrorCode.INVALID_PARAMETER, f"{call.op} does not stream")
        finished = False
        async for data in self.transport.stream_events("chat/completions", self.body(call, True)):
            if data == "[DONE]":
                finished = True
                break
            chunk = _delta(data)
            if chunk:
                yield chunk
        if not finished:
            raise bad_answer("", "the stream ended before [DONE]")

    def body(self, call: PreparedCall, stream: bool) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"type": "text", "text": self.prompt(call)}]
        parts += [{"type": "image_url", "image_url": {"url": i.data_url}} for i in call.images]
        body: dict[str, Any] = {
            "model": self.backend.model,
            "messages": [{"role": "user", "content": parts}],
            "stream": stream,
        }
        generation = call.generation
        for key in ("max_tokens", "temperature", "top_p"):
            if (value := getattr(generation, key)) is not None:
                body[key] = value
        return body

    def prompt(self, call: PreparedCall) -> str:
        if call.op == "caption":
            return CAPTION_PROMPTS[call.length]
        if call.op == "query":
            return call.question + (REASONING_SUFFIX if call.reasoning else "")
        if call.op == "detect":
            return box_prompt(call.target, self.grounding)
        return point_prompt(call.target, self.grounding)


def _message(payload: Any) -> dict[str, Any]:
    choices = payload.get("choices") if isinstance(payload, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise bad_answer(payload, "no choices[0].message")
    return message


def _delta(data: str) -> str:
    try:
        event = json.loads(data)
        content = event["choices"][0]["delta"].get("content") if event.get("choices") else ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise bad_answer(data, "a stream event that is not a chat completion chunk") from None
    return content if isinstance(content, str) else ""


def _split_reasoning(content: str, message: dict[str, Any]) -> tuple[str, str | None]:
    for key in ("reasoning_content", "reasoning"):
        given = message.get(key)
        if isinstance(given, str) and given.strip():
            return content.strip(), given.strip()
    head, marker, tail = content.rpartition(ANSWER_MARKER)
    if not marker:
        return content.strip(), None
    return tail.strip(), head.strip() or None
