"""The built-in table's outbox rows delivered a batch at a time, on SQLite and Postgres: each row once, whichever of
two replicas runs the pass, and of two versions of one record the newer one is what the table keeps."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agents.crm.outbox import DATABASE, CrmStore
from agents.crm.record import CallState
from agents.crm.tables import crm_calls, crm_outbox
from hub.eventlog.migrate import upgrade_async
from tests.agents.support import ROUTE_POINT
from tests.crm.support import CallStory, emptied, records

pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(await emptied(store_url))
    yield engine
    await engine.dispose()


async def _queue(store: CrmStore, story: CallStory) -> CallState:
    """Apply the call's events as the agent does (each in its own transaction), which queues its record."""
    assert story.events
    state = CallState(pbx_id=story.events[0].pbx_id, call_id=story.call_id)
    for event in story.events:
        async with store.engine.begin() as conn:
            await store.apply(conn, event)
        state.apply(event, store.route_points)
    return state


async def _states(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(crm_outbox.c.state, sa.func.count()).group_by(crm_outbox.c.state))
        return {row[0]: row[1] for row in rows}


async def test_two_replicas_delivering_the_same_rows_write_each_record_once(
    engine: AsyncEngine, store_url: str
) -> None:
    one = CrmStore(engine, targets=[DATABASE], replica="one", route_points=[ROUTE_POINT])
    two = CrmStore(engine, targets=[DATABASE], replica="two", route_points=[ROUTE_POINT])
    for _ in range(12):
        await _queue(one, CallStory.typical())
    due = await one.due()
    assert len(due) == 12 and {target for _, target in due} == {DATABASE}
    ids = [row_id for row_id, _ in due]

    first, second = await asyncio.gather(one.deliver_to_database(ids), two.deliver_to_database(ids))

    delivered = [d.id for d in first] + [d.id for d in second]
    assert sorted(delivered) == sorted(ids)  # every row by one of them, none by both
    assert await _states(engine) == {"delivered": 12}
    assert len(await records(store_url)) == 12
    assert await one.deliver_to_database(ids) == []  # nothing is due any more
    assert all(d.attempts == 1 for d in first + second)


async def test_a_late_version_in_the_same_batch_is_the_one_the_table_keeps(engine: AsyncEngine, store_url: str) -> None:
    store = CrmStore(engine, targets=[DATABASE], replica="one", route_points=[ROUTE_POINT])
    story = CallStory.typical()
    await _queue(store, story)
    [(first_row, _)] = await store.due()
    late = CallStory(call_id=story.call_id, start=story.start).transcript(95.0, "Wants a quote for 12 seats")
    await _queue(store, late)
    due = [row_id for row_id, _ in await store.due()]
    assert first_row not in due and len(due) == 1  # version 1 was superseded while still pending

    [written] = await store.deliver_to_database([first_row, *due])

    assert written.version == 2
    [row] = await records(store_url)
    assert (row["version"], row["summary"]) == (2, "Wants a quote for 12 seats")
    assert await _states(engine) == {"superseded": 1, "delivered": 1}


@pytest.mark.postgres
async def test_a_new_version_is_queued_without_waiting_for_a_deliverer_holding_the_old_one(postgres_url: str) -> None:
    """The handler's supersede waited on the row a deliverer held: under the soak each event then took 0.1-2 s."""
    await upgrade_async(postgres_url)
    engine = create_async_engine(await emptied(postgres_url))
    try:
        store = CrmStore(engine, targets=[DATABASE], replica="one", route_points=[ROUTE_POINT])
        story = CallStory.typical()
        await _queue(store, story)
        [(held_row, _)] = await store.due()
        late = CallStory(call_id=story.call_id, start=story.start).transcript(95.0, "Wants a quote for 12 seats")
        async with engine.connect() as deliverer:  # mid-transaction, as deliver_to_database is while it writes
            await deliverer.begin()
            await deliverer.execute(sa.select(crm_outbox.c.id).where(crm_outbox.c.id == held_row).with_for_update())
            await asyncio.wait_for(_queue(store, late), timeout=10)
            await deliverer.rollback()
        due = [row_id for row_id, _ in await store.due()]
        assert held_row in due and len(due) == 2  # the held row was being delivered: left, and the newer follows
        await store.deliver_to_database(due)
        [row] = await records(postgres_url)
        assert (row["version"], row["summary"]) == (2, "Wants a quote for 12 seats")
        assert await _states(engine) == {"delivered": 2}
    finally:
        await engine.dispose()


async def test_calls_applied_together_give_the_states_and_records_of_calls_applied_one_event_at_a_time(
    engine: AsyncEngine, store_url: str
) -> None:
    """A batch (the agent's group commit) interleaves several calls, and may hold more than one event of a call:
    its states, record versions and queued rows are those of the events applied one by one."""
    one = CrmStore(engine, targets=[DATABASE], replica="one", route_points=[ROUTE_POINT])
    stories = [CallStory.typical() for _ in range(3)]
    expected = [await _queue(one, story) for story in stories]
    async with engine.begin() as conn:
        singly = {r.call_id: r.state for r in await conn.execute(sa.select(crm_calls.c.call_id, crm_calls.c.state))}
        await conn.execute(sa.delete(crm_calls))
        await conn.execute(sa.delete(crm_outbox))
    interleaved = [e for step in itertools.zip_longest(*(s.events for s in stories)) for e in step if e is not None]
    cut = len(interleaved) // 2  # two batches: some calls' states are read back from the first
    queued = 0
    for batch in (interleaved[:cut], interleaved[cut:]):
        async with engine.begin() as conn:
            queued += await one.apply_many(conn, batch)
    async with engine.connect() as conn:
        together = {r.call_id: r.state for r in await conn.execute(sa.select(crm_calls.c.call_id, crm_calls.c.state))}
    assert together == singly
    assert [CallState.model_validate_json(together[s.call_id]) for s in stories] == expected
    assert queued == 3  # each ended call's record once: its last version in the batch
    assert await _states(engine) == {"pending": 3}
