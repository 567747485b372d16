"""The recorder through a real nats-server into SQLite and Postgres: once per event id, dead letters, crashes and
database outages lose and double nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from nats.aio.client import Client
from prometheus_client import REGISTRY

from hub.bus import EventPublisher, connect
from hub.config import RecorderConfig
from hub.demo import synthetic_stream
from hub.eventlog import EventStore, LogFilter
from hub.eventlog.migrate import upgrade
from hub.natsd import free_port
from hub.recorder import Recorder
from hub.runner import Health
from schemas import subjects
from tests.helpers import fresh_bus, private_postgres, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


@pytest.fixture
async def nc(nats_server: str) -> AsyncIterator[Client]:
    client = await connect(nats_server, name="test-recorder")
    await fresh_bus(client.jetstream())
    yield client
    await client.close()


async def publish(nc: Client, count: int, seed: int = 1) -> list[str]:
    publisher = EventPublisher(nc.jetstream())
    ids: list[str] = []
    stream = synthetic_stream("main", seed=seed)
    for _ in range(count):
        event = next(stream)
        ids.append(str(event.event_id))
        await publisher.publish(event)
    await publisher.flush()
    return ids


@contextlib.asynccontextmanager
async def recording(nc: Client, store: EventStore, **config: Any) -> AsyncIterator[Recorder]:
    recorder = Recorder(nc.jetstream(), store, RecorderConfig(**config), Health())
    stopping = asyncio.Event()
    task = asyncio.create_task(recorder.run(stopping))
    try:
        yield recorder
    finally:
        stopping.set()
        await task


async def test_every_event_is_recorded_once_even_when_redelivered(nc: Client, store: EventStore) -> None:
    ids = await publish(nc, 300)
    async with recording(nc, store, batch_size=64) as recorder:
        await wait_until(lambda: _count_is(store, 300), what="300 events in the log")
    assert recorder.stats.inserted == 300
    # the consumer forgets its position: every message comes again
    await nc.jetstream().delete_consumer(subjects.EVENTS_STREAM, "ml-recorder")
    async with recording(nc, store, batch_size=64) as again:
        await wait_until(lambda: _fetched(again, 300), what="the redelivery")
    assert again.stats.duplicates == 300
    assert again.stats.inserted == 0
    stored = {str(e.event_id) async for e in store.iter_events(LogFilter())}
    assert stored == set(ids)


async def _count_is(store: EventStore, n: int) -> bool:
    return await store.count(LogFilter()) == n


async def _fetched(recorder: Recorder, n: int) -> bool:
    return recorder.stats.fetched >= n


async def test_a_malformed_message_is_dead_lettered_at_once_with_its_reason(nc: Client, store: EventStore) -> None:
    js = nc.jetstream()
    await js.publish("ml.evt.main.call.01JX.ended", b"{not json", headers={"Nats-Msg-Id": "bad-1"})
    await js.publish("ml.evt.main.call.01JX.ended", b'{"type": "call.exploded"}', headers={"Nats-Msg-Id": "bad-2"})
    await publish(nc, 5)
    async with recording(nc, store) as recorder:
        await wait_until(lambda: _count_is(store, 5), what="the good events")
        await wait_until(lambda: _fetched(recorder, 7), what="the bad ones")
    letters = await store.list_dead_letters()
    assert sorted(letter.reason.split(":")[0] for letter in letters) == [
        "not JSON",
        "unknown event type 'call.exploded'",
    ]
    assert recorder.stats.dead == 2
    dlq = await js.stream_info(subjects.DLQ_STREAM)
    assert dlq.state.messages == 2
    info = await js.consumer_info(subjects.EVENTS_STREAM, "ml-recorder")
    assert info.num_ack_pending == 0  # terminated, not waiting for redelivery
    assert info.num_redelivered == 0


async def test_a_replay_to_the_original_subjects_is_not_recorded_twice(nc: Client, store: EventStore) -> None:
    from hub.replay import ReplayRequest, replay

    await publish(nc, 40)
    async with recording(nc, store) as recorder:
        await wait_until(lambda: _count_is(store, 40), what="40 events")
        report = await replay(ReplayRequest(to_original=True), store, nc)
        assert report.sent == 40
        await wait_until(lambda: _fetched(recorder, 80), what="the replayed copies")
    assert recorder.stats.replay_skipped == 40
    assert await store.count(LogFilter()) == 40


# --------------------------------------------------------------------------- crashes and outages (subprocesses)


def _recorder_env(nats_url: str, db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_")}
    env.update({"NATS_URL": nats_url, "DATABASE_URL": db_url, "ML_LOG_FORMAT": "json", **extra})
    return env


def _start_recorder(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "recorder"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


async def test_recorder_killed_between_write_and_ack_loses_and_doubles_nothing(
    nc: Client, store: EventStore, log_url: str, nats_server: str
) -> None:
    ids = await publish(nc, 250)
    env = _recorder_env(
        nats_server,
        log_url,
        ML_RECORDER__BATCH_SIZE="100",
        ML_RECORDER__ACK_WAIT_S="1",
        ML_RECORDER__FAULT_PAUSE_AFTER_WRITE_S="60",
    )
    with _start_recorder(env) as proc:
        assert proc.stdout is not None
        line = await anyio.to_thread.run_sync(proc.stdout.readline)
        assert line.startswith("written "), line
        written = int(line.split()[1])
        proc.send_signal(signal.SIGKILL)  # committed, never acked
        proc.wait(10)
    assert await store.count(LogFilter()) == written
    env.pop("ML_RECORDER__FAULT_PAUSE_AFTER_WRITE_S")
    with _start_recorder(env) as proc:
        try:
            await wait_until(lambda: _count_is(store, 250), timeout=30, what="the restarted recorder to catch up")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
    stored = [str(e.event_id) async for e in store.iter_events(LogFilter())]
    assert len(stored) == 250
    assert set(stored) == set(ids)


@pytest.fixture
def restartable_postgres() -> Iterator[Any]:
    cluster = private_postgres(free_port())
    if cluster is None:
        pytest.skip("Debian's PostgreSQL binaries (initdb, pg_ctl) are not installed")
    cluster.start()
    try:
        upgrade(cluster.url)
        yield cluster
    finally:
        cluster.destroy()


@pytest.mark.postgres
async def test_database_restarted_mid_stream_loses_and_doubles_nothing(nc: Client, restartable_postgres: Any) -> None:
    store = await EventStore.open(restartable_postgres.url)
    try:
        ids = await publish(nc, 200, seed=7)
        async with recording(nc, store, batch_size=50, retry_backoff_max_s=0.5) as recorder:
            await wait_until(lambda: _fetched(recorder, 1), what="the first batch")
            await anyio.to_thread.run_sync(restartable_postgres.stop)
            more = await publish(nc, 200, seed=8)  # published while the database is down
            await wait_until(lambda: _retried(recorder), what="a failed write")
            await anyio.to_thread.run_sync(restartable_postgres.start)
            await wait_until(lambda: _count_is(store, 400), timeout=30, what="catch-up after the restart")
        stored = [str(e.event_id) async for e in store.iter_events(LogFilter())]
        assert len(stored) == 400
        assert set(stored) == set(ids + more)
        assert recorder.stats.store_retries >= 1
    finally:
        await store.close()


@pytest.mark.postgres
async def test_an_outage_longer_than_ack_wait_redelivers_nothing_held(nc: Client, restartable_postgres: Any) -> None:
    """Every fetched batch (the one being written and those queued behind it) is kept alive through the outage."""
    store = await EventStore.open(restartable_postgres.url)
    try:
        async with recording(nc, store, batch_size=50, ack_wait_s=1.0) as recorder:  # backoff capped at 0.5 s
            await anyio.to_thread.run_sync(restartable_postgres.stop)
            ids = await publish(nc, 400, seed=9)
            await wait_until(lambda: _held(recorder, 4), what="the batches fetched behind the failing one")
            # well past ack_wait: each retry (at most 0.5 s apart) keeps every held message alive
            await wait_until(lambda: _retries(recorder, 10), timeout=30, what="an outage of several ack_waits")
            await anyio.to_thread.run_sync(restartable_postgres.start)
            await wait_until(lambda: _count_is(store, 400), timeout=30, what="catch-up after the restart")
        stored = [str(e.event_id) async for e in store.iter_events(LogFilter())]
        assert sorted(stored) == sorted(ids)
        assert recorder.stats.redelivered == 0
        assert recorder.stats.dead == 0
        assert REGISTRY.get_sample_value("ml_recorder_consumer_pending") == 0  # the lag gauge: caught up
    finally:
        await store.close()


async def _held(recorder: Recorder, batches: int) -> bool:
    return len(recorder._held) >= batches


async def _retries(recorder: Recorder, count: int) -> bool:
    return recorder.stats.store_retries >= count


async def _retried(recorder: Recorder) -> bool:
    return recorder.stats.store_retries > 0
