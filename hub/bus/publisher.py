"""Publishing events to JetStream asynchronously, in batches, with the event id as ``Nats-Msg-Id``.

One ``await js.publish()`` per event caps out near 5k events/s on this machine kind (STACK.md); ``publish_async``
pipelines up to ``max_pending`` acks and reaches ~30k/s. :meth:`EventPublisher.publish` returns once the message is
written to the socket; :meth:`flush` waits for every pending ack and raises if any publish failed, so callers that
must know (the adapter's outbox) flush before they drop their copy. A caller with several units of work in flight
on one publisher (the worker's commands) confirms each unit's own publishes (:meth:`confirm`): with one shared
flush, one command could be told of another's failure and the other told of none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from nats.js import JetStreamContext
from nats.js.api import PubAck

from schemas import subjects
from schemas.codec import dump_event
from schemas.events import EventBase

MSG_ID = "Nats-Msg-Id"
REPLAY_HEADER = "Ml-Replay"
MAX_FAILED = 1000  # failures kept for the next flush when nobody confirms them (its count then says "at least")


class PublishError(Exception):
    """One or more publishes were not acknowledged by JetStream; ``failed`` counts them."""

    def __init__(self, failed: int, first: BaseException) -> None:
        self.failed = failed
        super().__init__(f"{failed} event(s) were not acknowledged by JetStream: {first}")


class EventPublisher:
    """Pipelined JetStream publisher. Not safe to share across event loops."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._pending: set[asyncio.Future[PubAck]] = set()
        self._failed: list[asyncio.Future[PubAck]] = []  # failed since the last flush, unless confirmed
        self.published = 0
        self.duplicates = 0

    async def publish(self, event: EventBase) -> asyncio.Future[PubAck]:
        """Send ``event``; the future is its ack (for :meth:`confirm`)."""
        return await self.publish_raw(subjects.event_subject(event), dump_event(event), str(event.event_id))

    async def publish_raw(
        self, subject: str, payload: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> asyncio.Future[PubAck]:
        hdrs = {MSG_ID: msg_id}
        if headers:
            hdrs.update(headers)
        future = await self._js.publish_async(subject, payload, headers=hdrs)
        self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    async def publish_many(self, events: Iterable[EventBase]) -> None:
        for event in events:
            await self.publish(event)

    def _done(self, future: asyncio.Future[PubAck]) -> None:
        self._pending.discard(future)
        if future.cancelled() or future.exception() is not None:
            self._failed.append(future)
            del self._failed[:-MAX_FAILED]  # unconfirmed and never flushed (a confirm that timed out): bounded
            return
        self.published += 1
        if future.result().duplicate:
            self.duplicates += 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self, ack_wait: float = 10.0) -> None:
        """Wait for every pending ack; raise :class:`PublishError` if any publish failed since the last flush."""
        if self._pending:
            await asyncio.wait_for(asyncio.gather(*list(self._pending), return_exceptions=True), ack_wait)
        if self._failed:
            failed, self._failed = self._failed, []
            raise PublishError(len(failed), _why(failed[0]))

    async def confirm(self, futures: Iterable[asyncio.Future[PubAck]], ack_wait: float = 10.0) -> None:
        """Wait for these publishes' acks only; raise :class:`PublishError` if any of them failed (the failures are
        then this caller's, and a later :meth:`flush` does not report them again)."""
        mine = list(futures)
        if not mine:
            return
        await asyncio.wait_for(asyncio.gather(*mine, return_exceptions=True), ack_wait)
        failed = [f for f in mine if f.cancelled() or f.exception() is not None]
        if failed:
            self._failed = [f for f in self._failed if f not in failed]
            raise PublishError(len(failed), _why(failed[0]))


def _why(future: asyncio.Future[PubAck]) -> BaseException:
    return asyncio.CancelledError() if future.cancelled() else future.exception() or RuntimeError("no ack")
