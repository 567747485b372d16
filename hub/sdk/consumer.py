"""Reading one partition of the feed for one agent: one event at a time, in order, with explicit acks.

For each message: a replayed copy (``Ml-Replay``) is acked and dropped unless the agent runs with ``--backfill``; a
message that does not parse is dead-lettered at once; otherwise the runtime dispatches it. A failing handler is
retried here with backoff (the message stays in progress, so the partition's order holds), then dead-lettered to
``ml.dlq.agent-<name>`` with the reason and terminated. While a handler runs, the message is kept alive
(``in_progress``), so only a dead replica's events are redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram

from hub.bus import REPLAY_HEADER
from hub.bus.pull import BatchPuller, ack_info
from hub.logs import get_logger
from hub.sdk.feed import consumer_config, consumer_name, source_position
from schemas import subjects
from schemas.codec import DecodeError, parse_event
from schemas.events import EventBase

log = get_logger(__name__)

EVENTS = Counter("ml_agent_events_total", "Feed events an agent replica took, by outcome", ["agent", "outcome"])
HANDLE_SECONDS = Histogram(
    "ml_agent_handle_seconds", "Time to handle one event", ["agent"], buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2, 10)
)


class Dispatcher(Protocol):
    """What the consumer hands events to (the runtime). ``redelivered``: not this event's first delivery (the
    server's count, or a retry here), so an earlier one may have committed."""

    async def dispatch(self, event: EventBase, replay: bool, position: int | None, redelivered: bool) -> None: ...


@dataclass(frozen=True, kw_only=True)
class ConsumerOptions:
    agent: str
    ack_wait_s: float
    attempts: int
    backfill: bool
    fetch_expires_s: float = 1.0


async def ensure_consumer(
    js: JetStreamContext, options: ConsumerOptions, partition: int, filter_subjects: list[str]
) -> None:
    await js.add_consumer(
        subjects.FEED_STREAM, consumer_config(options.agent, partition, filter_subjects, options.ack_wait_s)
    )


class PartitionConsumer:
    def __init__(
        self, nc: Client, js: JetStreamContext, options: ConsumerOptions, partition: int, dispatcher: Dispatcher
    ) -> None:
        self._nc = nc
        self._js = js
        self._options = options
        self.partition = partition
        self._dispatcher = dispatcher
        self._stop = asyncio.Event()
        self.handled = 0
        self.dropped_replays = 0
        self.dead_letters = 0

    def stop(self) -> None:
        """Stop pulling now (the partition moved): an event being handled is finished first, so order holds."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        """Pull and handle until :meth:`stop`. A fetch waiting for events is abandoned at once; its pull request
        dies with the unsubscribed inbox, and anything that arrived meanwhile is nak'ed for the new owner."""
        name = consumer_name(self._options.agent, self.partition)
        puller = await BatchPuller(self._nc, subjects.FEED_STREAM, name).start()
        try:
            while not self._stop.is_set():
                fetch = asyncio.ensure_future(puller.fetch(16, expires=self._options.fetch_expires_s, idle=0))
                stopped = asyncio.ensure_future(self._stop.wait())
                try:
                    done, _ = await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
                except asyncio.CancelledError:
                    fetch.cancel()
                    raise
                finally:
                    stopped.cancel()
                if fetch not in done:
                    fetch.cancel()
                    try:  # 3.11's wait_for can let a fetch finish despite the cancel: give back what it got
                        late = await fetch
                    except asyncio.CancelledError:
                        late = []
                    for msg in late:
                        with contextlib.suppress(Exception):
                            await msg.nak()
                    break
                for msg in fetch.result():
                    await self.handle(msg)
        finally:
            await puller.stop()
            for msg in puller.drain():
                with contextlib.suppress(Exception):
                    await msg.nak()

    async def handle(self, msg: Msg) -> None:
        headers = msg.headers or {}
        replay = REPLAY_HEADER in headers
        if replay and not self._options.backfill:
            self.dropped_replays += 1
            EVENTS.labels(self._options.agent, "replay_dropped").inc()
            await msg.ack()
            return
        try:
            event = parse_event(msg.data)
        except DecodeError as exc:
            await self._dead_letter(msg, f"not a valid event: {exc.reason}")
            return
        position = source_position(headers)
        redelivered = ack_info(msg).delivered > 1
        started = time.perf_counter()
        delay = 0.2
        for attempt in range(1, self._options.attempts + 1):
            try:
                again = redelivered or attempt > 1
                await self._run_alive(msg, self._dispatcher.dispatch(event, replay, position, again))
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception(
                    "handler failed", agent=self._options.agent, event_type=event.type_name(), attempt=attempt
                )
                if attempt == self._options.attempts:
                    await self._dead_letter(msg, f"handler failed {attempt} times: {type(exc).__name__}: {exc}")
                    return
                await self._run_alive(msg, asyncio.sleep(delay))
                delay = min(delay * 2, 5.0)
        self.handled += 1
        EVENTS.labels(self._options.agent, "handled").inc()
        HANDLE_SECONDS.labels(self._options.agent).observe(time.perf_counter() - started)
        await msg.ack()

    async def _run_alive(self, msg: Msg, work: Awaitable[None]) -> None:
        """Await ``work`` while telling the server, every third of ack_wait, that the message is still being handled."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self._options.ack_wait_s / 3)
                if done:
                    task.result()
                    return
                await msg.in_progress()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        self.dead_letters += 1
        EVENTS.labels(self._options.agent, "dead_lettered").inc()
        source = f"agent-{self._options.agent}"
        headers = {
            "Ml-Reason": reason[:1000],
            "Ml-Source": source,
            "Ml-Subject": msg.subject,
            "Nats-Msg-Id": f"{source}-{msg.metadata.sequence.stream}",
        }
        try:
            await self._js.publish(subjects.dlq_subject(source), msg.data, headers=headers)
        except Exception:
            log.exception("dead letter not published", agent=self._options.agent)
        log.error("event dead-lettered", agent=self._options.agent, reason=reason)
        await msg.term()
