"""Batch handlers: the events in flight in a replica's partitions committed together (a group commit), each call's
order kept, every event once, a failing group retried one event at a time, and the declaration's rules."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import create_async_engine

from hub.eventlog.migrate import upgrade_async
from hub.eventlog.tables import agent_tracking
from hub.sdk import (
    Agent,
    AgentRuntime,
    AlreadyHandled,
    Batch,
    CallAnswered,
    CallEnded,
    CallRinging,
    Context,
    RuntimeOptions,
    Tracked,
    Tracker,
)
from hub.sdk.batch import GroupCommit, GroupFailed
from schemas.events import EventBase
from tests.agents.support import FAST, CallScript, publish, running
from tests.helpers import eventually

pytestmark = pytest.mark.anyio

seen_db = sa.MetaData()
seen_rows = sa.Table(
    "test_batch_seen",
    seen_db,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(64), nullable=False),
    sa.Column("event_id", sa.Uuid, nullable=False),
)
EIGHT = RuntimeOptions(**{**FAST.__dict__, "partitions": 8})
AGENTS = ("grouped", "picky", "mixed", "batcher")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database: SQLite (embedded) or the shared Postgres, left as found."""
    db = (
        f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    asyncio.run(upgrade_async(db))
    yield db
    asyncio.run(_clean(db))


async def _clean(db: str) -> None:
    engine = create_async_engine(db)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(seen_db.drop_all)
            await conn.execute(agent_tracking.delete().where(agent_tracking.c.agent.in_(AGENTS)))
    finally:
        await engine.dispose()


async def _rows(url: str) -> list[tuple[str, uuid.UUID]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.select(seen_rows.c.call_id, seen_rows.c.event_id).order_by(seen_rows.c.id))
            return [(r.call_id, r.event_id) for r in rows]
    finally:
        await engine.dispose()


async def _tracked(url: str, agent: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(agent_tracking).where(agent_tracking.c.agent == agent)
            return int(await conn.scalar(query) or 0)
    finally:
        await engine.dispose()


async def _write(tx: Tracked) -> None:
    await tx.conn.execute(seen_rows.insert(), [{"call_id": e.call_id, "event_id": e.event_id} for e in tx.events])


def _recorder(name: str) -> tuple[Agent, list[list[EventBase]]]:
    """An agent whose batch handler writes a row per event and remembers each batch's events."""
    agent = Agent(name, database=seen_db)
    batches: list[list[EventBase]] = []

    @agent.on_batch(CallRinging, CallAnswered, CallEnded)
    async def record(batch: Batch) -> None:
        async with batch.transaction() as tx:
            batches.append(list(tx.events))
            await _write(tx)

    return agent, batches


def _calls(count: int) -> list[tuple[CallScript, list[EventBase]]]:
    out: list[tuple[CallScript, list[EventBase]]] = []
    for _ in range(count):
        call = CallScript()
        out.append((call, [call.ringing(), call.answered(), call.ended()]))
    return out


@pytest.mark.nats
async def test_events_in_flight_in_several_partitions_commit_together_each_once_each_call_in_order(
    nc: Client, url: str
) -> None:
    agent, batches = _recorder("grouped")
    tracker = await Tracker.open(url, agent.name, seen_db)
    calls = _calls(12)
    try:
        async with running(agent, nc, EIGHT, tracker=tracker) as runtime:
            for i in range(3):  # round by round, so each partition has its next event waiting
                await publish(nc, *(events[i] for _, events in calls))
            await eventually(lambda: runtime.handled >= 36, what="all 36 events handled")
            assert runtime.group is not None
            groups = runtime.group.groups
    finally:
        await tracker.close()
    rows = await _rows(url)
    assert sorted(e for _, e in rows) == sorted(e.event_id for _, events in calls for e in events)  # each once
    for call, events in calls:
        assert [e for c, e in rows if c == call.call_id] == [e.event_id for e in events]  # in the call's order
    assert max(len(b) for b in batches) > 1
    assert groups < 36
    for batch in batches:  # one event per call in a batch: a partition has one in flight
        assert len({e.call_id for e in batch}) == len(batch)
    assert await _tracked(url, agent.name) == 36


@pytest.mark.nats
async def test_a_failing_group_is_retried_one_event_at_a_time_and_only_the_bad_event_is_dead_lettered(
    nc: Client, url: str
) -> None:
    agent = Agent("picky", database=seen_db)
    calls = _calls(8)
    poison = calls[3][1][1]
    sizes: list[int] = []

    @agent.on_batch(CallRinging, CallAnswered, CallEnded)
    async def record(batch: Batch) -> None:
        async with batch.transaction() as tx:
            sizes.append(len(tx.events))
            await _write(tx)
            if any(e.event_id == poison.event_id for e in tx.events):
                raise ValueError("this event cannot be recorded")

    tracker = await Tracker.open(url, agent.name, seen_db)
    try:
        async with running(agent, nc, EIGHT, tracker=tracker) as runtime:
            for i in range(3):
                await publish(nc, *(events[i] for _, events in calls))
            await eventually(lambda: runtime.counts["dead_letters"] == 1, what="the bad event dead-lettered")
            await eventually(lambda: runtime.handled >= 23, what="the 23 good events handled")
    finally:
        await tracker.close()
    rows = await _rows(url)
    good = sorted(e.event_id for _, events in calls for e in events if e.event_id != poison.event_id)
    assert sorted(e for _, e in rows) == good  # the failed groups rolled back; each good event once
    assert poison.call_id is not None
    assert [e for c, e in rows if c == poison.call_id] == [calls[3][1][0].event_id, calls[3][1][2].event_id]
    assert await _tracked(url, agent.name) == 23


@pytest.mark.nats
async def test_an_event_an_on_handler_wants_is_handled_alone_in_its_place(nc: Client, url: str) -> None:
    agent = Agent("mixed", database=seen_db)
    order: list[tuple[str, uuid.UUID]] = []
    batched: set[uuid.UUID] = set()

    @agent.on_batch(CallRinging, CallAnswered, CallEnded)
    async def record(batch: Batch) -> None:
        async with batch.transaction() as tx:
            batched.update(e.event_id for e in tx.events)
            order.extend(("batch", e.event_id) for e in tx.events)

    @agent.on(CallAnswered)
    async def answered(event: CallAnswered, ctx: Context) -> None:
        order.append(("on", event.event_id))

    tracker = await Tracker.open(url, agent.name, seen_db)
    call = CallScript()
    ringing, answer, ended = call.ringing(), call.answered(), call.ended()
    try:
        async with running(agent, nc, EIGHT, tracker=tracker):
            await publish(nc, ringing, answer, ended)
            await eventually(lambda: len(order) == 4, what="the three events handled")
    finally:
        await tracker.close()
    # the answer went through the runtime's own path: its on handler, then the batch handler with it alone
    assert order == [
        ("batch", ringing.event_id),
        ("on", answer.event_id),
        ("batch", answer.event_id),
        ("batch", ended.event_id),
    ]
    assert batched == {ringing.event_id, answer.event_id, ended.event_id}


async def test_what_is_submitted_while_a_group_commits_forms_the_next_group() -> None:
    release = asyncio.Event()
    groups: list[list[EventBase]] = []

    async def handle(events: list[EventBase], positions: list[int | None]) -> None:
        groups.append(events)
        await release.wait()

    commit = GroupCommit(handle, max_events=3)
    events = [CallScript().ringing() for _ in range(5)]
    first = asyncio.create_task(commit.submit(events[0], 1))
    await eventually(lambda: len(groups) == 1, what="the first group started")
    rest = [asyncio.create_task(commit.submit(e, i)) for i, e in enumerate(events[1:], start=2)]
    await eventually(lambda: commit.waiting == 4, what="the submissions queued behind the first group")
    release.set()
    await asyncio.gather(first, *rest)
    assert [len(g) for g in groups] == [1, 3, 1]
    assert [e for g in groups for e in g] == events
    assert (commit.groups, commit.events) == (3, 5)


async def test_a_failed_group_fails_each_of_its_events_and_the_next_group_still_commits() -> None:
    bad = CallScript().ringing()

    async def handle(events: list[EventBase], positions: list[int | None]) -> None:
        if bad in events:
            raise RuntimeError("the database said no")

    commit = GroupCommit(handle)
    with pytest.raises(GroupFailed, match="group of 1 failed: RuntimeError: the database said no"):
        await commit.submit(bad, 1)
    await commit.submit(CallScript().ringing(), 2)
    assert (commit.groups, commit.events) == (1, 1)


async def test_a_batch_transaction_leaves_out_events_handled_before(url: str) -> None:
    tracker = await Tracker.open(url, "batcher", seen_db)
    a, b, c = (CallScript().ringing() for _ in range(3))
    try:
        async with tracker.transaction_many([a, b], [1, 2]) as tx:
            assert tx.events == [a, b]
        async with tracker.transaction_many([a, b, c], [1, 2, 3]) as tx:
            assert tx.events == [c]
        with pytest.raises(AlreadyHandled):
            async with tracker.transaction_many([b, a], [2, 1]):
                pytest.fail("the block ran for events already handled")
        assert await tracker.position() == 3
    finally:
        await tracker.close()


def test_a_batch_handler_needs_a_database_event_classes_and_is_one_per_agent() -> None:
    with pytest.raises(ValueError, match="declare Agent"):
        Agent("nodb").on_batch(CallRinging)
    agent = Agent("withdb", database=sa.MetaData())
    with pytest.raises(ValueError, match="needs the event classes"):
        agent.on_batch()

    @agent.on_batch(CallRinging)
    async def first(batch: Batch) -> None: ...

    with pytest.raises(ValueError, match="already has a batch handler"):
        agent.on_batch(CallEnded)
    assert agent.batch is not None
    assert agent.batch.handler is first


@pytest.mark.nats
async def test_an_agent_with_a_batch_handler_and_no_database_is_refused_at_once(nc: Client) -> None:
    agent, _ = _recorder("nodatabase")
    with pytest.raises(ValueError, match="give it its database"):
        AgentRuntime(agent, nc, EIGHT)
