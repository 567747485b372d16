"""In-memory ports: the caller and the far end of a call in one process (tests, benchmarks, demos).

:class:`LoopbackAudio` plays scripted caller audio into the session (as fast as it is fed, or on a real-time 20 ms
line that carries silence between utterances, like the PBX stream) and records every reply frame the paced writer
sends, with its arrival time. :meth:`LoopbackAudio.underruns` replays those arrivals through a real-time playout
buffer (D§11: a gap of more than 40 ms inside a reply is an underrun). :class:`MemoryCallControl` and
:class:`MemoryEvents` record what the session asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.basma.ports import ControlResult
from hub.audio.format import FRAME_BYTES, FRAME_MS
from hub.audio.writer import PacedWriter
from schemas.events import EventBase

SILENCE_RMS = 64.0


def frame_is_voiced(frame: bytes, threshold: float = SILENCE_RMS) -> bool:
    samples = np.frombuffer(frame, dtype=np.int16).astype(np.float32)
    return bool(len(samples)) and float(np.sqrt(np.mean(samples * samples))) > threshold


def frames_of(pcm: bytes) -> list[bytes]:
    padded = pcm + b"\x00" * (-len(pcm) % FRAME_BYTES)
    return [padded[i : i + FRAME_BYTES] for i in range(0, len(padded), FRAME_BYTES)]


@dataclass
class Utterance:
    """A scripted caller utterance; ``speech_start``/``speech_end``: when its first/last voiced frame went down the
    line (clock()): the ground truth for latency and barge-in figures."""

    frames: list[bytes]
    first_voiced: int
    last_voiced: int
    speech_start: float | None = None
    speech_end: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class LoopbackAudio:
    def __init__(
        self, *, realtime: bool = False, lead_ms: float = 500.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.realtime = realtime
        self._clock = clock
        self._writer = PacedWriter(lead_ms=lead_ms, clock=clock)
        self._script: asyncio.Queue[Utterance | None] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.received: list[tuple[float, bytes]] = []
        self.caller_sent = 0
        self._far_end: asyncio.Task[None] | None = None

    @property
    def writer(self) -> PacedWriter:
        return self._writer

    def say(self, pcm: bytes, *, trailing_silence_ms: int = 0) -> Utterance:
        """Queue caller audio (s16le 8 kHz); with ``trailing_silence_ms`` silence frames follow it."""
        frames = frames_of(pcm) + [b"\x00" * FRAME_BYTES] * (trailing_silence_ms // FRAME_MS)
        voiced = [i for i, f in enumerate(frames) if frame_is_voiced(f)]
        utterance = Utterance(frames, voiced[0] if voiced else -1, voiced[-1] if voiced else -1)
        self._script.put_nowait(utterance)
        return utterance

    def hang_up(self) -> None:
        self._script.put_nowait(None)

    async def caller_frames(self) -> AsyncIterator[bytes]:
        if self.realtime:
            async for frame in self._realtime_line():
                yield frame
            return
        while (utterance := await self._script.get()) is not None:
            for i, frame in enumerate(utterance.frames):
                if i == utterance.first_voiced:
                    utterance.speech_start = self._clock()
                if i == utterance.last_voiced:
                    utterance.speech_end = self._clock()
                self.caller_sent += 1
                yield frame
                await asyncio.sleep(0)  # let the session run between frames, as a socket read would
            utterance.done.set()
        self.ended.set()

    async def _realtime_line(self) -> AsyncIterator[bytes]:
        start = self._clock()
        sent = 0
        current: Utterance | None = None
        index = 0
        silence = b"\x00" * FRAME_BYTES
        while True:
            if current is None and not self._script.empty():
                current, index = self._script.get_nowait(), 0
                if current is None:
                    break
            frame = silence
            if current is not None:
                frame = current.frames[index]
                if index == current.first_voiced:
                    current.speech_start = self._clock()
                if index == current.last_voiced:
                    current.speech_end = self._clock()
                index += 1
                if index >= len(current.frames):
                    current.done.set()
                    current = None
            delay = start + sent * FRAME_MS / 1000 - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            sent += 1
            self.caller_sent += 1
            yield frame
        self.ended.set()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[LoopbackAudio]:
        self._far_end = asyncio.create_task(self._receive())
        try:
            yield self
        finally:
            self._writer.cancel()
            self.ended.set()
            await self._far_end

    async def _receive(self) -> None:
        async for frame in self._writer.frames():
            self.received.append((self._clock(), frame))

    # ------------------------------------------------------------------ what the far end got

    def reply_audio(self, since: int = 0) -> bytes:
        return b"".join(f for _, f in self.received[since:])

    def voiced_arrivals(self, since: float = 0.0) -> list[float]:
        return [t for t, f in self.received if t >= since and frame_is_voiced(f)]

    def underruns(self, gap_ms: float = 40.0) -> list[float]:
        """Gaps (ms) longer than ``gap_ms`` during which a real-time playout buffer fed by these arrivals was empty
        while a reply was being played (silence between replies does not count)."""
        gaps: list[float] = []
        play_at = None  # when the next frame is due at the speaker
        for arrival, frame in self.received:
            if play_at is None:
                play_at = arrival
            if arrival > play_at:
                if frame_is_voiced(frame) and (arrival - play_at) * 1000 > gap_ms:
                    gaps.append((arrival - play_at) * 1000)
                play_at = arrival
            play_at += FRAME_MS / 1000
        return gaps


class MemoryCallControl:
    """Records the commands a session sends; answers with ``result`` (ok unless told otherwise)."""

    def __init__(self, result: ControlResult | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.result = result or ControlResult(ok=True)
        self.calls: list[tuple[str, dict[str, str | None]]] = []
        self.contexts: list[Mapping[str, Any] | None] = []
        self.times: list[float] = []
        self._clock = clock

    def _record(self, name: str, args: dict[str, str | None]) -> ControlResult:
        self.calls.append((name, args))
        self.times.append(self._clock())
        return self.result

    async def transfer(self, to: str, summary: str | None, context: Mapping[str, Any] | None = None) -> ControlResult:
        self.contexts.append(context)
        return self._record("transfer", {"to": to, "summary": summary})

    async def park(self) -> ControlResult:
        return self._record("park", {})

    async def drop(self) -> ControlResult:
        return self._record("drop", {})

    async def send_message(self, to: str, text: str) -> ControlResult:
        return self._record("send_message", {"to": to, "text": text})


class MemoryEvents:
    def __init__(self) -> None:
        self.events: list[EventBase] = []

    async def publish(self, event: EventBase) -> None:
        self.events.append(event)

    async def flush(self, ack_wait: float = 10.0) -> None:
        return None
