"""The recorder: ML_EVENTS -> the event log, each event id once, acked only after commit (D§4).

A durable pull consumer is fetched in batches; each batch is written in one transaction and then acked.
- A message that is not a valid event goes to the dead letters at once (with the reason) and is terminated.
- A message published by a replay to the original subjects (header ``Ml-Replay``) is acked and not recorded again.
- While the database is unavailable, the batch is held: its messages, and those of the batches fetched behind it,
  are kept alive with ``in_progress`` (so a database outage of any length never counts toward max_deliver), the
  write is retried with backoff, and fetching stops.
- Killed between write and ack, the recorder's batch is redelivered after ack_wait and the unique event id makes the
  second write a no-op: nothing is lost or doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Gauge, Histogram

from hub.bus import REPLAY_HEADER
from hub.bus.pull import BatchPuller, ack_info
from hub.config import RecorderConfig, Settings
from hub.eventlog.store import DeadLetterInput, EventStore, LogRow, StoreUnavailable
from hub.logs import get_logger
from hub.runner import Health, ServiceContext, run_service, until_ready, wait_or_stop
from hub.services import open_bus
from schemas import subjects
from schemas.codec import DecodeError

log = get_logger(__name__)

EVENTS = Counter("ml_recorder_events_total", "Messages the recorder handled, by outcome", ["outcome"])
BATCH_SECONDS = Histogram(
    "ml_recorder_batch_seconds", "Time to write and ack one batch", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)
)
STORE_RETRIES = Counter("ml_recorder_store_retries_total", "Batch writes retried because the database was down")
PENDING = Gauge("ml_recorder_consumer_pending", "Messages in ML_EVENTS not yet delivered to the recorder")

DLQ_SOURCE = "recorder"


@dataclass
class _Parsed:
    """A fetched batch after parsing: rows to write, messages to ack, dead letters, replayed copies to skip."""

    started: float
    fetched: int
    rows: list[LogRow] = field(default_factory=list)
    to_ack: list[Msg] = field(default_factory=list)
    dead: list[tuple[Msg, str]] = field(default_factory=list)
    replayed: list[Msg] = field(default_factory=list)
    redelivered: int = 0

    def messages(self) -> list[Msg]:
        return [*self.to_ack, *self.replayed, *(msg for msg, _ in self.dead)]


@dataclass
class RecorderStats:
    fetched: int = 0
    inserted: int = 0
    duplicates: int = 0
    dead: int = 0
    replay_skipped: int = 0
    batches: int = 0
    store_retries: int = 0
    redelivered: int = 0


def consumer_config(config: RecorderConfig) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=config.durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=config.ack_wait_s,
        max_deliver=config.max_deliver,
        max_ack_pending=max(config.batch_size * 10, 10_000),
        filter_subject=subjects.EVENTS_ALL,
    )


class Recorder:
    """Moves events from the bus to the store. One instance per process; several processes may share the consumer."""

    def __init__(self, js: JetStreamContext, store: EventStore, config: RecorderConfig, health: Health) -> None:
        self._js = js
        self._store = store
        self._config = config
        self._health = health
        self.stats = RecorderStats()
        self._held: list[_Parsed] = []  # fetched, not yet acked: all kept alive while the database is away
        # each retry keeps the held messages alive, so retries must come well within ack_wait
        self._backoff_max_s = min(config.retry_backoff_max_s, config.ack_wait_s / 2)

    async def subscribe(self) -> BatchPuller:
        await self._js.add_consumer(subjects.EVENTS_STREAM, consumer_config(self._config))
        return await BatchPuller(self._js._nc, subjects.EVENTS_STREAM, self._config.durable).start()

    async def run(self, stopping: asyncio.Event) -> None:
        """Fetch and write in a pipeline: the next batch is fetched while the current one is written."""
        psub = await self.subscribe()
        batches: asyncio.Queue[_Parsed] = asyncio.Queue(maxsize=2)
        fetcher = asyncio.create_task(self._fetch(psub, batches, stopping))
        try:
            while not (stopping.is_set() and batches.empty()) and not fetcher.done():
                try:
                    parsed = await asyncio.wait_for(batches.get(), 0.25)
                except TimeoutError:
                    continue
                await self._commit(parsed, stopping)
        finally:
            fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetcher
            await psub.stop()
        if fetcher.done() and not fetcher.cancelled() and fetcher.exception() is not None:
            raise fetcher.exception()  # type: ignore[misc]

    async def _fetch(self, psub: BatchPuller, out: asyncio.Queue[_Parsed], stopping: asyncio.Event) -> None:
        """Fetch and parse (CPU in this process) while the writer waits on the database (CPU in Postgres)."""
        while not stopping.is_set():
            try:
                msgs = await psub.fetch(self._config.batch_size, expires=self._config.fetch_timeout_s)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.NoRespondersError) as exc:
                self._health.set("nats", False, str(exc) or type(exc).__name__)
                await wait_or_stop(stopping, 0.5)
                continue
            if not msgs:
                continue
            self._health.set("nats", True)
            parsed = self._parse(msgs)
            self._held.append(parsed)
            await out.put(parsed)

    async def handle_batch(self, msgs: Sequence[Msg], stopping: asyncio.Event | None = None) -> None:
        """Write one fetched batch, then ack it. Returns without acking only when stopping mid-outage."""
        parsed = self._parse(msgs)
        self._held.append(parsed)
        await self._commit(parsed, stopping)

    def _parse(self, msgs: Sequence[Msg]) -> _Parsed:
        parsed = _Parsed(started=time.perf_counter(), fetched=len(msgs))
        pending = 0
        for msg in msgs:
            ack = ack_info(msg)
            pending = ack.pending
            if ack.delivered > 1:
                parsed.redelivered += 1
            if msg.headers and REPLAY_HEADER in msg.headers:
                parsed.replayed.append(msg)
                continue
            try:
                parsed.rows.append(LogRow.from_message(ack.stream_seq, msg.subject, msg.data))
                parsed.to_ack.append(msg)
            except DecodeError as exc:
                parsed.dead.append((msg, exc.reason))
        PENDING.set(pending)
        return parsed

    async def _commit(self, parsed: _Parsed, stopping: asyncio.Event | None) -> None:
        try:
            await self._write_and_ack(parsed, stopping)
        finally:
            self._held.remove(parsed)

    async def _write_and_ack(self, parsed: _Parsed, stopping: asyncio.Event | None) -> None:
        self.stats.fetched += parsed.fetched
        self.stats.redelivered += parsed.redelivered
        EVENTS.labels("redelivered").inc(parsed.redelivered)
        for msg, reason in parsed.dead:
            await self._dead_letter(msg, reason, stopping)
        if parsed.rows and not await self._write(parsed.rows, stopping):
            return
        pause = self._config.fault_pause_after_write_s
        if pause:  # fault injection for the crash tests: the test kills us inside this window
            print(f"written {len(parsed.rows)}", flush=True)
            await asyncio.sleep(pause)
        for msg in parsed.to_ack:
            await msg.ack()
        for msg in parsed.replayed:
            await msg.ack()
        self.stats.replay_skipped += len(parsed.replayed)
        EVENTS.labels("replay_skipped").inc(len(parsed.replayed))
        self.stats.batches += 1
        BATCH_SECONDS.observe(time.perf_counter() - parsed.started)

    async def _keep_held_alive(self) -> None:
        """``in_progress`` for every fetched, unacked message: an outage must not count toward max_deliver."""
        for parsed in self._held:
            for msg in parsed.messages():
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    async def _write(self, rows: list[LogRow], stopping: asyncio.Event | None) -> bool:
        delay = 0.1
        while True:
            try:
                outcome = await self._store.insert_batch(rows)
            except StoreUnavailable as exc:
                self._health.set("database", False, str(exc))
                self.stats.store_retries += 1
                STORE_RETRIES.inc()
                log.warning("database unavailable; holding the batch", rows=len(rows), retry_in_s=round(delay, 2))
                await self._keep_held_alive()
                if stopping is not None and await wait_or_stop(stopping, delay):
                    return False
                if stopping is None:
                    await asyncio.sleep(delay)
                delay = min(self._backoff_max_s, delay * 2) * random.uniform(0.8, 1.2)
                continue
            self._health.set("database", True)
            self.stats.inserted += outcome.inserted
            self.stats.duplicates += outcome.duplicates
            EVENTS.labels("inserted").inc(outcome.inserted)
            EVENTS.labels("duplicate").inc(outcome.duplicates)
            return True

    async def _dead_letter(self, msg: Msg, reason: str, stopping: asyncio.Event | None) -> None:
        """Record the message with its reason (log table and ML_DLQ), then terminate it: it will never parse."""
        seq = msg.metadata.sequence.stream
        headers = dict(msg.headers or {})
        letter = DeadLetterInput(
            source=DLQ_SOURCE, subject=msg.subject, reason=reason, payload=msg.data, headers=headers, stream_seq=seq
        )
        delay = 0.1
        while True:
            try:
                await self._store.add_dead_letter(letter)
                break
            except StoreUnavailable as exc:
                self._health.set("database", False, str(exc))
                await self._keep_held_alive()
                if stopping is not None and await wait_or_stop(stopping, delay):
                    return
                delay = min(self._backoff_max_s, delay * 2)
        dlq_headers = {
            "Ml-Reason": reason[:1000],
            "Ml-Source": DLQ_SOURCE,
            "Ml-Subject": msg.subject,
            "Ml-Stream-Seq": str(seq),
            "Nats-Msg-Id": f"{DLQ_SOURCE}-{seq}",
        }
        with contextlib.suppress(Exception):  # the database row is the record; the DLQ stream is a notification
            await self._js.publish(subjects.dlq_subject(DLQ_SOURCE), msg.data, headers=dlq_headers)
        await msg.term()
        self.stats.dead += 1
        EVENTS.labels("dead").inc()
        log.warning("dead letter", subject=msg.subject, stream_seq=seq, reason=reason)


async def recorder_main(ctx: ServiceContext, settings: Settings) -> None:
    """The recorder service body: waits for its bus and database (reporting not-ready meanwhile), then records."""
    ctx.health.set("nats", False, "connecting")
    ctx.health.set("database", False, "connecting")
    url = settings.effective_database_url()
    store = await until_ready("database", lambda: EventStore.open(url), StoreUnavailable, ctx.health, ctx.stopping)
    if store is None:
        return
    try:
        nc = await open_bus(ctx, settings, "masterlinc-recorder")
        if nc is None:
            return
        try:
            js = nc.jetstream()
            recorder = Recorder(js, store, settings.recorder, ctx.health)
            await recorder.run(ctx.stopping)
            log.info("recorder stopped", **vars(recorder.stats))
        finally:
            await nc.close()
    finally:
        await store.close()


async def run_recorder_service(settings: Settings) -> int:
    return await run_service(
        "recorder", lambda ctx: recorder_main(ctx, settings), host=settings.http.host, port=settings.http.port
    )
