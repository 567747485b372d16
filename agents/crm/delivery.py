"""Sending the outbox: claims due rows, hands each record version to its target, records the outcome, and announces
every delivered version with ``crm.record_written``. The built-in table's rows need no claim: a pass delivers all of
them that are due in one transaction (:meth:`CrmStore.deliver_to_database`).

It wakes when a handler queued a record (no polling delay on the hot path), when the next retry falls due, or every
``poll_s`` (rows left by a replica that died, rows queued by another replica). Up to ``concurrency`` deliveries run
at once; one record's versions never run concurrently for one target (the claim sees to that).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping

from agents.crm.outbox import DATABASE, CrmStore, Due
from agents.crm.targets.base import Attempt, DeliveryError, RemoteTarget
from hub.bus import EventPublisher, PublishError
from hub.logs import get_logger
from hub.sdk.agent import issuer
from schemas import events as ev
from schemas.common import utcnow

log = get_logger(__name__)

WRITTEN_NAMESPACE = uuid.UUID("0b5c8f3e-7a21-5d4c-9e8f-1a2b3c4d5e6f")


def written_event_id(record_id: str, target: str, version: int) -> uuid.UUID:
    return uuid.uuid5(WRITTEN_NAMESPACE, f"{record_id}:{target}:{version}")


class Deliverer:
    def __init__(
        self,
        store: CrmStore,
        remote: Mapping[str, RemoteTarget],
        publisher: EventPublisher | None,
        *,
        agent: str = "crm",
        poll_s: float = 1.0,
        concurrency: int = 8,
    ) -> None:
        self.store = store
        self.remote = dict(remote)
        self.publisher = publisher
        self.agent = agent
        self.poll_s = poll_s
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self.counts = {"delivered": 0, "retried": 0, "failed": 0, "lost_claims": 0}

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.pass_once()
                wait = await self.store.next_due_in()
            except Exception:  # the database is away: try again on the next poll
                log.exception("crm outbox pass failed")
                wait = None
            wait = self.poll_s if wait is None else min(self.poll_s, max(0.01, wait))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def pass_once(self) -> int:
        """Deliver what is due now; returns how many rows were claimed."""
        due_rows = await self.store.due()
        to_database = [row_id for row_id, target in due_rows if target == DATABASE]
        delivered = await self.store.deliver_to_database(to_database)
        self.counts["delivered"] += len(delivered)
        for done in delivered:
            await self._announce(done, done.external_id)
        claimed = len(delivered)
        async with asyncio.TaskGroup() as tg:
            for row_id, target in due_rows:
                if target == DATABASE:
                    continue
                due = await self.store.claim(row_id)
                if due is None:
                    continue
                claimed += 1
                await self._slots.acquire()
                tg.create_task(self._deliver(due))
        if claimed and self.publisher is not None:
            with contextlib.suppress(PublishError, TimeoutError):
                await self.publisher.flush(ack_wait=5.0)
        return claimed

    async def _deliver(self, due: Due) -> None:
        try:
            external_id: str | None = due.record_id
            if due.target != DATABASE:
                target = self.remote[due.target]
                attempt = Attempt(number=due.attempts, external_id=due.external_id, maybe_sent_at=due.maybe_sent_at)
                try:
                    external_id = (await target.deliver(due.record, attempt)).external_id
                except DeliveryError as exc:
                    state = await self.store.failed(due, exc)
                    self.counts["failed" if state == "failed" else "retried"] += 1
                    return
            if not await self.store.delivered(due, external_id):
                self.counts["lost_claims"] += 1
                log.warning("crm delivery finished after its claim ran out", target=due.target, row=due.id)
                return
            self.counts["delivered"] += 1
            await self._announce(due, external_id)
        except Exception:
            log.exception("crm delivery crashed; the row is retried when its claim runs out", row=due.id)
        finally:
            self._slots.release()

    async def _announce(self, due: Due, external_id: str | None) -> None:
        if self.publisher is None:
            return
        event = ev.CrmRecordWritten(
            event_id=written_event_id(due.record_id, due.target, due.version),
            pbx_id=due.pbx_id,
            call_id=due.call_id,
            occurred_at=utcnow(),
            issued_by=issuer(self.agent),
            data=ev.CrmRecordWrittenData(record_id=due.record_id, target=due.target, external_id=external_id),
        )
        try:
            await self.publisher.publish(event)
        except Exception as exc:  # the record is written; only its announcement is lost
            log.warning("crm.record_written not published", record_id=due.record_id, error=str(exc))
