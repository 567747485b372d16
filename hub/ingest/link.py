"""The Call Control websocket (reference §3): Bearer on the upgrade, a ping every 5 s, reconnect forever.

This module only moves bytes: it connects, hands every text frame to ``on_frame`` with its arrival time, and after
each (re)connect calls ``on_connect`` *before* reading the first frame, so the adapter's full re-read happens while
new frames wait in the socket (they are processed after the re-read, never lost). Reconnects use exponential
backoff with full jitter; a 401 on the upgrade refreshes the token once before the next attempt.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import Counter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from hub.logs import get_logger
from hub.pbx.errors import PbxError
from hub.pbx.token import TokenSource
from hub.runner import wait_or_stop

log = get_logger(__name__)

RECONNECTS = Counter("ml_ingest_reconnects_total", "Websocket (re)connections to the PBX", ["pbx"])


def websocket_url(base_url: str) -> str:
    """``https://pbx:5001`` -> ``wss://pbx:5001/callcontrol/ws`` (``ws://`` for an ``http://`` base)."""
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :].rstrip("/") + "/callcontrol/ws"
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :].rstrip("/") + "/callcontrol/ws"
    raise ValueError(f"base_url must start with https:// or http://, got {base_url!r}")


@dataclass
class Backoff:
    """Exponential backoff with jitter: uniform in [base/2, min(cap, base * 2^attempt)], so reconnecting adapters
    spread out and never hammer a PBX that just came back."""

    base_s: float = 0.25
    cap_s: float = 30.0
    attempt: int = 0
    rng: random.Random | None = None

    def next(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2**self.attempt))
        self.attempt += 1
        return (self.rng or random).uniform(self.base_s / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class CallControlSocket:
    def __init__(
        self,
        pbx_id: str,
        base_url: str,
        tokens: TokenSource,
        *,
        on_frame: Callable[[str | bytes, float], None],
        on_connect: Callable[[], Awaitable[None]],
        on_disconnect: Callable[[str], Awaitable[None]],
        ping_interval_s: float = 5.0,
        backoff: Backoff | None = None,
        tls: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pbx_id = pbx_id
        self.url = websocket_url(base_url)
        self._tokens = tokens
        self._on_frame = on_frame
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._ping = ping_interval_s
        self.backoff = backoff or Backoff()
        self._tls = tls if self.url.startswith("wss://") else None
        self._clock = clock
        self.connected = False
        self.connects = 0
        self._current: ClientConnection | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            reason = await self._session(stopping)
            if stopping.is_set():
                return
            await self._on_disconnect(reason)
            delay = self.backoff.next()
            log.info("websocket down; reconnecting", pbx=self.pbx_id, reason=reason, retry_in_s=round(delay, 2))
            await wait_or_stop(stopping, delay)

    async def close(self) -> None:
        if self._current is not None:
            await self._current.close()

    async def _session(self, stopping: asyncio.Event) -> str:
        try:
            token = await self._tokens.token()
        except PbxError as exc:
            return f"no token: {exc}"
        try:
            async with connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {token}"},
                ping_interval=self._ping,
                ping_timeout=self._ping * 2,  # a PBX that stops answering is dropped within two pings
                open_timeout=10.0,
                close_timeout=2.0,
                max_size=1 << 20,
                ssl=self._tls,
            ) as ws:
                self._current = ws
                self.connected = True
                self.connects += 1
                RECONNECTS.labels(self.pbx_id).inc()
                await self._on_connect()
                self.backoff.reset()
                stop = asyncio.ensure_future(stopping.wait())
                receive: asyncio.Future[str | bytes] | None = None
                try:
                    while True:
                        receive = asyncio.ensure_future(ws.recv())
                        done, _ = await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
                        if receive not in done:
                            return "stopping"
                        self._on_frame(receive.result(), self._clock())
                finally:  # also when cancelled (a leadership ended by an error): no receive outlives the socket
                    stop.cancel()
                    if receive is not None and not receive.done():
                        receive.cancel()
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401:
                try:
                    await self._tokens.refresh(token)
                except PbxError as refresh_error:
                    return f"upgrade refused (401), token refresh failed: {refresh_error}"
            return f"upgrade refused ({status})"
        except ConnectionClosed as exc:
            return f"closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"[:200]
        except PbxError as exc:  # the re-read after connecting failed: drop the link and try again
            return f"re-read failed: {exc}"
        finally:
            self.connected = False
            self._current = None
