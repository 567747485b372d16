"""Local fakes of the cloud providers, on real sockets (127.0.0.1), built from the documented shapes.

- OpenAI: /work/shared/voice-offline.md §6 (transcriptions: multipart file/model/language -> {"text"}; speech: JSON
  model/input/voice/response_format, "pcm" = raw 24 kHz s16le mono, streamed). Error body {"error": {message, type,
  param, code}} as openai-python's ``_exceptions.APIError`` reads it; the 401 message echoes the key like the real one.
- ElevenLabs: /work/shared/providers.md §3 and elevenlabs-python ``text_to_speech/raw_client.py`` (POST
  /v1/text-to-speech/{voice_id}/stream?output_format=..., header xi-api-key, JSON text/model_id, raw audio streamed;
  422 carries FastAPI's validation list {"detail": [{loc, msg, type}]}). The 401 body shape is not documented in those
  sources; the fake sends {"detail": {"status", "message"}} and the client reads any of the shapes.
- Anthropic: /work/shared/providers.md §1 (anthropic-sdk-python types and ``tool_use_response.txt``): headers,
  the SSE event order with ping, tool input split across input_json_delta fragments (the first one empty),
  stop_reason tool_use, the tool_result rules (first in the next user message, ids must match), an ``error`` event
  after HTTP 200, and HTTP errors with {"type": "error", "error": {type, message}}.
- Deepgram: the streaming reference (developers.deepgram.com/reference/speech-to-text/listen-streaming) and
  deepgram-python-sdk ``listen/v1`` types: Token auth on the upgrade, linear16 binary frames, KeepAlive / Finalize /
  CloseStream text frames, Results {type, channel_index, duration, start, is_final, speech_final, from_finalize,
  channel.alternatives[{transcript, confidence, words}], metadata}, Metadata on CloseStream.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from agents.basma.g711 import ulaw_encode

KEY = "sk-test-0123456789abcdefghijklmnop"


def tone(rate: int, ms: int, hz: float) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * math.pi * hz * t) * 9000).astype(np.int16)


async def odd_chunks(data: bytes, size: int = 1001) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


@dataclass
class OpenAiFake:
    requests: list[dict[str, Any]] = field(default_factory=list)

    def _denied(self, request: Request) -> Response | None:
        given = request.headers.get("authorization", "")
        if given != f"Bearer {KEY}":
            echoed = given.removeprefix("Bearer ")
            return JSONResponse(
                {"error": {"message": f"Incorrect API key provided: {echoed}.", "type": "invalid_request_error",
                           "param": None, "code": "invalid_api_key"}},
                status_code=401,
            )  # fmt: skip
        return None

    async def transcriptions(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        async with request.form() as form:
            upload = form["file"]
            assert not isinstance(upload, str)
            data = await upload.read()
            model, language = form.get("model"), form.get("language")
        with wave.open(io.BytesIO(data)) as w:
            rate, frames, channels = w.getframerate(), w.getnframes(), w.getnchannels()
        self.requests.append({"model": model, "language": language, "rate": rate})
        return JSONResponse({"text": f"heard {frames * 1000 // rate} ms at {rate} Hz on {channels} channel"})

    async def speech(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await request.json()
        self.requests.append(body)
        if body.get("response_format") != "pcm" or not body.get("input") or not body.get("voice"):
            return JSONResponse(
                {"error": {"message": "response_format must be pcm here", "type": "invalid_request_error",
                           "param": "response_format", "code": None}},
                status_code=400,
            )  # fmt: skip
        pcm = tone(24000, 40 * len(body["input"]), 500.0).tobytes()
        return StreamingResponse(odd_chunks(pcm), media_type="application/octet-stream")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/audio/transcriptions", self.transcriptions, methods=["POST"]),
                Route("/v1/audio/speech", self.speech, methods=["POST"]),
            ]
        )


@dataclass
class ElevenLabsFake:
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def stream(self, request: Request) -> Response:
        if request.headers.get("xi-api-key") != KEY:
            return JSONResponse({"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}, 401)
        body = await request.json()
        fmt = request.query_params.get("output_format", "mp3_44100_128")
        self.requests.append({"voice": request.path_params["voice_id"], "format": fmt, **body})
        if not body.get("text"):
            return JSONResponse(
                {"detail": [{"loc": ["body", "text"], "msg": "field required", "type": "value_error.missing"}]}, 422
            )
        samples = tone(8000, 50 * len(body["text"]), 400.0)
        audio = ulaw_encode(samples).tobytes() if fmt == "ulaw_8000" else samples.tobytes()
        return StreamingResponse(odd_chunks(audio, 333), media_type="audio/basic")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/text-to-speech/{voice_id}/stream", self.stream, methods=["POST"])])


def sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)


def anthropic_text(text_parts: list[str], stop: str = "end_turn") -> list[tuple[str, dict[str, Any]]]:
    return [
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                           "model": "claude-test", "content": [], "stop_reason": None, "stop_sequence": None,
                           "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        *[("content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": t}}) for t in text_parts],
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": 12}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip


def anthropic_tool(text: str, tool_id: str, name: str, args: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    raw = json.dumps(args)
    pieces = ["", raw[:7], raw[7:15], raw[15:]]
    events = anthropic_text([text], stop="tool_use")
    tail = events[-2:]
    return [
        *events[:-2],
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}}),
        *[("content_block_delta", {"type": "content_block_delta", "index": 1,
                                   "delta": {"type": "input_json_delta", "partial_json": p}}) for p in pieces],
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        *tail,
    ]  # fmt: skip


@dataclass
class AnthropicFake:
    """Answers each request with the next script: a list of SSE events, or (status, body) for an HTTP error."""

    scripts: list[list[tuple[str, dict[str, Any]]] | tuple[int, dict[str, Any]]]
    requests: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def _error(status: int, kind: str, message: str) -> Response:
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}
        return JSONResponse(body, status_code=status)

    def _invalid(self, body: dict[str, Any]) -> str | None:
        for key in ("model", "max_tokens", "messages"):
            if key not in body:
                return f"{key}: Field required"
        messages = body["messages"]
        for i, message in enumerate(messages):
            content = message["content"]
            if not isinstance(content, list):
                continue
            kinds = [block["type"] for block in content]
            if "tool_result" in kinds:
                if kinds.index("text") < kinds.index("tool_result") if "text" in kinds else False:
                    return "tool_result blocks must come first"
                previous = messages[i - 1]["content"] if i else []
                ids = {b.get("id") for b in previous if isinstance(b, dict) and b.get("type") == "tool_use"}
                for block in content:
                    if block["type"] == "tool_result" and block["tool_use_id"] not in ids:
                        return "unexpected tool_use_id found in tool_result blocks"
        return None

    async def messages(self, request: Request) -> Response:
        if request.headers.get("x-api-key") != KEY:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if request.headers.get("anthropic-version") != "2023-06-01":
            return self._error(400, "invalid_request_error", "anthropic-version header is required")
        body = await request.json()
        self.requests.append(body)
        problem = self._invalid(body)
        if problem:
            return self._error(400, "invalid_request_error", problem)
        script = self.scripts.pop(0)
        if isinstance(script, tuple):
            status, error = script
            return JSONResponse(error, status_code=status)
        return StreamingResponse(odd_chunks(sse(script), 97), media_type="text/event-stream")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/messages", self.messages, methods=["POST"])])


@dataclass
class DeepgramFake:
    audio_bytes: int = 0
    keepalives: int = 0
    finalizes: int = 0
    closed: bool = False
    params: dict[str, str] = field(default_factory=dict)
    _since_flush: int = 0

    def process_request(self, connection: ServerConnection, request: WsRequest) -> WsResponse | None:
        if request.headers.get("Authorization") != f"Token {KEY}":
            return connection.respond(401, "Unauthorized: invalid credentials\n")
        from urllib.parse import parse_qsl, urlsplit

        self.params = dict(parse_qsl(urlsplit(request.path).query))
        return None

    def _results(self, transcript: str, *, final: bool, from_finalize: bool = False) -> str:
        return json.dumps({
            "type": "Results", "channel_index": [0, 1], "duration": 1.0, "start": 0.0, "is_final": final,
            "speech_final": final, "from_finalize": from_finalize,
            "channel": {"alternatives": [{"transcript": transcript, "confidence": 0.9, "words": []}]},
            "metadata": {"request_id": "req-1", "model_info": {"name": "nova-3", "version": "1", "arch": "x"},
                         "model_uuid": "uuid-1"},
        })  # fmt: skip

    async def handler(self, ws: ServerConnection) -> None:
        async for message in ws:
            if isinstance(message, bytes):
                self.audio_bytes += len(message)
                self._since_flush += len(message)
                continue
            kind = json.loads(message).get("type")
            if kind == "KeepAlive":
                self.keepalives += 1
            elif kind == "Finalize":
                self.finalizes += 1
                ms = self._since_flush // 16
                self._since_flush = 0
                await ws.send(self._results("partial guess", final=False))
                await ws.send(self._results(f"first part of {ms} ms", final=True))
                await ws.send(self._results("and the rest.", final=True, from_finalize=True))
            elif kind == "CloseStream":
                self.closed = True
                await ws.send(json.dumps({"type": "Metadata", "transaction_key": "deprecated", "request_id": "req-1",
                                          "sha256": "0" * 64, "created": "2026-01-01T00:00:00Z",
                                          "duration": self.audio_bytes / 16000, "channels": 1}))  # fmt: skip
                await ws.close()
                return

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        async with serve(self.handler, "127.0.0.1", 0, process_request=self.process_request) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            yield f"ws://127.0.0.1:{port}/v1/listen"
