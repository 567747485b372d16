"""A 3CX participant's audio streams over HTTP (3cx-protocol.md §4), for every agent that talks on its own DN.

- GET ``/callcontrol/{dn}/participants/{id}/stream``: one long response carrying raw s16le 8 kHz mono for as long as
  the leg is up, in chunks of any size (odd ones too). Before the leg is connected the PBX answers 404 or 424: retried
  with backoff from 50 ms to 500 ms for up to ``connect_timeout_s``. The body ending is the hang-up (or the leg
  leaving after a transfer). It is read once, through :class:`hub.audio.AudioFanout`.
- POST to the same path: one long chunked request (``application/octet-stream``) whose body is the
  :class:`hub.audio.PacedWriter`'s 20 ms frames, never more than 500 ms ahead of real time. It starts once the GET is
  streaming (the leg is connected); a broken POST is re-opened while the call lasts, with the writer's clock resumed.
- Bearer token from a :class:`TokenSource` (the ingest token broker of D§6, or :class:`hub.pbx.TokenProvider`); one
  refresh on a 401. The token never appears in logs or errors.

The voice agent (Basma) reads the caller through it and speaks through the writer; the routing agent plays its menu
prompts through the writer and reads nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import ClassVar, Self

import httpx

from hub.audio.fanout import AudioFanout, AudioSubscription
from hub.audio.participant import STREAM_TIMEOUT, StreamError, participant_audio, stream_path
from hub.audio.writer import PacedWriter
from hub.pbx.token import TokenSource

log = logging.getLogger(__name__)


class ParticipantStream:
    """Both directions of one leg's audio: ``async with stream.session(): ...`` connects; ``caller_audio()`` yields
    the remote party's audio (whole samples) until the leg goes away; ``writer`` takes audio to play to them."""

    error_type: ClassVar[type[StreamError]] = StreamError

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
        self._writer = PacedWriter(lead_ms=lead_ms, clock=clock, tap=tap)  # tap: the hub-side recorder hears it
        self.ended = asyncio.Event()
        self.connected = asyncio.Event()
        self._leaving = asyncio.Event()
        self.get_attempts = 0
        self.post_attempts = 0
        self.error: StreamError | None = None
        self._sub: AudioSubscription | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r})"

    @property
    def writer(self) -> PacedWriter:
        return self._writer

    def caller_audio(self) -> AudioSubscription:
        if self._sub is None:
            raise RuntimeError(f"enter {type(self).__name__}.session() first")
        return self._sub

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Self]:
        fanout = AudioFanout(self._incoming())
        async with fanout:
            self._sub = fanout.subscribe()
            poster = asyncio.create_task(self._outgoing())
            try:
                yield self
            finally:
                self._leaving.set()  # a poster still waiting for the leg to connect stops at once
                self._writer.cancel()
                self._sub.close()
                try:
                    await asyncio.wait_for(poster, 2.0)
                except TimeoutError:
                    log.warning("audio: the outgoing stream of %s did not end in time", self.path)

    async def _headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def _incoming(self) -> AsyncIterator[bytes]:
        """The remote party's audio; retries until the leg is connected, ends when the stream ends."""

        def attempt() -> None:
            self.get_attempts += 1

        try:
            async for chunk in participant_audio(
                self._http, self._tokens, self._dn, self._participant_id, connect_timeout_s=self._connect_timeout_s,
                connected=self.connected, clock=self._clock, on_attempt=attempt, error_type=self.error_type,
            ):  # fmt: skip
                yield chunk
        except StreamError as exc:
            self.error = exc
            # 404 to the end: the leg is gone (a caller who hung up before the agent got to it), nothing to mend
            (log.warning if exc.status == 404 else log.error)("audio: %s", exc)
        finally:
            self.ended.set()

    async def _outgoing(self) -> None:
        """The outgoing stream: one chunked POST of paced frames, re-opened if it breaks while the call lasts."""
        waiters = [asyncio.create_task(e.wait()) for e in (self.connected, self.ended, self._leaving)]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the session is left before the leg connected: no waiter outlives the stream
            for waiter in waiters:
                waiter.cancel()
        if not self.connected.is_set() or self._leaving.is_set():
            return
        token = await self._tokens.token()
        delay = 0.05
        while not self.ended.is_set():
            self.post_attempts += 1
            headers = {**await self._headers(token), "Content-Type": "application/octet-stream"}
            try:
                response = await self._http.post(
                    self.path, content=self._writer.frames(), headers=headers, timeout=STREAM_TIMEOUT
                )
            except httpx.TransportError as exc:
                log.warning("audio: outgoing stream %s broke (%s)", self.path, type(exc).__name__)
            else:
                if response.status_code < 300 or self._writer_done():
                    return
                if response.status_code == 401:
                    token = await self._tokens.refresh(token)
                log.warning("audio: outgoing stream %s answered HTTP %s", self.path, response.status_code)
            if self._writer_done():
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _writer_done(self) -> bool:
        return self._writer.cancelled
