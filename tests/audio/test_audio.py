"""The audio module against a real HTTP server: fan-out of one GET stream, and real-time paced chunked POSTs."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import AsyncIterable, AsyncIterator

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from hub.audio import FRAME_BYTES, AudioFanout, PacedWriter
from hub.audio.format import BYTES_PER_MS

pytestmark = pytest.mark.anyio


def tone(ms: int, hz: float = 440.0) -> bytes:
    n = ms * 8
    return b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / 8000))) for i in range(n))


class PcmServer:
    """GET /stream sends a fixed tone in odd-sized chunks; POST /play records what arrives and when."""

    def __init__(self) -> None:
        self.source = tone(600)
        self.received = bytearray()
        self.arrivals: list[tuple[float, int]] = []
        self.post_started = 0.0

    async def stream(self, request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for i in range(0, len(self.source), 333):  # odd sizes split samples, as 3CX may
                yield self.source[i : i + 333]
                await asyncio.sleep(0)

        return StreamingResponse(body(), media_type="application/octet-stream")

    async def play(self, request: Request) -> Response:
        self.post_started = time.monotonic()
        async for chunk in request.stream():
            self.received.extend(chunk)
            self.arrivals.append((time.monotonic() - self.post_started, len(self.received)))
        return Response(status_code=200)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/stream", self.stream), Route("/play", self.play, methods=["POST"])])


@pytest.fixture
async def pcm() -> AsyncIterator[tuple[PcmServer, str]]:
    server = PcmServer()
    config = uvicorn.Config(server.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve())
    with anyio.fail_after(10):
        while not uv.started:  # noqa: ASYNC110 - uvicorn exposes only a flag, no event
            await asyncio.sleep(0.005)
    port = uv.servers[0].sockets[0].getsockname()[1]
    yield server, f"http://127.0.0.1:{port}"
    uv.should_exit = True
    await task


async def test_one_stream_is_read_once_and_fanned_out_in_whole_samples(pcm: tuple[PcmServer, str]) -> None:
    server, url = pcm
    async with (
        httpx.AsyncClient() as client,
        client.stream("GET", f"{url}/stream") as response,
        AudioFanout(response.aiter_raw()) as fan,
    ):
        a, b = fan.subscribe(), fan.subscribe()
        with anyio.fail_after(10):
            got_a, got_b = await asyncio.gather(_collect(a), _collect(b))
    assert got_a == got_b == server.source
    assert fan.bytes_read == len(server.source)


async def _collect(sub: AsyncIterable[bytes]) -> bytes:
    out = bytearray()
    async for chunk in sub:
        assert len(chunk) % 2 == 0
        out.extend(chunk)
    return bytes(out)


async def test_a_slow_consumer_loses_its_oldest_audio_not_the_others() -> None:
    async def source() -> AsyncIterator[bytes]:
        for _ in range(50):
            yield b"\x01\x00" * 80

    async with AudioFanout(source()) as fan:
        fast, slow = fan.subscribe(), fan.subscribe(max_chunks=5)
        with anyio.fail_after(5):
            got = await _collect(fast)
    assert len(got) == 50 * 160
    assert slow.dropped == 46  # 50 chunks and the end marker through 5 slots


async def test_the_writer_never_runs_more_than_the_lead_ahead_of_real_time(pcm: tuple[PcmServer, str]) -> None:
    server, url = pcm
    writer = PacedWriter(lead_ms=200, idle_silence=False)
    audio = tone(800)
    writer.write(audio)
    writer.flush()

    async def stop_when_played() -> None:
        await writer.drained.wait()
        writer.cancel()

    async with httpx.AsyncClient() as client:
        with anyio.fail_after(10):
            await asyncio.gather(client.post(f"{url}/play", content=writer.frames()), stop_when_played())
    assert bytes(server.received[: len(audio)]) == audio
    for elapsed, total in server.arrivals:
        assert total / BYTES_PER_MS <= (elapsed + 0.2) * 1000 + 60, (
            f"{total} bytes after {elapsed:.3f}s is too far ahead"
        )
    last_elapsed = server.arrivals[-1][0]
    assert last_elapsed >= 0.8 - 0.2 - 0.1  # 800 ms of audio cannot be delivered much faster than real time


async def test_clear_drops_queued_audio_for_barge_in() -> None:
    writer = PacedWriter(lead_ms=100, idle_silence=False)
    writer.write(tone(1000))
    frames = writer.frames()
    first = [await anext(frames) for _ in range(3)]
    assert all(len(f) == FRAME_BYTES for f in first)
    dropped = writer.clear()
    assert 900 <= dropped <= 1000
    assert writer.queued_ms == 0
    writer.write(b"\x07\x00" * 160)
    assert await anext(frames) == b"\x07\x00" * 160


async def test_idle_silence_keeps_the_stream_alive() -> None:
    writer = PacedWriter(lead_ms=100, idle_silence=True)
    frames = writer.frames()
    with anyio.fail_after(2):
        frame = await anext(frames)
    assert frame == b"\x00" * FRAME_BYTES
    assert writer.played_ms == 0
