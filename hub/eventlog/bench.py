"""Event log benchmarks (issue 3, measured as in D§11): recorder drain, publish->commit lag, replay speed.

Each figure is measured next to its raw baseline in the same run: a raw COPY (Postgres) or executemany (SQLite) of
the same rows into the same indexed table, and a raw core-NATS publish of the same payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from hub.bench.bus_bench import bench_nats
from hub.bench.registry import BenchOptions, BenchResult, Figure, benchmark, percentile
from hub.bus import EventPublisher, connect, ensure_streams
from hub.config import BusConfig, RecorderConfig
from hub.demo import synthetic_stream
from hub.eventlog.migrate import upgrade_async
from hub.eventlog.store import EventStore, InsertOutcome, LogFilter, LogRow
from hub.recorder import Recorder
from hub.replay import ReplayRequest, replay
from hub.runner import Health
from schemas import subjects
from schemas.codec import dump_event
from schemas.events import EventBase

LOCAL_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def kib_events(count: int, seed: int = 1) -> list[EventBase]:
    """Synthetic call events padded to about 1 KiB each (the size the targets are stated for)."""
    out: list[EventBase] = []
    stream = synthetic_stream("bench", seed=seed)
    pad = "x" * 460
    for _ in range(count):
        event = next(stream)
        data = getattr(event, "data", None)
        if data is not None and "from_name" in type(data).model_fields:
            event = event.model_copy(update={"data": data.model_copy(update={"from_name": pad})})
        elif data is not None and "participant" in type(data).model_fields and data.participant is not None:
            participant = data.participant.model_copy(update={"party_caller_name": pad})
            event = event.model_copy(update={"data": data.model_copy(update={"participant": participant})})
        out.append(event)
    return out


@contextlib.asynccontextmanager
async def scratch_database(options: BenchOptions, dialect: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one measurement, dropped afterwards."""
    if dialect == "sqlite":
        with tempfile.TemporaryDirectory(prefix="ml-bench-") as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            await upgrade_async(url)
            yield url
        return
    import asyncpg

    base = options.database_url if options.database_url and options.database_url.startswith("postgresql") else LOCAL_PG
    admin = base.rsplit("/", 1)[0] + "/postgres"
    name = f"ml_bench_{uuid.uuid4().hex[:10]}"
    dsn = admin.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = base.rsplit("/", 1)[0] + f"/{name}"
    try:
        await upgrade_async(url)
        yield url
    finally:
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def _prefill(nc: Any, evs: Sequence[EventBase]) -> None:
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_stream(subjects.EVENTS_STREAM)
    await ensure_streams(js, BusConfig())
    publisher = EventPublisher(js)
    for i, event in enumerate(evs):
        await publisher.publish(event)
        if i % 20_000 == 19_999:
            await publisher.flush(ack_wait=60)
    await publisher.flush(ack_wait=60)


async def _drain(nats_url: str, db_url: str, total: int, replicas: int) -> float:
    """Events/s recorded by ``replicas`` recorder processes sharing the durable consumer (as deployed), from the first
    event committed to the last."""
    env = {**os.environ, "NATS_URL": nats_url, "DATABASE_URL": db_url, "ML_LOG_LEVEL": "WARNING"}
    spawned = time.perf_counter()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub.cli", "recorder", env=env, stderr=asyncio.subprocess.DEVNULL
        )
        for _ in range(replicas)
    ]
    store = await EventStore.open(db_url)
    try:
        first: tuple[float, int] | None = None
        while True:
            done = await store.count(LogFilter())
            now = time.perf_counter()
            if first is None and done > 0:
                first = (now, done)
            if done >= total:
                break
            if any(p.returncode is not None for p in procs):
                raise RuntimeError("a recorder process exited during the drain")
            await asyncio.sleep(0.05)
        assert first is not None
        if first[1] >= total:  # everything landed in the first commit: count from the spawn (startup included)
            return total / (now - spawned)
        return (total - first[1]) / max(1e-6, now - first[0])
    finally:
        await store.close()
        for proc in procs:
            proc.terminate()
            await proc.wait()


async def _raw_baseline(url: str, rows: Sequence[LogRow]) -> float:
    """The same rows into the same indexed table without the recorder: COPY (Postgres) or executemany (SQLite)."""
    if url.startswith("postgresql"):
        import asyncpg

        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        await conn.execute("TRUNCATE events")
        records = [
            (r.seq, r.event_id, r.type, r.schema_version, r.pbx_id, r.call_id, r.subject, r.occurred_at,
             r.observed_at, r.inferred, r.correlation_id, r.payload)
            for r in rows
        ]  # fmt: skip
        columns = ["seq", "event_id", "type", "schema_version", "pbx_id", "call_id", "subject", "occurred_at",
                   "observed_at", "inferred", "correlation_id", "payload"]  # fmt: skip
        started = time.perf_counter()
        for i in range(0, len(records), 1000):
            async with conn.transaction():
                await conn.copy_records_to_table("events", records=records[i : i + 1000], columns=columns)
        elapsed = time.perf_counter() - started
        await conn.close()
        return len(rows) / elapsed
    path = url.split(":///", 1)[1]
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("DELETE FROM events")
    db.commit()
    params = [
        (r.seq, r.event_id.hex, r.type, r.schema_version, r.pbx_id, r.call_id, r.subject,
         r.occurred_at.isoformat(), r.observed_at.isoformat(), r.inferred, r.correlation_id, r.payload)
        for r in rows
    ]  # fmt: skip
    sql = (
        "INSERT INTO events (seq, event_id, type, schema_version, pbx_id, call_id, subject, occurred_at, "
        "observed_at, inferred, correlation_id, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    started = time.perf_counter()
    for i in range(0, len(params), 1000):
        db.executemany(sql, params[i : i + 1000])
        db.commit()
    elapsed = time.perf_counter() - started
    db.close()
    return len(rows) / elapsed


async def _drain_figures(options: BenchOptions, dialect: str, count: int, replicas: int) -> tuple[float, float]:
    evs = kib_events(count)
    rows = [LogRow.from_message(i + 1, subjects.event_subject(e), dump_event(e)) for i, e in enumerate(evs)]
    async with bench_nats(options) as nats_url, scratch_database(options, dialect) as url:
        nc = await connect(nats_url, name="bench-recorder")
        try:
            await _prefill(nc, evs)
        finally:
            await nc.close()
        hub_rate = await _drain(nats_url, url, count, replicas)
        store = await EventStore.open(url)
        try:
            recorded = await store.count(LogFilter())
        finally:
            await store.close()
        if recorded != count:
            raise RuntimeError(f"the drain recorded {recorded} events of {count}")
        raw_rate = await _raw_baseline(url, rows)
    return hub_rate, raw_rate


@benchmark("recorder.drain", description="Recorder drain of a pre-filled stream of 1 KiB events vs raw COPY")
async def recorder_drain(options: BenchOptions) -> BenchResult:
    count = options.scale(int(os.environ.get("ML_BENCH_DRAIN_EVENTS", "200000")), 3000)
    one, raw = await _drain_figures(options, "postgresql", count, replicas=1)
    two, raw_2 = await _drain_figures(options, "postgresql", count, replicas=2)
    lite_count = max(1000, count // 4)
    lite, lite_raw = await _drain_figures(options, "sqlite", lite_count, replicas=1)
    return BenchResult(
        name="recorder.drain",
        figures=[
            Figure(name="postgres, 1 recorder", value=one, unit="events/s"),
            Figure(name="postgres, 2 recorders", value=two, unit="events/s"),
            Figure(name="sqlite, 1 recorder", value=lite, unit="events/s"),
        ],
        baseline=[
            Figure(name="postgres raw COPY", value=(raw + raw_2) / 2, unit="rows/s"),
            Figure(name="sqlite raw executemany", value=lite_raw, unit="rows/s"),
        ],
        headline="postgres with 2 recorders / raw COPY",
        ratio=two / ((raw + raw_2) / 2),
        target=">= 15,000 events/s into Postgres",
        met=None if options.quick else max(one, two) >= 15_000,
        notes=f"{count} events into Postgres, {lite_count} into SQLite; ~1 KiB each; recorders are `masterlinc "
        "recorder` processes sharing one durable consumer (batches of 1,000)",
    )


class _TimedStore(EventStore):
    """Records publish->commit lag per event (observed_at is stamped just before publishing)."""

    lags: list[float]

    async def insert_batch(self, rows: Sequence[LogRow]) -> InsertOutcome:
        outcome = await super().insert_batch(rows)
        now = time.time()
        self.lags.extend(now - r.observed_at.timestamp() for r in rows)
        return outcome


_PUBLISHER = r"""
import asyncio, sys, time, uuid
from hub.bus import EventPublisher, connect
from hub.eventlog.bench import kib_events
from schemas.common import utcnow

async def main(url, rate, total):
    template = kib_events(2000, seed=3)
    nc = await connect(url, name="bench-lag-publisher")
    publisher = EventPublisher(nc.jetstream())
    started = time.perf_counter()
    for i in range(total):
        ahead = i / rate - (time.perf_counter() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
        event = template[i % len(template)].model_copy(update={"event_id": uuid.uuid4(), "observed_at": utcnow()})
        await publisher.publish(event)
    await publisher.flush(ack_wait=60)
    print(total / (time.perf_counter() - started))
    await nc.close()

asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
"""


@benchmark("recorder.lag", description="Publish -> commit lag p99 under a steady 5,000 events/s")
async def recorder_lag(options: BenchOptions) -> BenchResult:
    rate = 5000.0
    seconds = 20 if not options.quick else 1
    total = int(rate * seconds)
    async with bench_nats(options) as nats_url, scratch_database(options, "postgresql") as url:
        nc = await connect(nats_url, name="bench-lag")
        js = nc.jetstream()
        with contextlib.suppress(Exception):
            await js.delete_stream(subjects.EVENTS_STREAM)
        await ensure_streams(js, BusConfig())
        store = await _TimedStore.open(url)
        assert isinstance(store, _TimedStore)
        store.lags = []
        recorder = Recorder(js, store, RecorderConfig(batch_size=1000, fetch_timeout_s=0.2), Health())
        stopping = asyncio.Event()
        task = asyncio.create_task(recorder.run(stopping))
        # The load comes from another process, as it does in production (ingest publishes, the recorder records).
        publisher = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _PUBLISHER, nats_url, str(rate), str(total), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await publisher.communicate()
        achieved = float(out.decode().strip() or 0)
        while len(store.lags) < total:  # noqa: ASYNC110 - polling the recorder's progress in a benchmark
            await asyncio.sleep(0.05)
        stopping.set()
        await task
        await store.close()
        await nc.close()
    lags_ms = [lag * 1000 for lag in store.lags]
    p50, p99 = percentile(lags_ms, 50), percentile(lags_ms, 99)
    return BenchResult(
        name="recorder.lag",
        figures=[
            Figure(name="lag p50", value=p50, unit="ms"),
            Figure(name="lag p99", value=p99, unit="ms"),
            Figure(name="offered rate", value=achieved, unit="events/s"),
        ],
        baseline=[],
        headline="lag p99",
        ratio=None,
        better="lower",
        target="p99 < 1 s under a concurrent 5,000 events/s",
        met=None if options.quick else p99 < 1000,
        notes=f"{total} events of ~1 KiB over {seconds}s into Postgres, published by a separate process",
    )


@benchmark("replay.sandbox", description="Replay from the Postgres log to the sandbox vs raw core publish")
async def replay_sandbox(options: BenchOptions) -> BenchResult:
    count = options.scale(200_000, 5000)
    evs = kib_events(count, seed=5)
    rows = [LogRow.from_message(i + 1, subjects.event_subject(e), dump_event(e)) for i, e in enumerate(evs)]
    async with bench_nats(options) as nats_url, scratch_database(options, "postgresql") as url:
        store = await EventStore.open(url)
        for i in range(0, len(rows), 5000):
            await store.insert_batch(rows[i : i + 5000])
        nc = await connect(nats_url, name="bench-replay")
        report = await replay(ReplayRequest(), store, nc)
        payloads = [r.payload.encode() for r in rows]
        started = time.perf_counter()
        for i, payload in enumerate(payloads):
            await nc.publish(f"bench.raw.{i % 64}", payload)
        await nc.flush()
        raw_rate = count / (time.perf_counter() - started)
        await nc.close()
        await store.close()
    return BenchResult(
        name="replay.sandbox",
        figures=[Figure(name="replay", value=report.rate, unit="events/s")],
        baseline=[Figure(name="raw core publish", value=raw_rate, unit="msgs/s")],
        headline="replay / raw publish",
        ratio=report.rate / raw_rate,
        target=">= 50,000 events/s",
        met=None if options.quick else report.rate >= 50_000,
        notes=f"{count} events of ~1 KiB read from Postgres by keyset pages of 5,000",
    )
