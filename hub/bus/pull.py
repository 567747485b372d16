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
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

STATUS = "Status"
_END_STATUSES = {"404", "408", "409"}


class BatchPuller:
    """At most one pull request outstanding: a fetch waits on it while it can still deliver, and sends the next one
    only when it expired, ended or delivered its whole batch (too many open requests would hit the consumer's
    ``max_waiting`` and make the server refuse them)."""

    def __init__(self, nc: Client, stream: str, consumer: str) -> None:
        self._nc = nc
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._buffer: deque[Msg] = deque()
        self._arrived = asyncio.Event()
        self._open_until = 0.0  # loop time when the outstanding request expires (0: none outstanding)
        self._open_left = 0  # messages the outstanding request may still deliver

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
                self._open_until = 0.0  # the request is over
                self._arrived.set()
            return  # heartbeats and flow control carry no event
        self._buffer.append(msg)
        self._open_left -= 1
        if self._open_left <= 0:
            self._open_until = 0.0
        self._arrived.set()

    def drain(self) -> list[Msg]:
        """Messages received but not yet returned by a fetch (after a cancelled fetch): nak or handle them."""
        return self._take(len(self._buffer))

    def _take(self, batch: int) -> list[Msg]:
        out: list[Msg] = []
        while self._buffer and len(out) < batch:
            out.append(self._buffer.popleft())
        return out

    def _open(self, now: float) -> bool:
        return self._open_until > now

    async def _request(self, batch: int, expires: float) -> None:
        body = {"batch": batch, "expires": int(expires * 1e9)}
        self._open_until = asyncio.get_running_loop().time() + expires
        self._open_left = batch
        await self._nc.publish(self._api, json.dumps(body).encode(), reply=self._inbox)

    async def _wait_arrival(self, within: float) -> bool:
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), within)
        except TimeoutError:
            return False
        return True

    async def fetch(self, batch: int, *, expires: float = 0.5, idle: float = 0.002) -> list[Msg]:
        """Up to ``batch`` messages; an empty list when none arrived within ``expires`` seconds.

        The server answers a pull request at once with what is available, so a fetch returns as soon as messages
        are there, gathering more while they keep arriving within ``idle`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + expires
        while len(self._buffer) < batch:
            now = loop.time()
            if not self._open(now):
                if self._buffer:
                    break  # return what we have rather than wait for a whole new request
                await self._request(batch, expires)
            if self._buffer:
                if idle <= 0 or not await self._wait_arrival(idle):
                    break
                continue
            remaining = min(deadline, self._open_until) - loop.time()
            if remaining <= 0:
                if loop.time() >= deadline:
                    break
                continue
            await self._wait_arrival(remaining)
        return self._take(batch)


@dataclass(frozen=True, slots=True)
class AckInfo:
    """What a JetStream message's ack subject says: how often it was delivered, its stream sequence, and how many
    messages the consumer still had pending after it."""

    delivered: int
    stream_seq: int
    pending: int


def ack_info(msg: Msg) -> AckInfo:
    """Read from the ack subject without building nats-py's metadata object (a datetime and two dataclasses per
    message, a third of the recorder's parse time).

    v1: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``;
    v2: ``$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<token>]``.
    """
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:
        return AckInfo(int(tokens[4]), int(tokens[5]), int(tokens[8]))
    if len(tokens) >= 11:
        return AckInfo(int(tokens[6]), int(tokens[7]), int(tokens[10]))
    meta = msg.metadata  # anything else: let nats-py explain
    return AckInfo(meta.num_delivered, meta.sequence.stream, meta.num_pending)
