"""Read a participant's audio stream once and fan it out to several consumers.

Chunks from 3CX have arbitrary sizes, possibly odd; the fan-out re-frames them into whole samples so no consumer sees
half a sample. Each subscriber has a bounded queue: a consumer that falls behind loses its oldest audio (counted in
``dropped``) rather than stalling the others or growing memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator

from hub.audio.format import SAMPLE_BYTES


class AudioSubscription:
    def __init__(self, fanout: AudioFanout, max_chunks: int) -> None:
        self._fanout = fanout
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(max_chunks)
        self.dropped = 0

    def _offer(self, chunk: bytes | None) -> None:
        while True:
            try:
                self._queue.put_nowait(chunk)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()
                self.dropped += 1

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._queue.get()
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        self._fanout._subscribers.discard(self)
        self._offer(None)


class AudioFanout:
    """``async with AudioFanout(source) as fan: sub = fan.subscribe()`` — ``source`` is read by one task."""

    def __init__(self, source: AsyncIterable[bytes]) -> None:
        self._source = source
        self._subscribers: set[AudioSubscription] = set()
        self._task: asyncio.Task[None] | None = None
        self.bytes_read = 0
        self.ended = asyncio.Event()

    def subscribe(self, max_chunks: int = 500) -> AudioSubscription:
        sub = AudioSubscription(self, max_chunks)
        self._subscribers.add(sub)
        return sub

    async def __aenter__(self) -> AudioFanout:
        self._task = asyncio.create_task(self._pump())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._finish()

    async def _pump(self) -> None:
        carry = b""
        try:
            async for chunk in self._source:
                data = carry + chunk
                whole = len(data) - (len(data) % SAMPLE_BYTES)
                carry = data[whole:]
                if whole:
                    self.bytes_read += whole
                    frame = data[:whole]
                    for sub in list(self._subscribers):
                        sub._offer(frame)
        finally:
            self._finish()

    def _finish(self) -> None:
        if not self.ended.is_set():
            self.ended.set()
            for sub in list(self._subscribers):
                sub._offer(None)
