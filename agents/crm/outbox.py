"""The CRM agent's database side: each call's state, the record's outbox rows, their delivery and retries.

- :meth:`CrmStore.apply` runs inside the event's ``ctx.transaction()`` (with the agent's tracking row): the call's
  state is read, the event applied and the state written back; once the call has ended, every change gives a new
  record version and one outbox row per target, in the same transaction. A redelivered event is skipped by the
  tracking row, so it can neither change the state twice nor enqueue twice.
- An outbox row is delivered by whoever claims it (an atomic UPDATE, so two replicas never deliver one row, and never
  two versions of one record to one target at once). A newer version supersedes older rows still pending: each row
  carries the whole record, not a change.
- The built-in table (``crm_records``) is written in the same transaction that marks its row delivered: exactly
  once. Its due rows are taken a batch at a time (:meth:`CrmStore.deliver_to_database`): one UPDATE marks them
  delivered and returns them, their records are written, and all of it commits together, with no claim in between
  (nothing outside the transaction happens). A second replica's UPDATE waits on the rows' locks and then finds them
  delivered. Remote targets are called outside a transaction, then the row is marked: a crash in between repeats the
  call, which the targets' idempotency (webhook key, HubSpot id map) absorbs.
- A failed attempt is retried after the target's Retry-After or an exponential backoff (with jitter) until
  ``max_attempts``; a refusal, or the last attempt, marks the row failed (logged with the reason).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agents.crm.record import CallRecord, CallState
from agents.crm.tables import crm_calls, crm_links, crm_outbox, crm_records, utc
from agents.crm.targets.base import DeliveryError
from hub.logs import get_logger
from schemas.common import utcnow
from schemas.events import EventBase

log = get_logger(__name__)

DATABASE = "database"

# Built once (SQLAlchemy reuses their compiled form): these run for every event the agent takes.
_CALL = (crm_calls.c.pbx_id == sa.bindparam("key_pbx")) & (crm_calls.c.call_id == sa.bindparam("key_call"))
_READ_STATES = sa.select(crm_calls.c.pbx_id, crm_calls.c.call_id, crm_calls.c.state).where(
    crm_calls.c.call_id.in_(sa.bindparam("call_ids", expanding=True))
)
_INSERT_STATE = crm_calls.insert()
# A pending row a deliverer holds right now is skipped, not waited for: it is being delivered, and the newer version
# queued after it goes next (waiting held the event's partition for the rest of the deliverer's transaction:
# handlers took 0.1-2 s each under the soak).
_STALE = (
    sa.select(crm_outbox.c.id)
    .where(
        (crm_outbox.c.target == sa.bindparam("key_target"))
        & (crm_outbox.c.record_id == sa.bindparam("key_record"))
        & (crm_outbox.c.state == "pending")
        & (crm_outbox.c.version < sa.bindparam("key_version"))
    )
    .with_for_update(skip_locked=True)
)
_SUPERSEDE = (
    crm_outbox.update().where(crm_outbox.c.id.in_(_STALE.scalar_subquery())).values(state="superseded", claimed_by=None)
)
_QUEUE = crm_outbox.insert()
_UPDATE_STATE = crm_calls.update().where(_CALL)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    base_s: float = 1.0
    max_s: float = 300.0
    max_attempts: int = 50
    claim_s: float = 60.0  # a claimed row is another replica's to take after this (its deliverer died)

    def delay(self, attempts: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return max(0.05, min(retry_after_s, self.max_s))
        backoff = min(self.max_s, self.base_s * 2 ** max(0, attempts - 1))
        return float(backoff * random.uniform(0.8, 1.2))


@dataclass(frozen=True)
class Due:
    """A claimed outbox row: one record version for one target."""

    id: int
    target: str
    record_id: str
    version: int
    pbx_id: str
    call_id: str
    payload: str
    attempts: int
    maybe_sent_at: datetime | None
    external_id: str | None  # the target's id for the record from an earlier version

    @property
    def record(self) -> CallRecord:
        return CallRecord.model_validate_json(self.payload)


class CrmStore:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        targets: Sequence[str],
        replica: str,
        route_points: Sequence[str] = (),
        retry: RetryPolicy | None = None,
    ) -> None:
        self.engine = engine
        self.targets = tuple(targets)
        self.replica = replica
        self.route_points = frozenset(route_points)
        self.retry = retry or RetryPolicy()

    async def check(self) -> None:
        """Raise with what to do when the CRM tables are missing (they come from migration 0003)."""
        async with self.engine.connect() as conn:
            missing = await conn.run_sync(
                lambda c: [t.name for t in (crm_calls, crm_outbox, crm_records) if not sa.inspect(c).has_table(t.name)]
            )
        if missing:
            raise RuntimeError(f"the database has no {', '.join(missing)} table: run `masterlinc db upgrade` first")

    # ------------------------------------------------------------------ building records

    async def apply(self, conn: AsyncConnection, event: EventBase) -> int:
        """Apply one event to its call (inside the event's transaction); returns how many deliveries it queued."""
        return await self.apply_many(conn, [event])

    async def apply_many(self, conn: AsyncConnection, events: Sequence[EventBase]) -> int:
        """Apply consecutive events (in order) to their calls inside one transaction: one read of the calls' states,
        one write per changed call, and the last record of each ended call that changed queued (the versions
        between would be superseded in this same transaction). Returns how many deliveries it queued."""
        keys = list(dict.fromkeys((e.pbx_id, e.call_id) for e in events if e.call_id is not None))
        if not keys:
            return 0
        rows = await conn.execute(_READ_STATES, {"call_ids": [call for _, call in keys]})
        wanted = set(keys)  # the read is by call id alone: another PBX's call of the same id is left out
        stored = {(r.pbx_id, r.call_id): r.state for r in rows if (r.pbx_id, r.call_id) in wanted}
        states = {
            key: CallState.model_validate_json(stored[key])
            if key in stored
            else CallState(pbx_id=key[0], call_id=key[1])
            for key in keys
        }
        changed: set[tuple[str, str]] = set()
        ended: set[tuple[str, str]] = set()
        for event in events:
            if event.call_id is None:
                continue
            key = (event.pbx_id, event.call_id)
            state = states[key]
            if state.apply(event, self.route_points):
                changed.add(key)
                if state.ended:
                    ended.add(key)
        if not changed:
            return 0
        now = utcnow()

        def values(key: tuple[str, str]) -> dict[str, Any]:
            state = states[key]
            return {"state": state.model_dump_json(), "version": state.version, "updated_at": now}

        inserts = [{"pbx_id": k[0], "call_id": k[1], **values(k)} for k in keys if k in changed and k not in stored]
        updates = [{"key_pbx": k[0], "key_call": k[1], **values(k)} for k in keys if k in changed and k in stored]
        if inserts:
            await conn.execute(_INSERT_STATE, inserts)
        if updates:
            await conn.execute(_UPDATE_STATE, updates)
        return await self.enqueue(conn, *(states[key].record() for key in keys if key in ended))

    async def enqueue(self, conn: AsyncConnection, *records: CallRecord) -> int:
        """Queue each record for every target (inside the events' transaction), superseding the older versions
        still pending; returns how many rows it queued. Two statements whatever the number of records."""
        if not records:
            return 0
        now = utcnow()
        keys = [
            {"key_target": t, "key_record": r.record_id, "key_version": r.version}
            for r in records
            for t in self.targets
        ]
        rows = [
            {
                "target": target, "record_id": record.record_id, "version": record.version, "pbx_id": record.pbx_id,
                "call_id": record.call_id, "payload": payload, "state": "pending", "attempts": 0,
                "next_attempt_at": now, "created_at": now,
            }
            for record in records
            for payload in (record.model_dump_json(),)
            for target in self.targets
        ]  # fmt: skip
        await conn.execute(_SUPERSEDE, keys)
        await conn.execute(_QUEUE, rows)
        return len(rows)

    # ------------------------------------------------------------------ delivering

    def _claimable(self, now: datetime) -> sa.ColumnElement[bool]:
        o = crm_outbox.c
        return ((o.state == "pending") & (o.next_attempt_at <= now)) | (
            (o.state == "sending") & (o.claimed_until < now)
        )

    async def due(self, limit: int = 64) -> list[tuple[int, str]]:
        """(row id, target) of the rows due now, oldest first."""
        now = utcnow()
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(crm_outbox.c.id, crm_outbox.c.target)
                .where(self._claimable(now))
                .order_by(crm_outbox.c.id)
                .limit(limit)
            )
            return [(r.id, r.target) for r in rows]

    async def deliver_to_database(self, row_ids: Sequence[int]) -> list[Due]:
        """Deliver the built-in table's due rows among ``row_ids`` in one transaction; returns those delivered (to
        announce). Rows no longer due (delivered or superseded meanwhile) are left out."""
        if not row_ids:
            return []
        now = utcnow()
        o = crm_outbox.c
        async with self.engine.begin() as conn:
            taken = await conn.execute(
                crm_outbox.update()
                .where(o.id.in_(row_ids) & (o.target == DATABASE) & self._claimable(now))
                .values(
                    state="delivered",
                    delivered_at=now,
                    external_id=o.record_id,
                    claimed_by=self.replica,
                    claimed_until=None,
                    attempts=o.attempts + 1,
                    last_attempt_at=now,
                    last_error=None,
                    maybe_sent_at=None,
                )
                .returning(o.id, o.record_id, o.version, o.pbx_id, o.call_id, o.payload, o.attempts)
            )
            delivered = sorted(
                (Due(id=r.id, target=DATABASE, record_id=r.record_id, version=r.version, pbx_id=r.pbx_id,
                     call_id=r.call_id, payload=r.payload, attempts=r.attempts, maybe_sent_at=None,
                     external_id=r.record_id)
                 for r in taken),
                key=lambda due: due.id,
            )  # fmt: skip
            await _write_records(conn, [due.record for due in delivered], now)
        return delivered

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest pending row is due (None: nothing waits)."""
        async with self.engine.connect() as conn:
            at = await conn.scalar(
                sa.select(sa.func.min(crm_outbox.c.next_attempt_at)).where(crm_outbox.c.state == "pending")
            )
        at = utc(at)
        return None if at is None else max(0.0, (at - utcnow()).total_seconds())

    async def claim(self, row_id: int) -> Due | None:
        """Take one row for delivery (None: someone else has it, or another version of it is being sent)."""
        now = utcnow()
        o = crm_outbox.c
        other = crm_outbox.alias("other")
        busy = (
            sa.select(other.c.id)
            .where(
                (other.c.target == o.target)
                & (other.c.record_id == o.record_id)
                & (other.c.id != o.id)
                & (other.c.state == "sending")
                & (other.c.claimed_until >= now)
            )
            .exists()
        )
        async with self.engine.begin() as conn:
            claimed = await conn.execute(
                crm_outbox.update()
                .where((o.id == row_id) & self._claimable(now) & ~busy)
                .values(
                    state="sending",
                    claimed_by=self.replica,
                    claimed_until=now + timedelta(seconds=self.retry.claim_s),
                    attempts=o.attempts + 1,
                    # a stale claim: its deliverer died mid-attempt, so that attempt may have acted
                    maybe_sent_at=sa.case((o.state == "sending", o.last_attempt_at), else_=o.maybe_sent_at),
                    last_attempt_at=now,
                )
            )
            if claimed.rowcount != 1:
                return None
            row = (await conn.execute(sa.select(crm_outbox).where(o.id == row_id))).one()
            link = await conn.scalar(
                sa.select(crm_links.c.external_id).where(
                    (crm_links.c.target == row.target) & (crm_links.c.record_id == row.record_id)
                )
            )
        return Due(
            id=row.id,
            target=row.target,
            record_id=row.record_id,
            version=row.version,
            pbx_id=row.pbx_id,
            call_id=row.call_id,
            payload=row.payload,
            attempts=row.attempts,
            maybe_sent_at=utc(row.maybe_sent_at),
            external_id=link,
        )

    async def delivered(self, due: Due, external_id: str | None) -> bool:
        """Mark the row delivered (writing the built-in record first, for the database target). False when the row
        was no longer ours (another replica took it over after our claim ran out)."""
        now = utcnow()
        async with self.engine.begin() as conn:
            mine = (crm_outbox.c.id == due.id) & (crm_outbox.c.claimed_by == self.replica)
            done = await conn.execute(
                crm_outbox.update()
                .where(mine & (crm_outbox.c.state == "sending"))
                .values(
                    state="delivered",
                    delivered_at=now,
                    external_id=external_id,
                    claimed_until=None,
                    last_error=None,
                    maybe_sent_at=None,
                )
            )
            if done.rowcount != 1:
                return False
            if due.target == DATABASE:
                await _write_records(conn, [due.record], now)
            elif external_id is not None:
                await _link(conn, due, external_id, now)
        return True

    async def failed(self, due: Due, error: DeliveryError) -> str:
        """Record a failed attempt: retried later, or failed for good. Returns the row's new state."""
        now = utcnow()
        again = error.retryable and due.attempts < self.retry.max_attempts
        values: dict[str, object] = {"last_error": str(error)[:2000], "claimed_until": None}
        if error.maybe_sent:
            values["maybe_sent_at"] = crm_outbox.c.last_attempt_at
        if again:
            delay = self.retry.delay(due.attempts, error.retry_after_s)
            values.update(state="pending", next_attempt_at=now + timedelta(seconds=delay))
        else:
            values["state"] = "failed"
        async with self.engine.begin() as conn:
            await conn.execute(
                crm_outbox.update()
                .where((crm_outbox.c.id == due.id) & (crm_outbox.c.claimed_by == self.replica))
                .values(**values)
            )
        state = str(values["state"])
        if state == "failed":
            log.error("crm delivery failed for good", target=due.target, record_id=due.record_id,
                      version=due.version, attempts=due.attempts, error=str(error))  # fmt: skip
        else:
            log.warning("crm delivery will be retried", target=due.target, record_id=due.record_id,
                        attempts=due.attempts, error=str(error))  # fmt: skip
        return state


def _record_values(record: CallRecord, now: datetime) -> dict[str, Any]:
    return {
        "pbx_id": record.pbx_id,
        "call_id": record.call_id,
        "version": record.version,
        "direction": record.direction,
        "from_number": record.caller.number,
        "from_name": record.caller.name,
        "to_number": record.callee.number,
        "did": record.did,
        "answered_by": record.answered_by,
        "outcome": record.outcome,
        "end_cause": record.end_cause,
        "started_at": record.started_at,
        "answered_at": record.answered_at,
        "ended_at": record.ended_at,
        "ring_seconds": record.ring_seconds,
        "talk_seconds": record.talk_seconds,
        "transfers": [step.model_dump(mode="json") for step in record.transfers],
        "recording_url": record.recording_url,
        "summary": record.summary,
        "record": record.model_dump_json(),
        "updated_at": now,
    }


async def _write_records(conn: AsyncConnection, records: Sequence[CallRecord], now: datetime) -> None:
    """Write the records, each over an older version only, in one statement (of two versions of one record, the
    newer): the deliverer's transaction holds its rows' locks until this is done, so it must be short."""
    latest: dict[str, CallRecord] = {}
    for record in records:
        if record.record_id not in latest or record.version > latest[record.record_id].version:
            latest[record.record_id] = record
    if not latest:
        return
    rows = [{"record_id": r.record_id, "written_at": now, **_record_values(r, now)} for r in latest.values()]
    insert: postgresql.Insert | sqlite.Insert
    if conn.dialect.name == "postgresql":
        insert = postgresql.insert(crm_records).values(rows)
    elif conn.dialect.name == "sqlite":
        insert = sqlite.insert(crm_records).values(rows)
    else:
        raise RuntimeError(f"the CRM's built-in table needs SQLite or Postgres, not {conn.dialect.name}")
    changed = {name: insert.excluded[name] for name in rows[0] if name not in ("record_id", "written_at")}
    await conn.execute(
        insert.on_conflict_do_update(
            index_elements=[crm_records.c.record_id],
            set_=changed,
            where=crm_records.c.version < insert.excluded.version,
        )
    )


async def _link(conn: AsyncConnection, due: Due, external_id: str, now: datetime) -> None:
    key = (crm_links.c.target == due.target) & (crm_links.c.record_id == due.record_id)
    values = {"external_id": external_id, "version": due.version, "updated_at": now}
    updated = await conn.execute(crm_links.update().where(key).values(**values))
    if updated.rowcount == 0:
        await conn.execute(crm_links.insert().values(target=due.target, record_id=due.record_id, **values))
