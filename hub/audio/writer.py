"""A paced audio writer: the body of a chunked POST that plays 20 ms frames on a real-time clock.

3CX silently drops audio that arrives badly framed or far ahead of real time; the official sample keeps at most about
500 ms ahead. The writer therefore yields one 20 ms frame at a time, never more than ``lead_ms`` ahead of the wall
clock, pads a partial last frame with silence, and supports:
- ``clear()``: drop everything queued (barge-in); what was already sent is reported by ``played_ms``;
- ``cancel()``: end the stream (the POST completes with the last chunk).
When nothing is queued it sends silence so the stream stays alive and the clock stays honest. A ``tap`` sees every
audio frame with how long until it plays (the hub-side recorder mixes the hub's own voice in with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from hub.audio.format import BYTES_PER_MS, FRAME_BYTES, FRAME_MS


class PacedWriter:
    def __init__(
        self,
        *,
        lead_ms: float = 500.0,
        idle_silence: bool = True,
        clock: Callable[[], float] = time.monotonic,
        tap: Callable[[bytes, float], None] | None = None,
    ) -> None:
        self.tap = tap  # called with (frame, seconds until it plays) for each audio frame, not for idle silence
        self._frames: deque[bytes] = deque()
        self._partial = b""
        self._lead_s = lead_ms / 1000
        self._idle_silence = idle_silence
        self._clock = clock
        self._wake = asyncio.Event()
        self._cancelled = False
        self.sent_ms = 0.0  # everything yielded, silence included
        self.played_ms = 0.0  # audio (not idle silence) yielded since the last clear
        self.cleared_ms = 0.0  # audio dropped by clear()
        self.drained = asyncio.Event()  # set when the last queued frame has been yielded
        self._start: float | None = None

    def write(self, pcm: bytes) -> None:
        """Queue s16le 8 kHz audio; it is cut into 20 ms frames."""
        data = self._partial + pcm
        whole = len(data) - len(data) % FRAME_BYTES
        for i in range(0, whole, FRAME_BYTES):
            self._frames.append(data[i : i + FRAME_BYTES])
        self._partial = data[whole:]
        if self._frames:
            self.drained.clear()
        self._wake.set()

    def flush(self) -> None:
        """Pad the last partial frame with silence and queue it."""
        if self._partial:
            self._frames.append(self._partial.ljust(FRAME_BYTES, b"\x00"))
            self._partial = b""
            self.drained.clear()
            self._wake.set()

    def clear(self) -> float:
        """Drop all queued audio (barge-in); returns how many ms were dropped."""
        dropped = (sum(len(f) for f in self._frames) + len(self._partial)) / BYTES_PER_MS
        self._frames.clear()
        self._partial = b""
        self.cleared_ms += dropped
        self.played_ms = 0.0
        self.drained.set()
        return dropped

    def cancel(self) -> None:
        self._cancelled = True
        self._wake.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def queued_ms(self) -> float:
        return (sum(len(f) for f in self._frames) + len(self._partial)) / BYTES_PER_MS

    @property
    def ahead_ms(self) -> float:
        """How far the stream sent so far runs ahead of real time (what the far end has buffered, at most)."""
        if self._start is None:
            return 0.0
        return max(0.0, self.sent_ms - (self._clock() - self._start) * 1000)

    async def frames(self) -> AsyncIterator[bytes]:
        """The POST body: frames paced so the stream never runs more than ``lead_ms`` ahead of real time.

        Calling it again (a new POST after a broken one) resumes the clock where the stream is now, not at zero.
        """
        start = self._start = self._clock() - self.sent_ms / 1000
        while not self._cancelled:
            ahead = self.sent_ms / 1000 - (self._clock() - start)
            if ahead > self._lead_s:
                await asyncio.sleep(ahead - self._lead_s)
                continue
            if self._frames:
                frame = self._frames.popleft()
                self.played_ms += FRAME_MS
                if not self._frames and not self._partial:
                    self.drained.set()
                if self.tap is not None:
                    self.tap(frame, max(0.0, ahead))
            elif self._idle_silence:
                if ahead > 0.06:  # keep only a small cushion of silence ahead
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), ahead - 0.04)
                    continue
                frame = b"\x00" * FRAME_BYTES
            else:
                self._wake.clear()
                await self._wake.wait()
                continue
            self.sent_ms += FRAME_MS
            yield frame
