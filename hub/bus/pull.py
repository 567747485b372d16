"""Batched pulls from a JetStream consumer without a per-message timer.

nats-py's ``PullSubscription.fetch`` waits for each message of a batch with its own ``wait_for`` (tens of
microseconds each): at recorder rates that is most of the CPU. This puller sends the same pull requests
(``$JS.API.CONSUMER.MSG.NEXT``) but collects the replies in a subscription callback:

1. a ``no_wait`` request returns what is available now (ended by a 404/408 status, or a full batch);
2. if nothing was available, a long request (``expires``) waits for the first message, then the batch is returned as
   soon as it is full, the request expires, or no further message arrives for ``idle`` seconds.

Messages that arrive for a request after its fetch returned are kept for the next fetch, never dropped.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

STATUS = "Status"
_END_STATUSES = {"404", "408", "409"}


class BatchPuller:
    def __init__(self, nc: Client, stream: str, consumer: str) -> None:
        self._nc = nc
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._buffer: deque[Msg] = deque()
        self._arrived = asyncio.Event()
        self._ended = asyncio.Event()

    async def start(self) -> BatchPuller:
        self._sub = await self._nc.subscribe(
            self._inbox, cb=self._on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get(STATUS) if msg.headers else None
        if status is not None and not msg.data:
            if status in _END_STATUSES:
                self._ended.set()
            return  # heartbeats and flow control carry no event
        self._buffer.append(msg)
        self._arrived.set()

    def _take(self, batch: int) -> list[Msg]:
        out: list[Msg] = []
        while self._buffer and len(out) < batch:
            out.append(self._buffer.popleft())
        if not self._buffer:
            self._arrived.clear()
        return out

    async def _request(self, batch: int, *, expires: float | None) -> None:
        body: dict[str, object] = {"batch": batch}
        if expires is None:
            body["no_wait"] = True
        else:
            body["expires"] = int(expires * 1e9)
        self._ended.clear()
        await self._nc.publish(self._api, json.dumps(body).encode(), reply=self._inbox)

    async def fetch(self, batch: int, *, expires: float = 0.5, idle: float = 0.002) -> list[Msg]:
        """Up to ``batch`` messages; an empty list when none arrived within ``expires`` seconds."""
        if len(self._buffer) >= batch:
            return self._take(batch)
        await self._request(batch - len(self._buffer), expires=None)
        await self._until_full_or_ended(batch, within=max(expires, 1.0))
        if self._buffer:
            return self._take(batch)
        await self._request(batch, expires=expires)
        try:
            await asyncio.wait_for(self._first(), expires + 0.5)
        except TimeoutError:
            return []
        while len(self._buffer) < batch and not self._ended.is_set():
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), idle)
            except TimeoutError:
                break
        return self._take(batch)

    async def _first(self) -> None:
        while not self._buffer:
            if self._ended.is_set():
                return
            waiter = asyncio.ensure_future(self._arrived.wait())
            ender = asyncio.ensure_future(self._ended.wait())
            try:
                await asyncio.wait({waiter, ender}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                ender.cancel()

    async def _until_full_or_ended(self, batch: int, within: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self._buffer) < batch and not self._ended.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            waiter = asyncio.ensure_future(self._arrived.wait())
            ender = asyncio.ensure_future(self._ended.wait())
            try:
                await asyncio.wait({waiter, ender}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                ender.cancel()


def stream_sequence(msg: Msg) -> int:
    """The stream sequence of a JetStream message, read from its ack subject without building nats-py's metadata
    object (a datetime and two dataclasses per message, a third of the recorder's parse time).

    v1: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``;
    v2: ``$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<token>]``.
    """
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:
        return int(tokens[5])
    if len(tokens) >= 11:
        return int(tokens[7])
    return msg.metadata.sequence.stream  # anything else: let nats-py explain
