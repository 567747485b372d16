"""Reading a 3CX participant's audio (reference §4): ``GET /callcontrol/{dn}/participants/{id}/stream``.

One long response carrying raw s16le 8 kHz mono for as long as the leg is up, in chunks of any size (odd ones too).
Before the leg is connected the PBX answers 404 or 424: retried with backoff from 50 ms to 500 ms for up to
``connect_timeout_s``. The body ending is the hang-up (or the leg leaving after a transfer). A 401 refreshes the
token once; the token never appears in logs or errors. Used by the hub-side recorder and the voice agent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from urllib.parse import quote

import httpx

from hub.logs import get_logger
from hub.pbx.token import TokenSource

log = get_logger(__name__)

NOT_YET = (404, 424)
STREAM_TIMEOUT = httpx.Timeout(10.0, read=None, write=None)  # a silent caller is still a caller


class StreamRefused(Exception):
    """The PBX refused the stream (``status``: its HTTP status, or None when it never answered)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


def stream_path(dn: str, participant_id: int) -> str:
    return f"/callcontrol/{quote(dn, safe='')}/participants/{int(participant_id)}/stream"


async def participant_audio(
    http: httpx.AsyncClient,
    tokens: TokenSource,
    dn: str,
    participant_id: int,
    *,
    connect_timeout_s: float = 120.0,
    connected: asyncio.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncGenerator[bytes, None]:
    """The participant's audio chunks until the stream ends; :class:`StreamRefused` if it never opens."""
    path = stream_path(dn, participant_id)
    deadline = clock() + connect_timeout_s
    delay = 0.05
    token = await tokens.token()
    refreshed = False
    while True:
        status = 0
        try:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.stream("GET", path, headers=headers, timeout=STREAM_TIMEOUT) as response:
                status = response.status_code
                if status == 200:
                    if connected is not None:
                        connected.set()
                    async for chunk in response.aiter_raw():
                        yield chunk
                    return
                await response.aread()
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            if connected is not None and connected.is_set():
                log.info("participant stream ended abruptly", path=path, error=type(exc).__name__)
                return
        except httpx.TransportError as exc:
            log.warning("participant stream unreachable", path=path, error=type(exc).__name__)
        if status == 401 and not refreshed:
            token, refreshed = await tokens.refresh(token), True
            continue
        if status not in (*NOT_YET, 0):
            raise StreamRefused(f"the PBX refused the stream {path}: HTTP {status}", status=status)
        if clock() + delay > deadline:
            raise StreamRefused(
                f"the leg did not connect within {connect_timeout_s:g} s ({path} kept answering "
                f"{status or 'no connection'})",
                status=status or None,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def play_to_participant(
    http: httpx.AsyncClient, tokens: TokenSource, dn: str, participant_id: int, frames: AsyncIterator[bytes]
) -> int:
    """POST ``frames`` (e.g. :meth:`hub.audio.PacedWriter.frames`) as one chunked request; returns the status.

    Every chunk is correctly framed by httpx (3CX silently drops badly framed audio) and the body ends with the
    last-chunk marker when ``frames`` ends."""
    token = await tokens.token()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
    try:
        response = await http.post(
            stream_path(dn, participant_id), content=frames, headers=headers, timeout=STREAM_TIMEOUT
        )
    except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError):
        return 0  # the leg went away mid-stream (the PBX closes the connection)
    return response.status_code
