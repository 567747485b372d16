"""The 3CX participant streams over real HTTP: GET retried through 404/424 until the leg connects, odd-sized chunks
re-framed, a chunked POST paced at most 500 ms ahead, the stream's end handled as the hang-up.

The fake follows 3cx-protocol.md §4 (raw s16le 8 kHz mono both ways; 404 or 424 before the leg is connected; the
reply is one long chunked POST with Content-Type application/octet-stream).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from agents.basma.httpaudio import HttpStreamAudio
from tests.helpers import wait_until
from tests.voice.localserver import serving

pytestmark = pytest.mark.anyio
PATH = "/callcontrol/800/participants/7/stream"


@dataclass
class FakeLeg:
    """A route-point leg: not connected for the first ``refusals`` GETs, then streams ``audio`` until hung up."""

    audio: bytes
    refusals: list[int] = field(default_factory=lambda: [424, 424, 404])
    tokens: set[str] = field(default_factory=lambda: {"tok-1"})
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)
    gets: list[str] = field(default_factory=list)
    post_headers: list[dict[str, str]] = field(default_factory=list)
    post_chunks: list[tuple[float, bytes]] = field(default_factory=list)
    post_complete: asyncio.Event = field(default_factory=asyncio.Event)

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization", "").removeprefix("Bearer ") in self.tokens

    async def get(self, request: Request) -> Response:
        self.gets.append(request.headers.get("authorization", ""))
        if not self.authorized(request):
            return Response(status_code=401)
        if self.refusals:
            return Response(status_code=self.refusals.pop(0))

        async def body() -> AsyncIterator[bytes]:
            sizes = [317, 1, 640, 99, 1023]  # odd, tiny and large chunks, as 3CX sends them
            pos = 0
            while pos < len(self.audio):
                size = sizes[len(self.gets) % len(sizes)] if pos else 161
                sizes.append(sizes.pop(0))
                yield self.audio[pos : pos + size]
                pos += size
                await asyncio.sleep(0)
            await self.hung_up.wait()

        return StreamingResponse(body(), media_type="application/octet-stream")

    async def post(self, request: Request) -> Response:
        self.post_headers.append(dict(request.headers))
        if not self.authorized(request):
            return Response(status_code=401)
        loop = asyncio.get_running_loop()
        async for chunk in request.stream():
            if chunk:
                self.post_chunks.append((loop.time(), chunk))
        self.post_complete.set()
        return Response(status_code=200)

    def app(self) -> Starlette:
        return Starlette(routes=[Route(PATH, self.get, methods=["GET"]), Route(PATH, self.post, methods=["POST"])])


class Tokens:
    def __init__(self, first: str, fresh: str) -> None:
        self.current, self._fresh, self.refreshes = first, fresh, 0

    async def token(self) -> str:
        return self.current

    async def refresh(self, stale: str | None) -> str:
        self.refreshes += 1
        self.current = self._fresh
        return self.current


async def _true(value: bool) -> bool:
    return value


def tone(ms: int, hz: float = 440.0) -> bytes:
    t = np.arange(ms * 8) / 8000
    return (np.sin(2 * math.pi * hz * t) * 8000).astype(np.int16).tobytes()


async def test_the_caller_stream_is_retried_until_connected_and_the_reply_is_a_paced_chunked_post() -> None:
    caller = tone(1000, 300) + b"\x01"  # a stray odd byte at the end
    leg = FakeLeg(caller)
    reply = tone(1500)
    async with serving(leg.app()) as url, httpx.AsyncClient(base_url=url) as http:
        port = HttpStreamAudio(http, Tokens("stale", "tok-1"), dn="800", participant_id=7)
        frames: list[bytes] = []

        async def caller_hangs_up_after_the_reply() -> None:
            await wait_until(lambda: _true(sum(len(c) for _, c in leg.post_chunks) >= len(reply) + 320 * 30))
            leg.hung_up.set()  # the GET body ends

        async with port.session():
            hang_up = asyncio.create_task(caller_hangs_up_after_the_reply())
            async for frame in port.caller_frames():
                frames.append(frame)
                if len(frames) == 1:
                    port.writer.write(reply)
                    port.writer.flush()
            assert port.ended.is_set()
            await hang_up
        await asyncio.wait_for(leg.post_complete.wait(), 5)

    assert leg.gets == ["Bearer stale", "Bearer tok-1", "Bearer tok-1", "Bearer tok-1", "Bearer tok-1"]
    assert port.error is None
    assert {len(f) for f in frames} == {320}
    assert b"".join(frames) == caller[: len(caller) - len(caller) % 320]

    [headers] = leg.post_headers
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert headers["content-type"] == "application/octet-stream"
    assert headers["authorization"] == "Bearer tok-1"
    body = b"".join(c for _, c in leg.post_chunks)
    assert reply in body  # the whole reply, in order, between idle silence
    assert len(body) % 320 == 0
    start = leg.post_chunks[0][0]
    sent = 0
    for arrival, chunk in leg.post_chunks:
        sent += len(chunk)
        assert sent / 16 <= (arrival - start) * 1000 + 500 + 60  # never more than ~500 ms ahead of real time


async def test_a_leg_that_never_connects_ends_the_port_with_a_clear_error() -> None:
    leg = FakeLeg(b"", refusals=[404] * 100)
    async with serving(leg.app()) as url, httpx.AsyncClient(base_url=url) as http:
        port = HttpStreamAudio(http, Tokens("tok-1", "tok-1"), dn="800", participant_id=7, connect_timeout_s=0.4)
        async with port.session():
            frames = [f async for f in port.caller_frames()]
    assert frames == []
    assert port.error is not None and "within 0.4 s" in str(port.error)
    assert "did not connect" in str(port.error) and "404" in str(port.error)
    assert 3 <= len(leg.gets) <= 8  # backoff from 50 ms doubling to 500 ms
    assert leg.post_headers == []  # no reply stream for a leg that never connected
    assert "tok-1" not in str(port.error) and "tok-1" not in repr(port)
