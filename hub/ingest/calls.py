"""Call identity and the adapter's durable state (D§2, D§9), in NATS KV.

Two buckets:
- ``ML_CALLIDS``: ``<pbx>.<3CX callid>`` -> the hub's ``call_id`` with first/last seen. Written *before* any event
  of the call is published (the outbox flushes pending ids first), so a restart or a resync always finds the same id.
  3CX callids are small and restart with the PBX: an entry that ended more than ``reappear_window_s`` ago is a new
  call when its callid shows up again; within the window (a call back from a park orbit or an unmonitored DN) it is
  the same call.
- ``ML_INGEST``: ``<pbx>.<3CX callid>`` -> the state of each *active* call (its legs and how many times each
  transition was emitted, which the deterministic event ids need). Written behind the outbox: only state whose
  events JetStream acknowledged is persisted, so after a crash the resync re-emits (with the same ids) anything
  not yet acknowledged, and never skips anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from hub.ingest.wire import LegSnapshot
from hub.logs import get_logger
from schemas.identity import new_call_id

log = get_logger(__name__)

KV_TIMEOUT_S = 1.0
"""A call-id create or lookup gives up after this long (JetStream's 5 s default stalled every new call while NATS
was frozen or going away): the call then takes a new id and its events wait in the outbox with it."""

Opened = Literal["new", "known", "recovered", "reappeared", "resumed"]
"""How a call's record was found: ``recovered`` = its id was saved but not its state (its first events may never
have been acknowledged: they are emitted again with the same ids, and deduplicated if they were)."""

RECENT_KEEP_S = 300.0  # an ended or parked call reappears through memory this long, through the call-id map after
RECENT_MAX = 10_000


@dataclass
class CallRecord:
    call_id: str
    callid: int
    first_seen: float
    last_seen: float
    answered_at: float | None = None
    parked_orbit: str | None = None
    ended: bool = False
    counters: dict[str, int] = field(default_factory=dict)  # "<leg key>|<transition>" -> times emitted
    legs: dict[str, dict[str, Any]] = field(default_factory=dict)  # "<dn>:<pid>" -> LegSnapshot JSON
    # the leg removed last (JSON): a process that dies in the grace after a call's last leg went leaves a saved
    # call without legs, and the next leader needs that leg to end it
    last_leg: dict[str, Any] | None = None
    seq: int = 0  # per-call counter of this leader epoch (not persisted: the epoch grows at each takeover)

    def ordinal(self, leg_key: str, transition: str) -> int:
        key = f"{leg_key}|{transition}"
        n = self.counters.get(key, 0)
        self.counters[key] = n + 1
        return n

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def set_leg(self, leg: LegSnapshot) -> None:
        self.legs[f"{leg.participant.dn}:{leg.participant.participant_id}"] = leg.to_json()

    def drop_leg(self, leg: LegSnapshot) -> None:
        self.legs.pop(f"{leg.participant.dn}:{leg.participant.participant_id}", None)
        self.last_leg = leg.to_json()

    def snapshots(self) -> list[LegSnapshot]:
        return [LegSnapshot.from_json(raw) for raw in self.legs.values()]

    def state_json(self) -> bytes:
        return json.dumps({
            "call_id": self.call_id, "callid": self.callid, "first_seen": self.first_seen,
            "last_seen": self.last_seen, "answered_at": self.answered_at, "parked_orbit": self.parked_orbit,
            "counters": self.counters, "legs": self.legs, "last_leg": self.last_leg,
        }).encode()  # fmt: skip

    def provisional_json(self) -> bytes:
        """The legs only (no counters: nothing is known to be acknowledged yet), marked provisional."""
        return json.dumps({
            "call_id": self.call_id, "callid": self.callid, "first_seen": self.first_seen,
            "last_seen": self.last_seen, "legs": self.legs, "provisional": True,
        }).encode()  # fmt: skip

    def id_json(self) -> bytes:
        return json.dumps({
            "call_id": self.call_id, "first_seen": self.first_seen, "last_seen": self.last_seen,
            "ended": self.ended, "parked_orbit": self.parked_orbit, "answered_at": self.answered_at,
            "counters": self.counters if self.ended else {},
        }).encode()  # fmt: skip

    @classmethod
    def from_state(cls, raw: dict[str, Any]) -> CallRecord:
        return cls(
            call_id=str(raw["call_id"]), callid=int(raw["callid"]), first_seen=float(raw["first_seen"]),
            last_seen=float(raw["last_seen"]), answered_at=raw.get("answered_at"),
            parked_orbit=raw.get("parked_orbit"), counters=dict(raw.get("counters") or {}),
            legs=dict(raw.get("legs") or {}), last_leg=raw.get("last_leg"),
        )  # fmt: skip


class CallRegistry:
    """The active calls of one PBX, their ids and state; KV reads and writes are batched by the caller's schedule."""

    def __init__(
        self,
        pbx_id: str,
        ids: KeyValue | None,
        state: KeyValue | None,
        *,
        reappear_window_s: float = 3600.0,
        online: Callable[[], bool] = lambda: True,
    ) -> None:
        self.pbx_id = pbx_id
        self._ids = ids
        self._state = state
        self.reappear_window_s = reappear_window_s
        self._online = online
        self.active: dict[int, CallRecord] = {}
        self._recent: dict[int, CallRecord] = {}  # ended in this process: reappearance without a KV read
        self._ids_dirty: dict[int, CallRecord] = {}
        self._state_dirty: set[int] = set()
        self._state_gone: set[int] = set()
        self._provisional: dict[int, CallRecord] = {}  # new calls whose first state is written with their ids
        self.provisional_legs: list[LegSnapshot] = []  # loaded: legs of calls saved before their events were acked

    def _key(self, callid: int) -> str:
        return f"{self.pbx_id}.{callid}"

    # ------------------------------------------------------------------ loading

    async def load(self) -> list[LegSnapshot]:
        """Read every active call of this PBX from ``ML_INGEST``; return their legs for the tracker."""
        self.active.clear()
        self._state_dirty.clear()
        self._provisional.clear()
        self.provisional_legs = []
        self._state_gone.clear()
        if self._state is None:
            return []
        legs: list[LegSnapshot] = []
        watcher = await self._state.watch(f"{self.pbx_id}.*", ignore_deletes=True)
        try:
            async for entry in watcher:
                if entry is None:  # the end of the current values
                    break
                if not entry.value or not entry.key.rsplit(".", 1)[-1].isdigit():
                    continue  # the pollers' documents share the bucket
                raw = json.loads(entry.value)
                record = CallRecord.from_state(raw)
                if raw.get("provisional"):
                    self.provisional_legs += record.snapshots()
                    continue
                self.active[record.callid] = record
                legs += record.snapshots()
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return legs

    def legless(self) -> list[LegSnapshot]:
        """The last leg of each loaded call that has none left: the previous leader died in the grace after that
        leg went, before the call ended. The tracker ends these at the first re-read (inferred)."""
        return [
            LegSnapshot.from_json(r.last_leg) for r in self.active.values() if not r.legs and r.last_leg is not None
        ]

    # ------------------------------------------------------------------ opening and closing calls

    async def open(self, callid: int, at: float) -> tuple[CallRecord, Opened]:
        """The record of a call whose leg just appeared: known, back from an end or a park, or new."""
        record = self.active.get(callid)
        if record is not None:
            record.last_seen = at
            return record, "known"
        record = CallRecord(call_id=new_call_id(), callid=callid, first_seen=at, last_seen=at)
        previous = self._recent.pop(callid, None)
        if previous is None and await self._claim_id(record):
            self.active[callid] = record  # the common case: one atomic create, the id is saved before any event
            self._state_dirty.add(callid)
            self._provisional[callid] = record
            return record, "new"
        previous = previous or await self._read_id(callid)
        if previous is not None and (not previous.ended or at - previous.last_seen <= self.reappear_window_s):
            how: Opened = "resumed" if previous.parked_orbit else ("reappeared" if previous.ended else "recovered")
            previous.ended = False
            previous.last_seen = at
            self.active[callid] = previous
            self._ids_dirty[callid] = previous
            self._state_dirty.add(callid)
            return previous, how
        self.active[callid] = record  # a new call on a callid used long ago (or the bus is down): saved later
        self._ids_dirty[callid] = record
        self._state_dirty.add(callid)
        self._provisional[callid] = record
        return record, "new"

    def _forget_old(self, now: float) -> None:
        """Keep ended calls in memory only for ``RECENT_KEEP_S`` (and at most ``RECENT_MAX``): what comes back later
        is looked up in the call-id map. Without the age bound ingest's memory rose for hours (~1.5 KiB a call) on a
        quiet PBX before the count bound held it."""
        while self._recent:
            oldest = next(iter(self._recent.values()))
            if len(self._recent) <= RECENT_MAX and now - oldest.last_seen <= RECENT_KEEP_S:
                return
            del self._recent[oldest.callid]

    async def claim_reconciled(self, callid: int, at: float) -> CallRecord | None:
        """A record for a call known only from the call log, or None when the hub already has this callid."""
        if callid in self.active or callid in self._recent:
            return None
        record = CallRecord(call_id=new_call_id(), callid=callid, first_seen=at, last_seen=at)
        if not await self._claim_id(record):
            return None  # the call-id map knows it (or the bus is down: the next reconciliation retries)
        self.active[callid] = record
        return record

    async def _claim_id(self, record: CallRecord) -> bool:
        """Create the call-id entry if the callid has none: True when this call is new."""
        if self._ids is None or not self._online():
            return False
        try:
            await asyncio.wait_for(self._ids.create(self._key(record.callid), record.id_json()), KV_TIMEOUT_S)
        except KeyWrongLastSequenceError:
            return False  # an entry exists: the caller reads it
        except Exception as exc:
            log.warning("call id create failed", callid=record.callid, error=str(exc) or type(exc).__name__)
            return False
        return True

    async def _read_id(self, callid: int) -> CallRecord | None:
        if self._ids is None or not self._online():
            return None  # the bus is down: a new id, whose events wait in the outbox with it
        try:
            entry = await asyncio.wait_for(self._ids.get(self._key(callid)), KV_TIMEOUT_S)
        except KeyNotFoundError:
            return None
        except Exception as exc:  # the bus is down: a new id; the events wait in the outbox with it
            log.warning("call id lookup failed", callid=callid, error=str(exc) or type(exc).__name__)
            return None
        if not entry.value:
            return None
        raw = json.loads(entry.value)
        return CallRecord(
            call_id=str(raw["call_id"]), callid=callid, first_seen=float(raw["first_seen"]),
            last_seen=float(raw["last_seen"]), answered_at=raw.get("answered_at"), ended=bool(raw.get("ended")),
            parked_orbit=raw.get("parked_orbit"), counters=dict(raw.get("counters") or {}),
        )  # fmt: skip

    def get(self, callid: int) -> CallRecord | None:
        return self.active.get(callid)

    def touch(self, record: CallRecord) -> None:
        self._state_dirty.add(record.callid)

    def close(self, record: CallRecord, at: float, *, parked_orbit: str | None = None) -> None:
        """The call is gone (or parked): its id entry says so, its active state is deleted."""
        record.ended = True
        record.parked_orbit = parked_orbit
        record.last_seen = at
        record.legs.clear()
        self.active.pop(record.callid, None)
        self._recent[record.callid] = record
        self._forget_old(at)
        self._ids_dirty[record.callid] = record
        self._state_dirty.discard(record.callid)
        self._state_gone.add(record.callid)

    # ------------------------------------------------------------------ writing

    @property
    def ids_pending(self) -> bool:
        return bool(self._ids_dirty)

    async def flush_ids(self) -> None:
        """Write new and changed call-id entries; called before the events that use them are published."""
        if self._ids is None:
            self._ids_dirty.clear()
            return
        while self._ids_dirty:
            callid, record = next(iter(self._ids_dirty.items()))
            await self._ids.put(self._key(callid), record.id_json())
            if self._ids_dirty.get(callid) is record:
                del self._ids_dirty[callid]
        await self._flush_provisional()

    async def _flush_provisional(self) -> None:
        """A new call's legs, saved before its first events are published: acknowledged state is saved up to
        ``persist_interval_s`` later, and a leader that dies in between left the next one nothing of a call whose
        legs then went, so its end was never published. A provisional record is loaded as legs to compare, not as
        a known call: a leg still there opens the call again from its id ("recovered", same event ids)."""
        if self._state is None:
            self._provisional.clear()
            return
        state = self._state
        batch = {c: r for c, r in self._provisional.items() if r.legs and self.active.get(c) is r}
        await asyncio.gather(*(state.put(self._key(c), r.provisional_json()) for c, r in batch.items()))
        for callid, record in list(self._provisional.items()):
            if callid in batch or not record.legs or self.active.get(callid) is not record:
                del self._provisional[callid]

    def take_state(self) -> tuple[dict[int, bytes], set[int]]:
        """What to persist now: states of changed active calls, and calls whose state must be deleted."""
        states = {c: self.active[c].state_json() for c in self._state_dirty if c in self.active}
        gone = set(self._state_gone)
        self._state_dirty.clear()
        self._state_gone.clear()
        return states, gone

    def state_failed(self, states: dict[int, bytes], gone: set[int]) -> None:
        """A write failed: mark the calls again (the next write takes their newest state)."""
        self._state_dirty |= {c for c in states if c in self.active}
        self._state_gone |= {c for c in gone if c not in self.active}

    async def write_state(self, states: dict[int, bytes], gone: set[int]) -> None:
        if self._state is None:
            return
        for callid, value in states.items():
            await self._state.put(self._key(callid), value)
        for callid in gone:
            with contextlib.suppress(KeyNotFoundError):
                await self._state.delete(self._key(callid))
