"""The 3CX participant audio streams as an :class:`AudioPort` (3cx-protocol.md §4), through the shared reader and
player of :mod:`hub.audio.participant` (the hub-side recorder uses the same).

- GET: the caller's raw s16le 8 kHz mono for as long as the leg is up; 404/424 before the leg connects are retried
  with backoff for up to ``connect_timeout_s``; the body ending is the hang-up (or the leg leaving after a
  transfer). It is read once, through :class:`hub.audio.AudioFanout`.
- POST: one long chunked request whose body is the :class:`hub.audio.PacedWriter`'s 20 ms frames, never more than
  ``lead_ms`` ahead of real time. It starts once the GET streams (the leg is connected); a broken POST is re-opened
  while the call lasts, with the writer's clock resumed. The writer's ``tap`` (:class:`hub.audio.tap.AudioTap`)
  lets a hub-side recording mix Basma's voice in.
- Bearer token from a :class:`TokenSource` (the ingest token broker of D§6, or :class:`hub.pbx.TokenProvider`); one
  refresh on a 401. The token never appears in logs or errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import httpx

from agents.basma.errors import AudioStreamError
from agents.basma.ports import reframe
from hub.audio.fanout import AudioFanout, AudioSubscription
from hub.audio.participant import StreamRefused, participant_audio, play_to_participant, stream_path
from hub.audio.writer import PacedWriter
from hub.pbx.token import TokenSource

log = logging.getLogger(__name__)

__all__ = ["HttpStreamAudio", "TokenSource"]


class HttpStreamAudio:
    def __init__(
        self,
        http: httpx.AsyncClient,
        tokens: TokenSource,
        *,
        dn: str,
        participant_id: int,
        connect_timeout_s: float = 120.0,
        lead_ms: float = 500.0,
        tap: Callable[[bytes, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._tokens = tokens
        self._dn = dn
        self._participant_id = participant_id
        self.path = stream_path(dn, participant_id)
        self._connect_timeout_s = connect_timeout_s
        self._clock = clock
        self._writer = PacedWriter(lead_ms=lead_ms, clock=clock, tap=tap)
        self.ended = asyncio.Event()
        self.connected = asyncio.Event()
        self.post_attempts = 0
        self.error: AudioStreamError | None = None
        self._sub: AudioSubscription | None = None

    def __repr__(self) -> str:
        return f"HttpStreamAudio(path={self.path!r})"

    @property
    def writer(self) -> PacedWriter:
        return self._writer

    async def caller_frames(self) -> AsyncIterator[bytes]:
        if self._sub is None:
            raise RuntimeError("enter HttpStreamAudio.session() first")
        async for frame in reframe(self._sub):
            yield frame

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[HttpStreamAudio]:
        fanout = AudioFanout(self._incoming())
        async with fanout:
            self._sub = fanout.subscribe()
            poster = asyncio.create_task(self._outgoing())
            try:
                yield self
            finally:
                self._writer.cancel()
                self._sub.close()
                try:
                    await asyncio.wait_for(poster, 2.0)
                except TimeoutError:
                    log.warning("voice: the reply stream of %s did not end in time", self.path)

    async def _incoming(self) -> AsyncIterator[bytes]:
        """The caller's audio; retries until the leg is connected, ends when the stream ends."""
        stream = participant_audio(
            self._http,
            self._tokens,
            self._dn,
            self._participant_id,
            connect_timeout_s=self._connect_timeout_s,
            connected=self.connected,
            clock=self._clock,
        )
        try:
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    yield chunk
        except StreamRefused as exc:
            self.error = AudioStreamError(str(exc), status=exc.status)
            log.error("voice: %s", exc)
        finally:
            self.ended.set()

    async def _outgoing(self) -> None:
        """The reply stream: one chunked POST of paced frames, re-opened if it breaks while the call lasts."""
        waiter = asyncio.create_task(self.connected.wait())
        ended = asyncio.create_task(self.ended.wait())
        await asyncio.wait({waiter, ended}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        ended.cancel()
        if not self.connected.is_set():
            return
        delay = 0.05
        while not self.ended.is_set():
            self.post_attempts += 1
            try:
                status = await play_to_participant(
                    self._http, self._tokens, self._dn, self._participant_id, self._writer.frames()
                )
            except httpx.TransportError as exc:
                log.warning("voice: reply stream %s broke (%s)", self.path, type(exc).__name__)
            else:
                if 0 < status < 300 or self._writer.cancelled:
                    return
                if status == 401:
                    await self._tokens.refresh(await self._tokens.token())
                log.warning("voice: reply stream %s answered %s", self.path, f"HTTP {status}" if status else "nothing")
            if self._writer.cancelled:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
