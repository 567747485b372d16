"""The websocket link on its own: a peer that stops answering pings is dropped and reconnected, and the reconnect
backoff grows, is capped, is jittered and resets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator

import pytest

from hub.ingest.link import Backoff, CallControlSocket
from tests.helpers import eventually

pytestmark = pytest.mark.anyio

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class StaticToken:
    async def token(self) -> str:
        return "t"

    async def refresh(self, stale: str | None) -> str:
        return "t"


@contextlib.asynccontextmanager
async def mute_peer() -> AsyncIterator[int]:
    """A server that completes the websocket upgrade and then goes silent: no pongs, no frames, no close."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))  # fmt: skip
        accept_key = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())  # noqa: S324 - RFC 6455's handshake
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept_key + b"\r\n\r\n")  # fmt: skip
        await writer.drain()
        held.append(writer)  # never read again

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_a_peer_that_stops_answering_pings_is_dropped_and_reconnected() -> None:
    reasons: list[str] = []

    async def connected() -> None:
        pass

    async def disconnected(reason: str) -> None:
        reasons.append(reason)

    async with mute_peer() as port:
        link = CallControlSocket("main", f"http://127.0.0.1:{port}", StaticToken(), on_frame=lambda f, t: None,
                                 on_connect=connected, on_disconnect=disconnected, ping_interval_s=0.2,
                                 backoff=Backoff(base_s=0.05, cap_s=0.1))  # fmt: skip
        stopping = asyncio.Event()
        task = asyncio.create_task(link.run(stopping))
        try:
            await eventually(lambda: link.connects >= 2, timeout=10, what="a drop and a reconnect")
        finally:
            stopping.set()
            await link.close()
            await asyncio.wait_for(task, 5)
    assert reasons and reasons[0].startswith("closed")


def test_the_backoff_grows_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(base_s=0.25, cap_s=4.0, rng=random.Random(1))
    delays = [backoff.next() for _ in range(10)]
    assert all(0.125 <= d <= 4.0 for d in delays)
    ceilings = [min(4.0, 0.25 * 2**i) for i in range(10)]
    assert all(d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[6:]) > 2.0  # it does grow
    other = Backoff(base_s=0.25, cap_s=4.0, rng=random.Random(2))
    assert [other.next() for _ in range(10)] != delays  # two adapters do not retry in step
    backoff.reset()
    assert backoff.next() <= 0.25
