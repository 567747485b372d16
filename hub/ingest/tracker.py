"""The state tracker, sans-IO: websocket frames and REST reads in, observations out (D§4, reference §3).

3CX's websocket only says "this participant changed" (Upsert) or "is gone" (Remove); the tracker decides what to
re-read and turns the differences between what it knew and what it read into observations (a leg appeared, changed,
was removed; a call appeared or is gone; DTMF). The driver (``hub.ingest.pbxlink``) performs the reads it asks for.

Reads, bounded and coalesced:
- at most ``max_inflight`` reads at a time per PBX; at most one per participant: an Upsert while that participant's
  read is in flight marks it dirty and causes exactly one more read after it;
- waiting participants are read oldest first, those the hub does not know yet (new legs: nearly always a real
  change) before known ones (under 3CX's repeated upserts, nearly always unchanged);
- when ``list_threshold`` or more participants of one DN are waiting (and at least 1/32 of its legs: a list read
  costs in proportion to the DN's size), one read of the DN's participant list replaces them; on a DN with many
  legs, re-reads of known legs wait up to ``batch_known_s`` (50 ms) to gather into such a list read;
- every read takes a ticket when it starts; a result older than what was already applied to a participant (a newer
  read, or a Remove frame) is ignored, so a slow read never resurrects a removed leg;
- a 404 after an Upsert is a removal; an unchanged read emits nothing;
- a participant gone before any read of it (its Remove or a 404 first) is counted in ``stats.unseen``: 3CX's
  frames carry no state, so only the call history can tell what it was (the driver reconciles).

Calls: a call appears with its first leg and is gone ``end_grace_s`` after its last visible leg went (a transfer
removes one leg and adds another: the grace keeps that from ending the call), and no earlier read of a leg the hub
does not know yet is still owed (the transfer's target may be it; bounded by ``NEW_LEG_WAIT_S``), or at once at a
resync.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from hub.ingest.wire import Frame, LegSnapshot, changed_fields

Entity = tuple[str, int]

BIG_DN = 32
"""On a DN with this many legs or more, re-reads of known legs wait up to ``batch_known_s`` (or until 1/8 of the
DN waits) so that they become one list read: under 3CX's repeated upserts nearly all of them are unchanged."""

LIST_COST_RATIO = 32
"""A DN's list read is worth it once 1/32 of its legs wait: encoding and parsing one more participant of a list
costs the PBX and the hub about 1/30 of a whole single-participant request (measured on the simulator)."""


@dataclass(frozen=True, slots=True)
class Read:
    """A read the driver must perform: one participant, or (``participant_id`` None) a DN's participant list."""

    ticket: int
    dn: str
    participant_id: int | None = None


# --------------------------------------------------------------------------- observations


@dataclass(frozen=True, slots=True)
class CallAppeared:
    callid: int
    leg: LegSnapshot
    at: float
    inferred: bool


@dataclass(frozen=True, slots=True)
class LegAppeared:
    leg: LegSnapshot
    at: float
    inferred: bool
    referred_by: str = ""  # the DN that transferred or diverted this call here ("" when none)
    source_status: str | None = None  # the referring leg's last status, when the hub saw it


@dataclass(frozen=True, slots=True)
class LegChanged:
    leg: LegSnapshot
    previous: LegSnapshot
    changed: tuple[str, ...]
    at: float
    inferred: bool

    @property
    def status_changed(self) -> bool:
        return self.leg.status != self.previous.status


@dataclass(frozen=True, slots=True)
class LegRemoved:
    leg: LegSnapshot
    at: float
    inferred: bool


@dataclass(frozen=True, slots=True)
class CallGone:
    callid: int
    last_leg: LegSnapshot
    at: float
    inferred: bool


@dataclass(frozen=True, slots=True)
class DtmfPressed:
    leg: LegSnapshot
    digits: str
    at: float


Observation = CallAppeared | LegAppeared | LegChanged | LegRemoved | CallGone | DtmfPressed


@dataclass
class TrackerStats:
    frames: int = 0
    upserts: int = 0
    removes: int = 0
    dtmf: int = 0
    ignored: int = 0
    reads: int = 0
    list_reads: int = 0
    coalesced: int = 0
    stale_results: int = 0
    dropped_dtmf: int = 0
    read_failures: int = 0
    unseen: int = 0  # participants gone before any read of them (a Remove, or a 404, first): their state is lost


@dataclass
class _Call:
    legs: set[Entity] = field(default_factory=set)
    removed_status: dict[str, str] = field(default_factory=dict)  # dn -> last status of a removed leg
    last_leg: LegSnapshot | None = None
    end_at: float | None = None  # when the call is declared gone (grace after its last leg went)
    ended_at: float = 0.0  # when its last leg went


NEW_LEG_WAIT_S = 5.0
"""The longest a call's end waits, past its grace, for reads of legs that appeared before its last leg went."""
NEW_LEG_RECHECK_S = 0.02


class Tracker:
    def __init__(
        self, *, max_inflight: int = 8, list_threshold: int = 3, end_grace_s: float = 0.5, batch_known_s: float = 0.05
    ) -> None:
        if max_inflight < 1 or list_threshold < 2:
            raise ValueError("max_inflight must be >= 1 and list_threshold >= 2")
        self.max_inflight = max_inflight
        self.list_threshold = list_threshold
        self.end_grace_s = end_grace_s
        self.batch_known_s = batch_known_s
        self.stats = TrackerStats()
        self._tickets = itertools.count(1)  # never restarted: a read from before a reset stays older
        self._clear()

    def _clear(self) -> None:
        self.legs: dict[Entity, LegSnapshot] = {}
        self._by_dn: dict[str, set[Entity]] = {}  # dn -> its legs
        self.calls: dict[int, _Call] = {}
        self._applied: dict[Entity, int] = {}  # ticket of the last read or removal applied to each participant
        # waiting participants (-> first upsert time), oldest first: participants the hub does not know yet (a new
        # leg: nearly always a real change) go before known ones (under repeated upserts, nearly always unchanged)
        self._fresh: dict[Entity, float] = {}
        self._known: dict[Entity, float] = {}
        self._held: dict[str, dict[Entity, float]] = {}  # big DNs: known legs gathering for a list read
        self._queue: dict[str, set[Entity]] = {}  # dn -> its waiting participants (for the list-read decision)
        self._list_queue: dict[str, float] = {}  # DNs whose whole list must be read
        self._inflight: dict[int, Read] = {}
        self._busy: dict[Entity, int] = {}  # participant -> ticket of its read in flight
        self._busy_lists: dict[str, int] = {}  # dn -> ticket of its list read in flight
        self._dirty: dict[Entity, float] = {}  # upserted while busy: read once more afterwards
        self._pending_dtmf: dict[Entity, list[tuple[str, float]]] = {}
        self._paused_until = 0.0
        self._snapshots = 0  # full reads in progress (their results may still arrive)
        self._batch_until = 0.0  # known re-reads wait for company until then
        self._ending: dict[int, float] = {}  # callid -> when it is gone unless a leg appears (few at a time)
        self._provisional: dict[Entity, LegSnapshot] = {}  # legs of calls saved before their events were confirmed

    # ------------------------------------------------------------------ state loading

    def load(
        self, legs: Iterable[LegSnapshot], legless: Iterable[LegSnapshot] = (),
        provisional: Iterable[LegSnapshot] = (),
    ) -> None:  # fmt: skip
        """Known state from a previous run (no observations: a resync compares the PBX with it). ``legless``: the
        last leg of each call saved without legs (its end was due when the previous run stopped); the first full
        read ends those calls, unless a leg of theirs is back. ``provisional``: legs of new calls whose events may
        not have gone out; the first full read announces those still there as new (their event ids repeat, and
        are deduplicated) and removes those gone."""
        for leg in legs:
            self._know(leg)
        for leg in legless:
            self.calls.setdefault(leg.callid, _Call(last_leg=leg))
        self._provisional.update({leg.entity: leg for leg in provisional})

    def _know(self, leg: LegSnapshot) -> None:
        self.legs[leg.entity] = leg
        self._by_dn.setdefault(leg.participant.dn, set()).add(leg.entity)
        call = self.calls.setdefault(leg.callid, _Call())
        call.legs.add(leg.entity)
        call.last_leg = leg

    def reset(self) -> None:
        """Forget all state (before loading persisted state again after an outbox overflow); stats are kept."""
        self._clear()

    @property
    def waiting(self) -> int:
        """Participants and lists waiting for a read slot."""
        return len(self._fresh) + len(self._known) + sum(map(len, self._held.values())) + len(self._list_queue)

    @property
    def busy(self) -> bool:
        return bool(self._inflight or self._queue or self._list_queue or self._snapshots)

    # ------------------------------------------------------------------ frames

    def frame(self, frame: Frame, at: float) -> list[Observation]:
        self.stats.frames += 1
        if frame.kind == "ignored":
            self.stats.ignored += 1
            return []
        if frame.kind == "upsert":
            self.stats.upserts += 1
            if frame.participant_id is None:
                self._list_queue.setdefault(frame.dn, at)
            else:
                self._want((frame.dn, frame.participant_id), at)
            return []
        entity = (frame.dn, frame.participant_id if frame.participant_id is not None else -1)
        if frame.kind == "remove":
            self.stats.removes += 1
            self._unqueue(entity)
            return self._apply(entity, None, next(self._tickets), at, inferred=False)
        self.stats.dtmf += 1
        leg = self.legs.get(entity)
        if leg is not None:
            return [DtmfPressed(leg, frame.digits, at)]
        self._pending_dtmf.setdefault(entity, []).append((frame.digits, at))  # read the leg first
        self._want(entity, at)
        return []

    def _want(self, entity: Entity, at: float) -> None:
        if entity in self._busy or entity[0] in self._busy_lists:
            self.stats.coalesced += entity in self._dirty
            self._dirty.setdefault(entity, at)
            return
        waiting = self._queue.setdefault(entity[0], set())
        if entity in waiting or entity[0] in self._list_queue:
            self.stats.coalesced += 1
            return
        waiting.add(entity)
        if entity not in self.legs:
            self._fresh[entity] = at
        elif len(self._by_dn.get(entity[0], ())) >= BIG_DN:
            self._held.setdefault(entity[0], {})[entity] = at
        else:
            self._known[entity] = at

    def _unqueue(self, entity: Entity) -> None:
        waiting = self._queue.get(entity[0])
        if waiting is not None and entity in waiting:
            waiting.discard(entity)
            if not waiting:
                del self._queue[entity[0]]
            self._fresh.pop(entity, None)
            self._known.pop(entity, None)
            held = self._held.get(entity[0])
            if held is not None:
                held.pop(entity, None)
                if not held:
                    del self._held[entity[0]]
        self._dirty.pop(entity, None)

    # ------------------------------------------------------------------ reads

    def take_reads(self, now: float) -> list[Read]:
        """Reads to start now (respecting the concurrency bound and any pause after failures)."""
        reads: list[Read] = []
        if now < self._paused_until:
            return reads
        while len(self._inflight) < self.max_inflight:
            read = self._next_read(now)
            if read is None:
                break
            self._inflight[read.ticket] = read
            reads.append(read)
        return reads

    def _next_read(self, now: float) -> Read | None:
        for dn in list(self._list_queue):
            if dn in self._busy_lists:
                continue
            del self._list_queue[dn]
            return self._start_list(dn)
        line = self._fresh or self._known or self._ready_held(now)
        if not line:
            return None
        entity = next(iter(line))
        dn = entity[0]
        on_dn, waiting = len(self._by_dn.get(dn, ())), len(self._queue[dn])
        if waiting >= max(self.list_threshold, on_dn // LIST_COST_RATIO):
            return self._start_list(dn)
        self._unqueue(entity)
        ticket = next(self._tickets)
        self._busy[entity] = ticket
        self.stats.reads += 1
        return Read(ticket, entity[0], entity[1])

    def _ready_held(self, now: float) -> dict[Entity, float] | None:
        """The waiting known legs of a big DN whose re-reads have gathered long enough (or numerous enough)."""
        self._batch_until = 0.0
        for dn, held in self._held.items():
            if len(held) >= len(self._by_dn.get(dn, ())) // 8:
                return held
            ready_at = next(iter(held.values())) + self.batch_known_s
            if now >= ready_at:
                return held
            self._batch_until = min(self._batch_until or ready_at, ready_at)
        return None

    def _start_list(self, dn: str) -> Read:
        for entity in self._queue.pop(dn, set()):  # the list covers every waiting participant of the DN
            self._fresh.pop(entity, None)
            self._known.pop(entity, None)
        self._held.pop(dn, None)
        ticket = next(self._tickets)
        self._busy_lists[dn] = ticket
        self.stats.list_reads += 1
        return Read(ticket, dn, None)

    def _finish(self, read: Read) -> None:
        self._inflight.pop(read.ticket, None)
        if read.participant_id is None:
            self._busy_lists.pop(read.dn, None)
            for entity in [e for e in self._dirty if e[0] == read.dn and e not in self._busy]:
                self._requeue(entity)
        else:
            entity = (read.dn, read.participant_id)
            self._busy.pop(entity, None)
            if entity in self._dirty and read.dn not in self._busy_lists:
                self._requeue(entity)

    def _requeue(self, entity: Entity) -> None:
        self._want(entity, self._dirty.pop(entity))

    def read_done(self, read: Read, result: LegSnapshot | None, at: float) -> list[Observation]:
        """A participant read finished; ``result`` None means 404 (the participant is gone)."""
        self._finish(read)
        assert read.participant_id is not None, "use list_done for list reads"
        entity = (read.dn, read.participant_id)
        if result is not None and result.entity != entity:
            result = None  # the PBX answered for another participant: treat as gone, the list read will tell
        return self._apply(entity, result, read.ticket, at, inferred=False)

    def list_done(self, read: Read, results: list[LegSnapshot], at: float) -> list[Observation]:
        """A DN's participant list was read: it is the whole truth for that DN at the read's ticket."""
        self._finish(read)
        return self._apply_dn(read.dn, results, read.ticket, at, inferred=False)

    def read_failed(self, read: Read, at: float, *, backoff_s: float = 0.0, use_list: bool = False) -> None:
        """A read could not be done (PBX error, timeout): read it again later; ``use_list`` after a 403 (3CX may
        refuse a single participant it surfaced, while its DN's list works)."""
        self._finish(read)
        self.stats.read_failures += 1
        if read.participant_id is None or use_list:
            self._list_queue.setdefault(read.dn, at)
        else:
            self._want((read.dn, read.participant_id), at)
        if backoff_s > 0:
            self._paused_until = max(self._paused_until, at + backoff_s)

    # ------------------------------------------------------------------ resync

    def snapshot_ticket(self) -> int:
        """Take a ticket just before reading the whole PBX (``GET /callcontrol``); then call
        :meth:`snapshot_done` or :meth:`snapshot_failed`."""
        self._snapshots += 1
        return next(self._tickets)

    def snapshot_failed(self) -> None:
        self._snapshots = max(0, self._snapshots - 1)

    def snapshot_done(self, ticket: int, dns: dict[str, list[LegSnapshot]], at: float) -> list[Observation]:
        """Apply a full read: every difference is an inferred observation; calls left without legs are gone now."""
        self.snapshot_failed()
        if self._provisional:
            present = {leg.entity for legs in dns.values() for leg in legs}
            for entity, leg in self._provisional.items():
                if entity not in present and entity not in self.legs:
                    self._know(leg)  # gone: the read below removes it, and ends its call
            self._provisional.clear()
        out: list[Observation] = []
        for dn, legs in dns.items():
            out += self._apply_dn(dn, legs, ticket, at, inferred=True)
        for entity in [e for e in self.legs if e[0] not in dns]:
            out += self._apply(entity, None, ticket, at, inferred=True)
        for callid, call in list(self.calls.items()):
            if not call.legs and call.last_leg is not None:
                out.append(CallGone(callid, call.last_leg, at, inferred=True))
                del self.calls[callid]
                self._ending.pop(callid, None)
        return out

    def _apply_dn(self, dn: str, legs: list[LegSnapshot], ticket: int, at: float, inferred: bool) -> list[Observation]:
        out: list[Observation] = []
        seen: set[Entity] = set()
        for leg in legs:
            if leg.participant.dn != dn:
                continue
            seen.add(leg.entity)
            out += self._apply(leg.entity, leg, ticket, at, inferred)
        for entity in [e for e in self._by_dn.get(dn, ()) if e not in seen]:
            out += self._apply(entity, None, ticket, at, inferred)
        for entity in [e for e in self._pending_dtmf if e[0] == dn and e not in seen]:
            self.stats.dropped_dtmf += len(self._pending_dtmf.pop(entity))
        return out

    # ------------------------------------------------------------------ applying a read

    def _apply(
        self, entity: Entity, new: LegSnapshot | None, ticket: int, at: float, inferred: bool
    ) -> list[Observation]:
        if self._applied.get(entity, 0) > ticket:
            self.stats.stale_results += 1
            return []
        never_applied = entity not in self._applied
        self._applied[entity] = ticket
        out: list[Observation] = []
        old = self.legs.get(entity)
        if new is None:
            if old is not None:
                out += self._remove(entity, old, at, inferred)
            elif never_applied and not inferred:
                self.stats.unseen += 1
            self.stats.dropped_dtmf += len(self._pending_dtmf.pop(entity, []))
            return out
        if old is new:  # the adapter reuses the snapshot of an unchanged participant
            return []
        if old is not None and not old.same_leg(new):
            out += self._remove(entity, old, at, inferred)
            old = None
        if old is None:
            out += self._appear(entity, new, at, inferred)
        else:
            fields = changed_fields(old.participant, new.participant)
            self.legs[entity] = new
            self.calls[new.callid].last_leg = new
            if fields or old.status != new.status:
                out.append(LegChanged(new, old, fields, at, inferred))
        for digits, pressed_at in self._pending_dtmf.pop(entity, []):
            out.append(DtmfPressed(new, digits, pressed_at))
        return out

    def _appear(self, entity: Entity, new: LegSnapshot, at: float, inferred: bool) -> list[Observation]:
        out: list[Observation] = []
        call = self.calls.get(new.callid)
        if call is None:
            call = self.calls[new.callid] = _Call()
            out.append(CallAppeared(new.callid, new, at, inferred))
        call.end_at = None
        self._ending.pop(new.callid, None)
        referred_by = new.participant.referred_by_dn
        source_status = None
        if referred_by and referred_by != new.participant.dn:
            source = next((self.legs[e] for e in call.legs if e[0] == referred_by), None)
            source_status = source.status if source is not None else call.removed_status.get(referred_by)
        else:
            referred_by = ""
        call.legs.add(entity)
        call.last_leg = new
        self.legs[entity] = new
        self._by_dn.setdefault(entity[0], set()).add(entity)
        out.append(LegAppeared(new, at, inferred, referred_by, source_status))
        return out

    def _remove(self, entity: Entity, old: LegSnapshot, at: float, inferred: bool) -> list[Observation]:
        del self.legs[entity]
        on_dn = self._by_dn.get(entity[0])
        if on_dn is not None:
            on_dn.discard(entity)
        call = self.calls.get(old.callid)
        if call is not None:
            call.legs.discard(entity)
            call.removed_status[old.participant.dn] = old.status
            call.last_leg = old
            if not call.legs and not inferred:
                call.end_at = at + self.end_grace_s
                self._ending[old.callid] = call.end_at
                call.ended_at = at
        return [LegRemoved(old, at, inferred)]

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> list[Observation]:
        """Calls whose grace after their last leg has run out are gone."""
        self._forget_old_tickets()
        out: list[Observation] = []
        if not self._ending or min(self._ending.values()) > now:
            return out
        for callid, end_at in list(self._ending.items()):
            call = self.calls.get(callid)
            if end_at > now or call is None:
                if call is None:
                    del self._ending[callid]
                continue
            del self._ending[callid]
            if not call.legs and call.last_leg is not None:
                if now < call.ended_at + NEW_LEG_WAIT_S and self._new_leg_pending(call.ended_at):
                    self._ending[callid] = now + NEW_LEG_RECHECK_S  # the read may show the call going on
                    continue
                out.append(CallGone(callid, call.last_leg, call.ended_at, inferred=False))
                del self.calls[callid]
        return out

    def _new_leg_pending(self, since: float) -> bool:
        """A leg the hub does not know yet, upserted by ``since``, is waiting for its read or being read, or a DN's
        list is being read. Such a leg may be the ending call's next one (a transfer's target: its call is known
        only once the read answers); ending the call first ended it twice (once now, once with that leg)."""
        if self._busy_lists or any(entity not in self.legs for entity in self._busy):
            return True
        return any(at <= since for at in self._fresh.values())

    def _forget_old_tickets(self) -> None:
        """Participant ids grow or are reused without end: drop the tickets of participants that no read in
        flight can still answer for (they only guard against stale results)."""
        if len(self._applied) < 2 * len(self.legs) + 1024 or self._snapshots:
            return
        for entity in list(self._applied):
            if entity not in self.legs and entity not in self._busy and entity[0] not in self._busy_lists:
                del self._applied[entity]

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`tick` or :meth:`take_reads` has something to do, if any."""
        times = list(self._ending.values())
        if self._batch_until and self._held:
            times.append(self._batch_until)
        if self._paused_until and (self._queue or self._list_queue):
            times.append(self._paused_until)
        return min(times) if times else None
