"""Replay recorded events from the log onto the bus (D§5).

Default target: the sandbox subjects ``ml.sbx.<run>.evt...`` on core NATS (not streamed: fast, and nothing acts on
them unless asked). ``to_original`` publishes to the original subjects through JetStream with the header
``Ml-Replay: <run>`` and the dedup id ``<event id>:<run>``: the recorder skips such messages, so a replay is never
recorded twice, and agents that act on calls drop them.

Pacing: ``instant`` (as fast as the bus takes them, optionally capped by ``rate`` events/s) or ``original`` (the
recorded gaps between ``occurred_at``, divided by ``speed``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from nats.aio.client import Client

from hub.bus import REPLAY_HEADER, EventPublisher
from hub.eventlog.store import EventStore, LogFilter
from schemas import subjects
from schemas.events import EVENT_CLASSES
from schemas.identity import new_ulid
from schemas.tokens import check_pbx_id, check_token

Pace = Literal["instant", "original"]


class ReplayArgumentError(ValueError):
    """A replay request that cannot be right: the message says what to change."""


@dataclass(frozen=True, kw_only=True)
class ReplayRequest:
    call_ids: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    pbx_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    to_original: bool = False
    pace: Pace = "instant"
    speed: float = 1.0
    rate: float | None = None
    dry_run: bool = False
    run_id: str = field(default_factory=lambda: new_ulid().lower())

    def log_filter(self) -> LogFilter:
        return LogFilter(
            call_ids=self.call_ids, types=self.types, pbx_id=self.pbx_id, since=self.since, until=self.until
        )


@dataclass
class ReplayReport:
    run_id: str
    target: str
    scanned: int = 0
    sent: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


async def validate(request: ReplayRequest, store: EventStore) -> None:
    """Refuse requests that cannot be what the operator meant, before anything is sent."""
    for event_type in request.types:
        if event_type not in EVENT_CLASSES:
            close = [t for t in EVENT_CLASSES if t.split(".")[-1] == event_type.split(".")[-1]]
            hint = f" (did you mean {', '.join(close)}?)" if close else "; `masterlinc schema export` lists them"
            raise ReplayArgumentError(f"unknown event type {event_type!r}{hint}")
    if request.since and request.until and request.since > request.until:
        raise ReplayArgumentError(
            f"--since {request.since.isoformat()} is after --until {request.until.isoformat()}: swap them"
        )
    if request.speed <= 0:
        raise ReplayArgumentError("--speed must be greater than 0 (2 plays twice as fast as recorded)")
    if request.rate is not None and request.rate <= 0:
        raise ReplayArgumentError("--rate must be greater than 0 events per second")
    if request.pbx_id is not None:
        check_pbx_id(request.pbx_id)
    check_token(request.run_id, "replay run id")
    for call_id in request.call_ids:
        check_token(call_id, "call id")
        if not await store.known_call(call_id):
            raise ReplayArgumentError(f"call {call_id!r} is not in the event log (check the id with `events tail`)")


async def replay(
    request: ReplayRequest,
    store: EventStore,
    nc: Client | None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Send the selected events in log order. ``progress(sent, total)`` is called as it goes."""
    await validate(request, store)
    target = "original subjects" if request.to_original else f"sandbox ml.sbx.{request.run_id}"
    report = ReplayReport(run_id=request.run_id, target=target)
    total = await store.count(request.log_filter())
    if request.dry_run:
        report.scanned = total
        return report
    if nc is None:
        raise ReplayArgumentError("a NATS connection is needed unless --dry-run")
    publisher = EventPublisher(nc.jetstream()) if request.to_original else None
    started = time.perf_counter()
    first_at: datetime | None = None
    for_every = max(1, total // 200)
    sandbox = subjects.sandbox_subject(request.run_id, "ml.evt.x")[: -len("evt.x")]  # "ml.sbx.<run>."
    async for row in store.iter_events(request.log_filter()):
        report.scanned += 1
        if request.pace == "original":
            first_at = first_at or row.occurred_at
            due = (row.occurred_at - first_at).total_seconds() / request.speed
            ahead = due - (time.perf_counter() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        elif request.rate is not None:
            ahead = report.sent / request.rate - (time.perf_counter() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        if publisher is not None:
            await publisher.publish_raw(
                row.subject,
                row.payload,
                f"{row.event_id}:{request.run_id}",
                headers={REPLAY_HEADER: request.run_id},
            )
        else:  # the sandbox subject itself marks the replay: no headers to encode per message
            await nc.publish(sandbox + row.subject[3:], row.payload)
        report.sent += 1
        if progress is not None and report.sent % for_every == 0:
            progress(report.sent, total)
    if publisher is not None:
        await publisher.flush()
    else:
        await nc.flush()
    report.seconds = time.perf_counter() - started
    if progress is not None:
        progress(report.sent, total)
    return report
