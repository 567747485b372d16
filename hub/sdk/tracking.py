"""Recording an agent's position with its database effects, in one transaction (the ``agent_tracking`` table).

``Context.transaction()`` opens a transaction and first inserts (agent, event id): when that row exists, the event
was already handled by an earlier delivery whose effects committed, so :class:`AlreadyHandled` is raised before the
agent's code runs and the runtime acks the event. Otherwise the agent's writes and the tracking row commit together.
A redelivery, a second replica that got the same event during a rebalance, or a replay with ``--backfill`` (same
event id) therefore change nothing. Works on Postgres and SQLite (same migration, ``masterlinc db upgrade``).

``transaction_many()`` does the same for several consecutive events of one partition (a batch handler's): one
read finds those already handled, one INSERT tracks the rest, and the block gets only those.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from hub.eventlog.tables import agent_tracking
from schemas.events import EventBase


class AlreadyHandled(Exception):
    """This event's effects were already committed by an earlier delivery: nothing to do."""


class TrackingUnavailable(ConnectionError):
    """The database did not answer."""


class TrackingNotMigrated(RuntimeError):
    """The database has no agent_tracking table."""


# Built once: SQLAlchemy then reuses the compiled form without rebuilding the expression per event.
_SEEN = sa.select(agent_tracking.c.event_id).where(
    agent_tracking.c.agent == sa.bindparam("agent"), agent_tracking.c.event_id == sa.bindparam("event_id")
)
_TRACK = agent_tracking.insert()
_SEEN_MANY = sa.select(agent_tracking.c.event_id).where(
    agent_tracking.c.agent == sa.bindparam("agent"),
    agent_tracking.c.event_id.in_(sa.bindparam("event_ids", expanding=True)),
)


@dataclass(frozen=True)
class Tracked:
    """An open batch transaction: its connection, and the events of the batch not handled before (in order)."""

    conn: AsyncConnection
    events: Sequence[EventBase]


class Tracker:
    def __init__(self, engine: AsyncEngine, agent: str) -> None:
        self.engine = engine
        self.agent = agent
        # the duplicate check reads one row: no BEGIN and ROLLBACK around it
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")

    @classmethod
    async def open(cls, url: str, agent: str, metadata: sa.MetaData | None = None) -> Tracker:
        """Connect, check the tracking table exists, and create the agent's own tables when missing.

        No ping before each use (two round trips an event, a quarter of the agent's database work): a connection
        the server dropped fails one attempt, which invalidates the pool, and the consumer's retry runs on a new one.
        """
        engine = create_async_engine(url)
        if url.startswith("sqlite"):
            sa_event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            async with engine.begin() as conn:
                has_table = await conn.run_sync(lambda c: sa.inspect(c).has_table(agent_tracking.name))
                if not has_table:
                    raise TrackingNotMigrated(
                        "the database has no agent_tracking table: run `masterlinc db upgrade` first"
                    )
                if metadata is not None:
                    await conn.run_sync(metadata.create_all)
        except (OSError, OperationalError, InterfaceError) as exc:
            await engine.dispose()
            raise TrackingUnavailable(f"the agent's database did not answer: {exc}") from None
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, agent)

    async def close(self) -> None:
        await self.engine.dispose()

    async def seen(self, event_id: uuid.UUID) -> bool:
        async with self._reads.connect() as conn:
            row = await conn.execute(_SEEN, {"agent": self.agent, "event_id": event_id})
            return row.first() is not None

    async def position(self) -> int | None:
        """The highest ML_EVENTS sequence this agent recorded (None before the first)."""
        async with self.engine.connect() as conn:
            value = await conn.scalar(
                sa.select(sa.func.max(agent_tracking.c.position)).where(agent_tracking.c.agent == self.agent)
            )
        return int(value) if value is not None else None

    @asynccontextmanager
    async def transaction(self, event: EventBase, position: int | None) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            try:  # first, so a duplicate is known before the agent's code runs (the block is then skipped)
                await conn.execute(
                    _TRACK,
                    {
                        "agent": self.agent,
                        "event_id": event.event_id,
                        "call_id": event.call_id,
                        "event_type": event.type_name(),
                        "position": position,
                    },
                )
            except IntegrityError:
                raise AlreadyHandled(f"event {event.event_id} was already handled by {self.agent}") from None
            yield conn

    @asynccontextmanager
    async def transaction_many(
        self, events: Sequence[EventBase], positions: Sequence[int | None]
    ) -> AsyncIterator[Tracked]:
        """One transaction for several events: those already handled are left out of ``Tracked.events`` (all of
        them: :class:`AlreadyHandled`); the others' tracking rows commit with the block's writes. Another replica
        tracking one of them meanwhile fails the INSERT (IntegrityError), and the whole batch with it."""
        async with self.engine.begin() as conn:
            ids = [e.event_id for e in events]
            done = set((await conn.execute(_SEEN_MANY, {"agent": self.agent, "event_ids": ids})).scalars())
            fresh = [(e, p) for e, p in zip(events, positions, strict=True) if e.event_id not in done]
            if not fresh:
                raise AlreadyHandled(f"the {len(events)} events were already handled by {self.agent}")
            await conn.execute(
                _TRACK,
                [
                    {
                        "agent": self.agent,
                        "event_id": e.event_id,
                        "call_id": e.call_id,
                        "event_type": e.type_name(),
                        "position": p,
                    }
                    for e, p in fresh
                ],
            )
            yield Tracked(conn, [e for e, _ in fresh])


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    """WAL (D§9) and a busy timeout: handlers of several partitions write from one process at once."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
