"""What XAPI can only tell by being asked (reference §5.3, §5.5, §5.7): presence, chat, and calls nobody saw.

- **Presence** (``Users``: CurrentProfileName, IsRegistered, QueueStatus) is polled; each change of an extension is
  one ``presence.changed`` (plus ``queue.agent_logged_in/out`` for QueueStatus), id = UUIDv5(pbx, extension, n-th
  change). The last state and the counters are saved in KV after JetStream acknowledged the events, so a restart
  neither repeats nor misses a change (a change during the downtime is reported at the first poll).
- **Chat** (``ChatHistoryView``, read-only: 3CX has no send API) is polled from a watermark (the newest TimeSent
  seen, with the ids of the messages at that instant); a message's id is derived from its fields, so a re-read
  after a restart publishes nothing twice.
- **Reconciliation**: calls that began and ended while the websocket was down are read from the call log
  (``GetCallLogData`` for the outage window) and published as inferred ``call.created`` + ``call.ended``.
  Assumption (unverified: 3CX does not document it): the log's ``CallId`` is the Call Control ``callid``; a
  CallId the call-id map already knows is never reported again.

The first poll of a PBX never seen before sets the baseline silently (there is no "previous" to compare with).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from hub.ingest.calls import CallRegistry
from hub.ingest.outbox import Outbox
from hub.logs import get_logger
from hub.pbx.errors import PbxError
from hub.pbx.xapi import XapiClient, parse_datetime, parse_duration
from hub.runner import wait_or_stop
from schemas import events as e
from schemas.common import Direction
from schemas.identity import deterministic_event_id, leg_event_id
from schemas.tokens import TOKEN_RE

log = get_logger(__name__)

PRESENCE_FIELDS = ("Number", "IsRegistered", "CurrentProfileName", "QueueStatus")


def _now() -> datetime:
    return datetime.now(UTC)


class _Saved:
    """A small JSON document in the adapter's KV bucket (``<pbx>.presence``, ``<pbx>.chat``)."""

    def __init__(self, kv: KeyValue | None, key: str) -> None:
        self._kv = kv
        self.key = key

    async def load(self) -> dict[str, Any] | None:
        if self._kv is None:
            return None
        try:
            entry = await self._kv.get(self.key)
        except KeyNotFoundError:
            return None
        return json.loads(entry.value) if entry.value else None

    async def save(self, value: dict[str, Any]) -> None:
        if self._kv is not None:
            await self._kv.put(self.key, json.dumps(value).encode())


async def publish_acked(outbox: Outbox, events: list[e.EventBase], within_s: float = 30.0) -> bool:
    """Queue events and wait for JetStream's acknowledgement of all of them (a re-read's bound does not apply)."""
    for event in events:
        if not outbox.put(event, force=True):
            return False
    return await outbox.wait_acked(outbox.position, within_s=within_s)


@dataclass
class PresencePoller:
    pbx_id: str
    xapi: XapiClient
    outbox: Outbox
    kv: KeyValue | None
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: bool = False
    polls: int = 0

    def __post_init__(self) -> None:
        self._saved = _Saved(self.kv, f"{self.pbx_id}.presence")
        self._catching_up = False

    async def load(self) -> None:
        saved = await self._saved.load()
        if saved is not None:
            self.state = saved.get("extensions", {})
            self.baseline = True
            self._catching_up = True  # changes found by the next poll happened while nobody polled

    async def poll(self) -> int:
        """One poll; returns the number of events published."""
        rows = await self.xapi.users(select=PRESENCE_FIELDS)
        self.polls += 1
        events: list[e.EventBase] = []
        now = _now()
        for row in rows:
            number = str(row.get("Number") or "")
            if not TOKEN_RE.fullmatch(number):
                continue
            current = {"profile": str(row.get("CurrentProfileName") or ""), "registered": row.get("IsRegistered"),
                       "queue": row.get("QueueStatus")}  # fmt: skip
            before = self.state.get(number)
            if before is None:
                self.state[number] = {**current, "n": 0}
                if not self.baseline:
                    continue
                before = {"profile": None, "registered": None, "queue": None, "n": 0}
            if all(before.get(k) == v for k, v in current.items()):
                continue
            n = int(before.get("n", 0))
            events.append(self._event(e.PresenceChanged, number, n, now, e.PresenceChangedData(
                extension=number, profile=current["profile"], registered=current["registered"],
                queue_status=current["queue"], previous_profile=before.get("profile"),
            )))  # fmt: skip
            if before.get("queue") is not None and current["queue"] != before.get("queue"):
                cls = e.QueueAgentLoggedIn if current["queue"] == "LoggedIn" else e.QueueAgentLoggedOut
                events.append(self._event(cls, number, n, now, e.QueueAgentData(extension=number)))
            self.state[number] = {**current, "n": n + 1}
        self.baseline = True
        self._catching_up = False
        if events and not await publish_acked(self.outbox, events):
            raise PbxError("presence events were not acknowledged; the next poll retries")
        await self._saved.save({"extensions": self.state})
        return len(events)

    def _event(self, cls: type[e.EventBase], number: str, n: int, at: datetime, data: Any) -> e.EventBase:
        return cls.model_validate({
            "event_id": deterministic_event_id("presence", self.pbx_id, number, cls.NAME, n),
            "pbx_id": self.pbx_id, "occurred_at": at, "inferred": self._catching_up, "data": data,
        })  # fmt: skip


def _chat_id(row: dict[str, Any]) -> str:
    digest = hashlib.sha256(
        json.dumps([row.get("ConversationId"), row.get("TimeSent"), row.get("FromNo"), row.get("Message")]).encode()
    ).hexdigest()[:24]
    return f"{row.get('ConversationId')}-{digest}"


@dataclass
class ChatPoller:
    pbx_id: str
    xapi: XapiClient
    outbox: Outbox
    kv: KeyValue | None
    watermark: str | None = None  # the newest TimeSent seen
    at_watermark: set[str] = field(default_factory=set)  # message ids seen at that instant
    baseline: bool = False
    polls: int = 0

    def __post_init__(self) -> None:
        self._saved = _Saved(self.kv, f"{self.pbx_id}.chat")

    async def load(self) -> None:
        saved = await self._saved.load()
        if saved is not None:
            self.watermark = saved.get("watermark")
            self.at_watermark = set(saved.get("ids", []))
            self.baseline = True

    async def poll(self) -> int:
        since = parse_datetime(self.watermark) if self.watermark else None
        rows: list[dict[str, Any]] = []
        skip = 0
        while True:
            page = await self.xapi.chat_history(since=since, limit=500, skip=skip)
            rows += page.rows
            if len(page.rows) < 500:
                break
            skip += len(page.rows)
        self.polls += 1
        fresh = [r for r in rows if _chat_id(r) not in self.at_watermark]
        events = [] if not self.baseline else [self._event(r) for r in fresh]
        if rows:
            newest = max(str(r.get("TimeSent") or "") for r in rows)
            if newest != self.watermark:
                self.at_watermark = set()
            self.watermark = newest
            self.at_watermark |= {_chat_id(r) for r in rows if str(r.get("TimeSent") or "") == newest}
        self.baseline = True
        if events and not await publish_acked(self.outbox, events):
            raise PbxError("chat events were not acknowledged; the next poll retries")
        await self._saved.save({"watermark": self.watermark, "ids": sorted(self.at_watermark)})
        return len(events)

    def _event(self, row: dict[str, Any]) -> e.EventBase:
        message_id = _chat_id(row)
        data = e.MessageReceivedData(
            conversation_id=str(row.get("ConversationId") or ""), message_id=message_id,
            from_number=str(row.get("FromNo") or ""), from_name=str(row.get("FromName") or ""),
            to=str(row.get("QueueNumber") or row.get("ChatName") or ""), text=str(row.get("Message") or ""),
            channel=str(row.get("ProviderType") or ""), sent_at=parse_datetime(row.get("TimeSent")),
        )  # fmt: skip
        return e.MessageReceived.model_validate({
            "event_id": deterministic_event_id("chat", self.pbx_id, message_id), "pbx_id": self.pbx_id,
            "occurred_at": data.sent_at or _now(), "data": data,
        })  # fmt: skip


# --------------------------------------------------------------------------- reconciliation


@dataclass(frozen=True)
class HistoricCall:
    callid: int
    started: datetime
    ended: datetime
    answered: bool
    ring_s: float
    talk_s: float
    direction: Direction
    from_number: str
    from_name: str
    to_number: str


def historic_calls(rows: list[dict[str, Any]]) -> list[HistoricCall]:
    """Group call-log segments by CallId into calls: first start, last end, answered by any segment."""
    by_call: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        callid = row.get("CallId")
        if isinstance(callid, int) and parse_datetime(row.get("StartTime")) is not None:
            by_call.setdefault(callid, []).append(row)
    calls = []
    for callid, segments in by_call.items():
        segments.sort(key=lambda r: str(r["StartTime"]))
        first = segments[0]
        started = min(parse_datetime(r["StartTime"]) or _now() for r in segments)
        ends = [(parse_datetime(r["StartTime"]) or started)
                + timedelta(seconds=parse_duration(r.get("RingingDuration")) + parse_duration(r.get("TalkingDuration")))
                for r in segments]  # fmt: skip
        answered = any(bool(r.get("Answered")) for r in segments)
        ring = min(parse_duration(r.get("RingingDuration")) for r in segments)
        talk = sum(parse_duration(r.get("TalkingDuration")) for r in segments)
        direction = {"Inbound": Direction.INBOUND, "Outbound": Direction.OUTBOUND,
                     "Internal": Direction.INTERNAL}.get(str(first.get("Direction")), Direction.UNKNOWN)  # fmt: skip
        calls.append(HistoricCall(
            callid=callid, started=started, ended=max(ends), answered=answered, ring_s=ring, talk_s=talk,
            direction=direction, from_number=str(first.get("SourceCallerId") or first.get("SourceDn") or ""),
            from_name=str(first.get("SourceDisplayName") or ""), to_number=str(first.get("DestinationDn") or ""),
        ))  # fmt: skip
    return calls


def merge_windows(windows: list[tuple[float, float]], *, within_s: float) -> list[tuple[float, float]]:
    """Time windows (start, end) sorted, those that overlap or come within ``within_s`` of each other as one."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1] + within_s:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


@dataclass
class Reconciler:
    """Publishes calls wholly inside an outage from the call log, once."""

    pbx_id: str
    xapi: XapiClient
    registry: CallRegistry
    epoch: int
    publish: Callable[[list[e.EventBase]], Awaitable[bool]]
    reconciled: int = 0

    async def window(self, start: datetime, end: datetime) -> int:
        rows = await self.xapi.call_log(start - timedelta(seconds=5), end + timedelta(seconds=5))
        published = 0
        for call in historic_calls(rows):
            if call.started < start - timedelta(seconds=1) or call.ended > end + timedelta(seconds=1):
                continue  # not wholly inside the outage: the websocket or the re-read saw (part of) it
            record = await self.registry.claim_reconciled(call.callid, call.started.timestamp())
            if record is None:
                continue  # the hub knows this call
            created = e.CallCreated.model_validate({
                **self._envelope(record.call_id, call.callid, "created", call.started, 1),
                "data": e.CallCreatedData(direction=call.direction, from_number=call.from_number,
                                          from_name=call.from_name, to_number=call.to_number),
            })  # fmt: skip
            cause = e.EndCause.COMPLETED if call.answered else e.EndCause.NO_ANSWER
            ended = e.CallEnded.model_validate({
                **self._envelope(record.call_id, call.callid, "ended", call.ended, 2),
                "data": e.CallEndedData(cause=cause, answered=call.answered, talk_seconds=call.talk_s,
                                        ring_seconds=call.ring_s),
            })  # fmt: skip
            if not await self.publish([created, ended]):
                raise PbxError("reconciled events were not acknowledged")
            self.registry.close(record, call.ended.timestamp())
            published += 1
        self.reconciled += published
        return published

    def _envelope(self, call_id: str, callid: int, transition: str, at: datetime, counter: int) -> dict[str, Any]:
        return {
            "event_id": leg_event_id(self.pbx_id, call_id, "", transition, 0),
            "pbx_id": self.pbx_id,
            "call_id": call_id,
            "pbx_call_id": callid,
            "seq": {"epoch": self.epoch, "counter": counter},
            "occurred_at": at,
            "inferred": True,
        }


async def every(interval_s: float, stopping: asyncio.Event, work: Callable[[], Awaitable[object]], what: str) -> None:
    """Run ``work`` every ``interval_s`` until stopping; a failure backs off (up to 8x) and is retried.

    A failure is the PBX's (an error reply, a storm) or the bus's (a KV write timing out while NATS restarts). The
    events a poll made wait in the outbox and its state is saved only after they were acknowledged, so a failed
    save is redone by the next poll and a restarted leader re-derives the same event ids from the older state."""
    delay = interval_s
    while not stopping.is_set():
        try:
            await work()
            delay = interval_s
        except PbxError as exc:
            log.info("poll failed; retrying", what=what, error=str(exc))
            delay = min(interval_s * 8, delay * 2)
        except Exception as exc:  # the bus is down or slow: a KV read or write timed out
            log.warning("poll failed on the bus; retrying", what=what, error=str(exc) or type(exc).__name__)
            delay = min(interval_s * 8, delay * 2)
        await wait_or_stop(stopping, delay)
