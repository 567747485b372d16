"""An agent's position recorded with its effects: the 0002 migration, the tracking table on SQLite and Postgres, and
redelivery and replay made harmless (database effects once, bus effects through derived command ids)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import create_async_engine

from hub.bus import EventPublisher
from hub.eventlog.migrate import current, downgrade_async, script_location, upgrade, upgrade_async
from hub.sdk import AlreadyHandled, CallAnswered, CommandResult, Context, Drop, RuntimeOptions, Tracker
from hub.sdk.agent import Agent
from schemas.subjects import event_subject
from tests.agents.support import FAST, CallScript, publish, running, worker_rig
from tests.helpers import wait_until

pytestmark = pytest.mark.anyio

notes_db = sa.MetaData()
notes = sa.Table(
    "test_notes",
    notes_db,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(64), nullable=False),
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    yield url
    asyncio.run(_clean(url))  # the Postgres database is shared by the session: leave it as found


async def _clean(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(notes_db.drop_all)
            await conn.execute(sa.text("DELETE FROM agent_tracking"))
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _count(url: str, table: sa.Table) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
    finally:
        await engine.dispose()


async def test_migration_0002_adds_the_tracking_table_and_goes_down_and_up_again(db_url: str) -> None:
    head = ScriptDirectory(str(script_location())).get_current_head()  # later revisions (0003: CRM) come on top
    assert await current(db_url) == head
    assert {"events", "agent_tracking"} <= await _tables(db_url)
    await downgrade_async(db_url, "0001")
    assert await current(db_url) == "0001"
    tables = await _tables(db_url)
    assert "agent_tracking" not in tables
    assert "events" in tables  # the event log is untouched
    await upgrade_async(db_url)
    assert await current(db_url) == head
    assert "agent_tracking" in await _tables(db_url)


async def test_effects_and_position_commit_together_and_a_repeat_is_skipped(db_url: str) -> None:
    tracker = await Tracker.open(db_url, "notes", notes_db)
    call = CallScript()
    event = call.answered()
    try:
        async with tracker.transaction(event, position=41) as conn:
            await conn.execute(notes.insert().values(call_id=call.call_id))
        assert await tracker.seen(event.event_id)
        assert await tracker.position() == 41
        ran = False
        with pytest.raises(AlreadyHandled):
            async with tracker.transaction(event, position=41) as conn:
                ran = True  # never reached: the tracking row exists
        assert not ran
        with pytest.raises(RuntimeError, match="boom"):  # effects and position roll back together
            await _failing_write(tracker, call)
        assert await tracker.position() == 41
    finally:
        await tracker.close()
    assert await _count(db_url, notes) == 1


async def _failing_write(tracker: Tracker, call: CallScript) -> None:
    async with tracker.transaction(call.ended(), position=42) as conn:
        await conn.execute(notes.insert().values(call_id=call.call_id))
        raise RuntimeError("boom")


async def test_a_tracker_on_a_database_without_the_migration_says_what_to_run(tmp_path: Path) -> None:
    from hub.sdk.tracking import TrackingNotMigrated

    with pytest.raises(TrackingNotMigrated, match="masterlinc db upgrade"):
        await Tracker.open(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", "notes")


@pytest.mark.nats
async def test_a_redelivered_and_a_replayed_event_change_the_database_once(nc: Client, db_url: str) -> None:
    """The handler commits, then fails before the ack (as a crash would): the retry, and later a replay of the same
    event to an agent run with --backfill, find the tracking row and change nothing."""
    agent = Agent("notes", database=notes_db)
    bodies: list[str] = []
    crash_once = {"armed": True}

    @agent.on(CallAnswered)
    async def note(event: CallAnswered, ctx: Context) -> None:
        async with ctx.transaction() as conn:
            bodies.append(str(event.event_id))
            await conn.execute(notes.insert().values(call_id=ctx.call_id))
        if crash_once.pop("armed", False):
            raise RuntimeError("died after the commit, before the ack")

    options = RuntimeOptions(**{**FAST.__dict__, "backfill": True, "handler_attempts": 3})
    tracker = await Tracker.open(db_url, agent.name, notes_db)
    call = CallScript()
    event = call.answered()
    try:
        async with running(agent, nc, options, tracker=tracker) as runtime:
            await publish(nc, event)
            await wait_until(lambda: _handled(runtime, 1), what="the event, retried after the failure")
            await publish(nc, event, headers={"Ml-Replay": "run7"})
            await wait_until(lambda: _handled(runtime, 2), what="the replayed copy")
    finally:
        await tracker.close()
    assert bodies == [str(event.event_id)]  # the transaction body ran once
    assert await _count(db_url, notes) == 1


@pytest.mark.nats
async def test_a_redelivered_event_sends_its_command_once(nc: Client) -> None:
    """The command id derives from the event id: the retry's send is dropped by JetStream as a duplicate and its
    result read from the worker's idempotency record; the simulator's journal shows one drop."""
    agent = Agent("dropper")
    results: list[CommandResult] = []
    crash_once = {"armed": True}

    @agent.on(CallAnswered)
    async def hang_up(event: CallAnswered, ctx: Context) -> None:
        results.append(await ctx.send(Drop))
        if crash_once.pop("armed", False):
            raise RuntimeError("died after the command, before the ack")

    async with worker_rig(nc) as rig, running(agent, nc, RuntimeOptions(**{**FAST.__dict__, "handler_attempts": 3})):
        rig.sim.engine.place_call("+15550100", "800")
        call = rig.script(rig.route_point_leg())
        await publish(nc, call.answered())
        await wait_until(lambda: _len(results, 2), what="the command sent on both attempts")
    first, again = results
    assert first.ok, first.error
    assert again.ok
    assert again.duplicate
    assert first.command_id == again.command_id
    assert len(rig.requests("/drop")) == 1


async def _handled(runtime: object, count: int) -> bool:
    return bool(runtime.handled >= count)  # type: ignore[attr-defined]


async def _len(items: Sequence[object], count: int) -> bool:
    return len(items) >= count


@pytest.mark.nats
async def test_a_first_delivery_is_not_read_for_and_an_event_published_twice_stops_at_the_transaction(
    nc: Client, db_url: str
) -> None:
    """No tracking read for a first delivery (a round trip an event); the same event published again as a new
    message (its first delivery too) is stopped by the transaction's INSERT, so the body runs once."""
    agent = Agent("notes", database=notes_db)
    bodies: list[str] = []

    @agent.on(CallAnswered)
    async def note(event: CallAnswered, ctx: Context) -> None:
        async with ctx.transaction() as conn:
            bodies.append(str(event.event_id))
            await conn.execute(notes.insert().values(call_id=ctx.call_id))

    tracker = await Tracker.open(db_url, agent.name, notes_db)
    reads: list[object] = []
    read = tracker.seen

    async def counted(event_id: uuid.UUID) -> bool:
        reads.append(event_id)
        return await read(event_id)

    tracker.seen = counted  # type: ignore[method-assign]
    event = CallScript().answered()
    publisher = EventPublisher(nc.jetstream())
    try:
        async with running(agent, nc, FAST, tracker=tracker) as runtime:
            for copy in ("first", "second"):
                await publisher.publish_raw(event_subject(event), event.model_dump_json().encode(), copy)
            await publisher.flush()
            await wait_until(lambda: _handled(runtime, 2), what="both copies handled")
    finally:
        await tracker.close()
    assert bodies == [str(event.event_id)]
    assert reads == []
    assert runtime.skipped == 1
    assert await _count(db_url, notes) == 1
