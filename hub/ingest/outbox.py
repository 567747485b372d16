"""The adapter's outbox: events wait here until JetStream acknowledged them, bounded, in order.

While NATS is down the outbox keeps up to ``max_items`` events; a drainer publishes them in pipelined batches
(``Nats-Msg-Id`` = event id, so a batch re-sent after a lost ack is deduplicated by the server) and drops an event
only once its ack arrived. When the outbox is full, new events are refused and :attr:`overflowed` is set: the
adapter then forgets what it had not persisted and resyncs from the PBX (D§4), which rebuilds the refused events
with the same ids.

``before_publish`` runs before each batch (the call-id entries the batch's events use are written first).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck
from prometheus_client import Counter, Gauge

from hub.bus.publisher import MSG_ID
from hub.logs import get_logger
from schemas import subjects
from schemas.codec import dump_event
from schemas.events import EventBase

log = get_logger(__name__)

PUBLISHED = Counter("ml_ingest_events_published_total", "Events acknowledged by JetStream", ["pbx"])
HELD = Gauge("ml_ingest_outbox_events", "Events waiting in the outbox", ["pbx"])
ACK_POLL_S = 0.1  # how often a wait for acks checks that its connection is still the same one
OVERFLOWS = Counter("ml_ingest_outbox_overflows_total", "Times the outbox was full (a resync follows)", ["pbx"])


@dataclass(frozen=True, slots=True)
class Pending:
    position: int
    subject: str
    payload: bytes
    msg_id: str


class Outbox:
    def __init__(
        self,
        nc: Client,
        pbx_id: str,
        *,
        max_items: int = 50_000,
        batch: int = 512,
        ack_wait_s: float = 5.0,
        before_publish: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self.pbx_id = pbx_id
        self.max_items = max_items
        self.batch = batch
        self.ack_wait_s = ack_wait_s
        self._before = before_publish
        self._items: deque[Pending] = deque()
        self._next_position = 0
        self._acked_position = 0  # every event with a position below this is acknowledged
        self._arrived = asyncio.Event()
        self._progress = asyncio.Event()
        self.overflowed = False
        self.overflows = 0
        self.published = 0
        self.duplicates = 0
        self.retries = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def position(self) -> int:
        """The position the next event will take: :meth:`acked` of it means everything before is acknowledged."""
        return self._next_position

    def put(self, event: EventBase, *, force: bool = False) -> bool:
        """Queue an event; False (and :attr:`overflowed`) when the outbox is full. Once it overflowed, every event
        is refused until :meth:`clear_overflow` (after the resync), so nothing is published after a gap."""
        if self.overflowed:
            return False
        if len(self._items) >= self.max_items and not force:
            if not self.overflowed:
                OVERFLOWS.labels(self.pbx_id).inc()
                log.warning("outbox full: events refused until a resync", pbx=self.pbx_id, held=len(self._items))
            self.overflowed = True
            self.overflows += 1
            return False
        self._items.append(Pending(self._next_position, subjects.event_subject(event), dump_event(event),
                                   str(event.event_id)))  # fmt: skip
        self._next_position += 1
        HELD.labels(self.pbx_id).set(len(self._items))
        self._arrived.set()
        return True

    def acked(self, position: int) -> bool:
        return self._acked_position >= position

    async def wait_acked(self, position: int, within_s: float | None = None) -> bool:
        """Wait until every event queued before ``position`` is acknowledged (False after ``within_s``)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while not self.acked(position):
                    self._progress.clear()
                    await self._progress.wait()
        return self.acked(position)

    def clear_overflow(self) -> None:
        self.overflowed = False

    async def run(self, stopping: asyncio.Event, *, drain_timeout_s: float = 5.0) -> None:
        """Publish until stopping is set and the outbox is empty, or ``drain_timeout_s`` after stopping (what is
        left then was never acknowledged: the next leader's re-read rebuilds it)."""
        backoff = 0.05
        loop = asyncio.get_running_loop()
        give_up: float | None = None
        while True:
            if stopping.is_set():
                give_up = give_up or loop.time() + drain_timeout_s
                if loop.time() >= give_up:
                    if self._items:
                        log.warning("stopping with unacknowledged events", pbx=self.pbx_id, held=len(self._items))
                    return
            if not self._items:
                if stopping.is_set():
                    return
                self._arrived.clear()
                stop = asyncio.ensure_future(stopping.wait())
                arrive = asyncio.ensure_future(self._arrived.wait())
                await asyncio.wait({stop, arrive}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                arrive.cancel()
                continue
            if not self._nc.is_connected:
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)
                continue
            batch = [self._items[i] for i in range(min(self.batch, len(self._items)))]
            try:
                if self._before is not None:
                    await self._before()
                await self._publish(batch)
            except Exception as exc:  # a lost connection, a timeout, no stream: keep the batch, try again
                self.retries += 1
                log.info("outbox publish retry", pbx=self.pbx_id, held=len(self._items),
                         error=str(exc) or type(exc).__name__)  # fmt: skip
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)
                continue
            backoff = 0.05
            for _ in batch:
                self._items.popleft()
            self._acked_position = batch[-1].position + 1
            PUBLISHED.labels(self.pbx_id).inc(len(batch))
            HELD.labels(self.pbx_id).set(len(self._items))
            self._progress.set()

    async def _publish(self, batch: list[Pending]) -> None:
        futures: list[asyncio.Future[PubAck]] = []
        reconnects = self._nc.stats["reconnects"]
        try:
            for item in batch:
                futures.append(await self._js.publish_async(item.subject, item.payload, headers={MSG_ID: item.msg_id}))
            acks = await self._acks(futures, reconnects)
        finally:
            for future in futures:  # a lost ack must not hold a slot of nats-py's pending semaphore forever
                if not future.done():
                    future.cancel()
        self.published += len(acks)
        self.duplicates += sum(1 for ack in acks if ack.duplicate)

    async def _acks(self, futures: list[asyncio.Future[PubAck]], reconnects: int) -> list[PubAck]:
        """The batch's acks; a lost connection ends the wait at once (the acks of a dead connection never come:
        the batch is published again on the new one, deduplicated by its ids), else ``ack_wait_s``."""
        gathered = asyncio.gather(*futures)
        deadline = asyncio.get_running_loop().time() + self.ack_wait_s
        try:
            while True:
                done, _ = await asyncio.wait({gathered}, timeout=ACK_POLL_S)
                if done:
                    return gathered.result()
                if not self._nc.is_connected or self._nc.stats["reconnects"] != reconnects:
                    raise ConnectionError("the connection was lost before the batch was acknowledged")
                if asyncio.get_running_loop().time() >= deadline:
                    raise TimeoutError(f"no ack within {self.ack_wait_s} s")
        finally:
            if not gathered.done():
                gathered.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await gathered  # retrieved: no "exception was never retrieved" at shutdown
