"""The CRM agent on a real bus and database: one record per call through the outbox, late events as new versions,
redelivery harmless, and a backfill from the log (``masterlinc replay --to-original`` into ``--backfill``) that
rebuilds the same records, none twice."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import create_async_engine

from agents.crm import OBSERVED, CrmAgent, written_event_id
from agents.crm.tables import crm_calls, crm_links, crm_outbox, crm_records
from hub.eventlog import EventStore, LogRow
from hub.eventlog.migrate import upgrade_async
from hub.eventlog.tables import agent_tracking
from hub.sdk import CrmRecordWritten, RuntimeOptions
from schemas import events as ev
from schemas import subjects
from schemas.codec import dump_event
from tests.agents.support import FAST, cli_env, events_of, publish
from tests.crm.support import CallStory, emptied, outbox, records, running_crm
from tests.helpers import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


@pytest.fixture
async def db_url(store_url: str) -> str:
    """This suite runs on SQLite and on Postgres."""
    return await emptied(store_url)


async def test_a_call_becomes_one_record_in_the_database_and_is_announced(nc: Client, db_url: str) -> None:
    story = CallStory.typical()
    async with running_crm(nc, db_url):
        await publish(nc, *story.events)
        await wait_until(lambda: _count(records(db_url), 1), what="the record")
        await wait_until(lambda: _any(events_of(nc, CrmRecordWritten, story.call_id)), what="crm.record_written")
    [row] = await records(db_url)
    record = json.loads(row["record"])
    assert (row["call_id"], row["version"], row["outcome"], row["answered_by"]) == (story.call_id, 1, "answered", "101")
    assert (row["from_number"], row["did"], row["talk_seconds"], row["ring_seconds"]) == ("+15550100", "+15550199",
                                                                                         89.5, 4.3)  # fmt: skip
    assert [t["to"] for t in row["transfers"]] == ["101", "102"]
    assert record["routing"][0]["rule"] == "vip"
    [delivery] = await outbox(db_url)
    assert (delivery["target"], delivery["state"], delivery["attempts"]) == ("database", "delivered", 1)
    [written] = await events_of(nc, CrmRecordWritten, story.call_id)
    assert written.event_id == written_event_id(row["record_id"], "database", 1)
    assert (written.data.record_id, written.data.target) == (row["record_id"], "database")


async def test_a_transcript_after_the_end_updates_the_record_as_version_two(nc: Client, db_url: str) -> None:
    story = CallStory.typical()
    async with running_crm(nc, db_url):
        await publish(nc, *story.events)
        await wait_until(lambda: _count(records(db_url), 1), what="the record")
        late = CallStory(call_id=story.call_id, start=story.start).transcript(95.0, "Wants a quote for 12 seats")
        await publish(nc, *late.events)
        await wait_until(lambda: _version(db_url, 2), what="version 2")
    [row] = await records(db_url)
    assert row["summary"] == "Wants a quote for 12 seats"
    assert [(d["version"], d["state"]) for d in await outbox(db_url)] == [(1, "delivered"), (2, "delivered")]


async def test_events_handled_again_change_nothing(nc: Client, db_url: str) -> None:
    story = CallStory.typical()
    backfill = RuntimeOptions(**{**FAST.__dict__, "backfill": True})
    async with running_crm(nc, db_url, options=backfill) as crm:
        await publish(nc, *story.events)
        await wait_until(lambda: _count(records(db_url), 1), what="the record")
        before = await records(db_url)
        skipped = _skipped(crm)
        # the same events again, as a replay would send them (same ids, new message ids)
        await publish(nc, *story.events, headers={"Ml-Replay": "run1"})
        await wait_until(lambda: _true(_skipped(crm) == skipped + _observed(story.events)), what="the repeats")
    assert await records(db_url) == before
    assert len(await outbox(db_url)) == 1


async def test_a_backfill_from_the_log_rebuilds_the_same_records_none_twice(
    nc: Client, db_url: str, nats_server: str
) -> None:
    stories = [CallStory.typical(caller=f"+1555010{i}") for i in range(3)]
    all_events = [e for s in stories for e in s.events]
    store = await EventStore.open(db_url)  # the event log, as the recorder files it
    try:
        await store.insert_batch(
            [LogRow.from_message(i + 1, subjects.event_subject(e), dump_event(e)) for i, e in enumerate(all_events)]
        )
    finally:
        await store.close()
    backfill = RuntimeOptions(**{**FAST.__dict__, "backfill": True})
    async with running_crm(nc, db_url, options=backfill) as crm:
        await publish(nc, *all_events)  # live
        await wait_until(lambda: _count(records(db_url), 3), what="three records")
        live = {r["record_id"]: r["record"] for r in await records(db_url)}
        await _forget_everything(db_url)  # a new CRM database: rebuild from the log
        await _replay(nats_server, db_url)
        await wait_until(lambda: _count(records(db_url), 3), what="the rebuilt records")
        rebuilt = {r["record_id"]: r["record"] for r in await records(db_url)}
        skipped = _skipped(crm)
        await _replay(nats_server, db_url)  # and once more: every event is known, nothing changes
        expected = skipped + _observed(all_events)
        await wait_until(lambda: _true(_skipped(crm) == expected), what="the second replay to be skipped")
    assert rebuilt == live
    assert {r["record_id"]: r["record"] for r in await records(db_url)} == live
    assert sorted((d["record_id"], d["version"]) for d in await outbox(db_url)) == sorted((k, 1) for k in live)


# ---------------------------------------------------------------------------- helpers


@pytest.mark.postgres
async def test_connections_cut_by_the_database_are_replaced_and_no_event_is_lost(
    nc: Client, own_postgres_url: str
) -> None:
    """The agent's pool does not ping before each use (two round trips an event): a connection the server dropped
    fails one attempt, the pool is invalidated, and the retry runs on a new connection."""
    db_url = own_postgres_url
    await upgrade_async(db_url)
    first, second = CallStory.typical(), CallStory.typical()
    async with running_crm(nc, db_url) as crm:
        await publish(nc, *first.events)
        await wait_until(lambda: _count(records(db_url), 1), what="the first record")
        assert await _cut_connections(db_url) > 0
        await publish(nc, *second.events)
        await wait_until(lambda: _count(records(db_url), 2), what="the second record, after the cut")
        assert crm.runtime is not None
        assert crm.runtime.counts["dead_letters"] == 0
    assert {r["call_id"] for r in await records(db_url)} == {first.call_id, second.call_id}


async def _cut_connections(db_url: str) -> int:
    """What a database restart does to pooled connections: the server ends every other session on the database."""
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            cut = await conn.scalar(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            return int(cut or 0)
    finally:
        await engine.dispose()


async def _replay(nats_url: str, db_url: str) -> None:
    env = cli_env(nats_url, DATABASE_URL=db_url)
    done = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "hub.cli", "replay", "--to-original"], env=env, capture_output=True, timeout=60
        )
    )
    assert done.returncode == 0, done.stderr.decode()


async def _forget_everything(db_url: str) -> None:
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            for table in (crm_calls, crm_records, crm_outbox, crm_links):
                await conn.execute(sa.delete(table))
            await conn.execute(sa.delete(agent_tracking).where(agent_tracking.c.agent == "crm"))
    finally:
        await engine.dispose()


def _skipped(crm: CrmAgent) -> int:
    assert crm.runtime is not None
    return crm.runtime.counts["skipped"]


def _observed(events: list[ev.EventBase]) -> int:
    """How many of these events the CRM agent reads (and tracks): the types it observes."""
    return sum(1 for e in events if type(e) in OBSERVED)


async def _count(rows: Awaitable[list[Any]], n: int) -> bool:
    return len(await rows) == n


async def _any(found: Awaitable[list[Any]]) -> bool:
    return bool(await found)


async def _true(value: object) -> bool:
    return bool(value)


async def _version(db_url: str, version: int) -> bool:
    rows = await records(db_url)
    return bool(rows) and rows[0]["version"] == version
