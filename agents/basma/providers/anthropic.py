"""The LLM brain: Anthropic Messages, streamed, with the call-control port as tools.

Shapes from /work/shared/providers.md §1 (anthropic-sdk-python types and its recorded ``tool_use_response.txt``):
``POST /v1/messages`` with ``x-api-key`` and ``anthropic-version: 2023-06-01``; SSE events ``message_start``,
``content_block_start`` / ``content_block_delta`` (``text_delta``, ``input_json_delta``) / ``content_block_stop``,
``message_delta`` (``stop_reason``), ``message_stop``, ``ping`` anywhere, ``error`` possibly after HTTP 200; unknown
events are ignored. A tool turn ends with ``stop_reason: "tool_use"``; its results go back first in the next user
message, each ``tool_result`` naming its ``tool_use_id``.

Tools are bound to the owned call: the model names a destination from the policy (never a raw number) and cannot
address another call. When the provider fails, Basma says so and transfers to the fallback destination.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from agents.basma.brain import CallerPressed, CallerSaid, CallStarted, Heard, Toolbox, ToolResult, Turn
from agents.basma.errors import ProviderError, redact
from agents.basma.providers._http import raise_for_status, transport_error

log = logging.getLogger(__name__)
DEFAULT_BASE_URL = "https://api.anthropic.com/v1"
API_VERSION = "2023-06-01"
SYSTEM = (
    "You are Basma, the receptionist answering phone calls for {company}. Speak in short, plain sentences: your words "
    "are read aloud on a phone line. Find out what the caller needs. When a person should take over, call "
    "transfer_to_human with a destination and a two-sentence summary for them. Destinations:\n{destinations}"
)


@dataclass
class _Block:
    kind: str
    id: str = ""
    name: str = ""
    text: str = ""
    json: list[str] = field(default_factory=list)

    def content(self) -> dict[str, Any]:
        if self.kind == "text":
            return {"type": "text", "text": self.text}
        raw = "".join(self.json)
        return {"type": "tool_use", "id": self.id, "name": self.name, "input": json.loads(raw) if raw else {}}


def _tools(toolbox: Toolbox) -> list[dict[str, Any]]:
    names = sorted(toolbox.destinations)
    return [
        {
            "name": "transfer_to_human",
            "description": "Warm-transfer this call to a person. The summary is shown to them before they answer.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "destination": {"type": "string", "enum": names},
                    "summary": {"type": "string", "description": "who is calling and what they need"},
                },
                "required": ["destination", "summary"],
            },
        },
        {
            "name": "park_call",
            "description": "Put the caller on hold (park) so a person can pick the call up later.",
            "input_schema": {"type": "object", "properties": {}},
        },
        {
            "name": "end_call",
            "description": "Hang up, after saying goodbye.",
            "input_schema": {"type": "object", "properties": {}},
        },
        {
            "name": "send_message",
            "description": "Send the caller a text message (for example an address or opening hours).",
            "input_schema": {
                "type": "object",
                "properties": {"text": {"type": "string", "maxLength": 1600}},
                "required": ["text"],
            },
        },
    ]


def _messages(dialogue: Sequence[Turn]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for turn in dialogue:
        role = "user" if turn.role == "caller" else "assistant"
        text = f"(The caller pressed {turn.text} on the keypad.)" if turn.dtmf else turn.text
        if turn.interrupted:
            text += " (interrupted by the caller)"
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n" + text
        else:
            out.append({"role": role, "content": text})
    if not out or out[0]["role"] != "user":
        out.insert(0, {"role": "user", "content": "(The call has connected.)"})
    return out


class AnthropicBrain:
    def __init__(
        self,
        http: httpx.AsyncClient,
        api_key: SecretStr,
        *,
        greeting: str,
        company: str = "us",
        fallback: str | None = None,
        model: str = "claude-sonnet-4-5",
        max_tokens: int = 300,
        max_tool_rounds: int = 3,
        base_url: str = DEFAULT_BASE_URL,
    ) -> None:
        self._http = http
        self._key = api_key
        self._base = base_url.rstrip("/")
        self.greeting = greeting
        self.company = company
        self.fallback = fallback
        self.model = model
        self.max_tokens = max_tokens
        self.max_tool_rounds = max_tool_rounds

    def __repr__(self) -> str:
        return f"AnthropicBrain(model={self.model!r}, api_key=**********)"

    def _system(self, tools: Toolbox) -> str:
        lines = [f"- {d.name}: {d.description or 'a person'}" for d in tools.destinations.values()]
        return SYSTEM.format(company=self.company, destinations="\n".join(lines) or "- none")

    async def respond(self, dialogue: Sequence[Turn], heard: Heard, tools: Toolbox) -> AsyncGenerator[str, None]:
        if isinstance(heard, CallStarted):
            yield self.greeting
            return
        assert isinstance(heard, CallerSaid | CallerPressed)
        messages = _messages(dialogue)
        try:
            for _ in range(self.max_tool_rounds + 1):
                blocks: list[_Block] = []
                stop = None
                async for kind, value in self._stream(messages, tools):
                    if kind == "text":
                        yield value
                    elif kind == "blocks":
                        blocks = value
                    elif kind == "stop":
                        stop = value
                if stop != "tool_use":
                    return
                results, ended = await self._run_tools(blocks, tools)
                if ended:
                    return
                content = [b.content() for b in blocks if b.kind != "text" or b.text]
                messages.append({"role": "assistant", "content": content})
                messages.append({"role": "user", "content": results})
        except ProviderError as exc:
            log.error("voice: the LLM failed (%s); falling back", exc)
            yield "Sorry, I'm having trouble on my side."
            if self.fallback is not None and self.fallback in tools.destinations:
                yield " Let me put you through to someone."
                await tools.transfer(self.fallback, "The voice assistant failed; the caller needs a person.")

    async def _run_tools(self, blocks: list[_Block], tools: Toolbox) -> tuple[list[dict[str, Any]], bool]:
        results: list[dict[str, Any]] = []
        ended = False
        for block in blocks:
            if block.kind != "tool_use":
                continue
            try:
                args = block.content()["input"]
            except ValueError:
                result = ToolResult(False, "the tool input was not valid JSON")
            else:
                result = await self._call(block.name, args, tools)
            ended = ended or result.ends_call
            entry: dict[str, Any] = {"type": "tool_result", "tool_use_id": block.id, "content": result.message}
            if not result.ok:
                entry["is_error"] = True
            results.append(entry)
        return results, ended

    async def _call(self, name: str, args: dict[str, Any], tools: Toolbox) -> ToolResult:
        if name == "transfer_to_human":
            return await tools.transfer(str(args.get("destination", "")), str(args.get("summary", "")))
        if name == "park_call":
            return await tools.park()
        if name == "end_call":
            return await tools.drop()
        if name == "send_message":
            return await tools.send_message(str(args.get("text", "")))
        return ToolResult(False, f"there is no tool named {name!r}")

    async def _stream(self, messages: list[dict[str, Any]], tools: Toolbox) -> AsyncIterator[tuple[str, Any]]:
        body = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "stream": True,
            "system": self._system(tools),
            "tools": _tools(tools),
            "messages": messages,
        }
        headers = {
            "x-api-key": self._key.get_secret_value(),
            "anthropic-version": API_VERSION,
            "content-type": "application/json",
        }
        secret = self._key.get_secret_value()
        blocks: dict[int, _Block] = {}
        try:
            async with self._http.stream("POST", f"{self._base}/messages", headers=headers, json=body) as response:
                await raise_for_status("anthropic", response, secret)
                event, data = "", []
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        payload = json.loads("\n".join(data))
                        for item in _handle(event or payload.get("type", ""), payload, blocks, secret):
                            yield item
                        event, data = "", []
        except httpx.HTTPError as exc:
            raise transport_error("anthropic", exc) from None
        except ValueError as exc:
            raise ProviderError("anthropic", f"unreadable stream: {exc}") from None
        yield "blocks", [blocks[i] for i in sorted(blocks)]


def _handle(event: str, payload: dict[str, Any], blocks: dict[int, _Block], secret: str) -> list[tuple[str, Any]]:
    if event == "content_block_start":
        start = payload["content_block"]
        blocks[payload["index"]] = _Block(start["type"], start.get("id", ""), start.get("name", ""))
    elif event == "content_block_delta":
        delta, block = payload["delta"], blocks.get(payload["index"])
        if block is None:
            return []
        if delta.get("type") == "text_delta":
            block.text += delta["text"]
            return [("text", delta["text"])]
        if delta.get("type") == "input_json_delta":
            block.json.append(delta.get("partial_json", ""))
    elif event == "message_delta":
        return [("stop", payload.get("delta", {}).get("stop_reason"))]
    elif event == "error":
        error = payload.get("error", {})
        raise ProviderError("anthropic", redact(str(error.get("message", "")), secret), kind=error.get("type"))
    return []
