"""Observations -> typed events (the table in docs/ingest.md), with the identity and order of D§2.

- ``call_id`` comes from the registry (minted the first time a 3CX callid is seen, kept in KV);
- the event id is a UUIDv5 over (pbx, call_id, leg, transition, ordinal of that transition on that leg): the live
  path and the resync path give the same id to the same transition;
- ``seq`` is (leader epoch, per-call counter);
- a command's correlation id (from the worker's command events) tags the events it causes.

The calls a batch of observations opens are opened together (each new call is one KV create: one after the other,
a burst of new calls waited a round trip per call before the first event left), then the observations are turned
into events in their order.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from hub.config import IngestConfig
from hub.ingest.calls import CallRecord, CallRegistry, Opened
from hub.ingest.hints import CommandHints, Hint
from hub.ingest.tracker import (
    CallAppeared,
    CallGone,
    DtmfPressed,
    LegAppeared,
    LegChanged,
    LegRemoved,
    Observation,
)
from hub.ingest.wire import LegSnapshot
from schemas import events as e
from schemas.common import CallSeq, Direction, LegRef
from schemas.identity import leg_event_id

EXTERNAL = "Wexternalline"
RINGING = {"Ringing", "Dialing"}
REMOVAL_REASONS = {"drop": "dropped", "transfer": "transferred", "park": "parked", "divert": "diverted",
                   "route_to": "routed"}  # fmt: skip


def utc_at(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


class Emitter:
    def __init__(
        self,
        pbx_id: str,
        registry: CallRegistry,
        *,
        epoch: int,
        config: IngestConfig | None = None,
        hints: CommandHints | None = None,
        park_orbit: str = "SP0",
    ) -> None:
        self.pbx_id = pbx_id
        self.registry = registry
        self.epoch = epoch
        self.config = config or IngestConfig()
        self.hints = hints or CommandHints()
        self.park_orbit = park_orbit
        self.emitted = 0
        self._opened: dict[int, tuple[CallRecord, Opened]] = {}

    async def events(self, observations: list[Observation]) -> list[e.EventBase]:
        await self._open_new_calls(observations)
        out: list[e.EventBase] = []
        try:
            for obs in observations:
                out += await self._one(obs)
        finally:
            self._opened.clear()
        self.emitted += len(out)
        return out

    async def _open_new_calls(self, observations: list[Observation]) -> None:
        """Open at once every call of the batch that first shows up as appearing and is not open yet."""
        first: dict[int, Observation] = {}
        for obs in observations:
            first.setdefault(_callid(obs), obs)
        new = [cid for cid, obs in first.items() if isinstance(obs, CallAppeared) and self.registry.get(cid) is None]
        if len(new) < 2:
            return
        opened = await asyncio.gather(*(self.registry.open(cid, first[cid].at) for cid in new))
        self._opened = dict(zip(new, opened, strict=True))

    async def _one(self, obs: Observation) -> list[e.EventBase]:
        if isinstance(obs, CallAppeared):
            return await self._call_appeared(obs)
        leg = obs.last_leg if isinstance(obs, CallGone) else obs.leg
        record = self.registry.get(leg.callid)
        if record is None:  # a leg of a call whose appearance was not seen (state loaded without it)
            record, _ = await self.registry.open(leg.callid, obs.at)
        self.registry.touch(record)
        if isinstance(obs, LegAppeared):
            return self._leg_appeared(record, obs)
        if isinstance(obs, LegChanged):
            return self._leg_changed(record, obs)
        if isinstance(obs, LegRemoved):
            record.drop_leg(obs.leg)
            hint = self._hint(obs.leg)
            reason = REMOVAL_REASONS.get(hint.command_type, "") if hint else ""
            data = e.LegRemovedData(participant=obs.leg.participant, reason=reason)
            out = [self._event(e.CallLegRemoved, record, obs.leg, "removed", obs.at, obs.inferred, data)]
            if hint is not None and hint.command_type == "park" and record.parked_orbit is None:
                # the leg that parked the call left: its party waits in the orbit (3CX has no hold)
                record.parked_orbit = self.park_orbit
                parked = e.ParkData(orbit=self.park_orbit, participant=obs.leg.participant)
                out.append(self._event(e.CallParked, record, None, "parked", obs.at, obs.inferred, parked, hint))
            return out
        if isinstance(obs, CallGone):
            return self._call_gone(record, obs)
        assert isinstance(obs, DtmfPressed)
        data_dtmf = e.DtmfData(digits=obs.digits)
        return [self._event(e.DtmfReceived, record, obs.leg, "dtmf", obs.at, False, data_dtmf)]

    # ------------------------------------------------------------------ calls

    async def _call_appeared(self, obs: CallAppeared) -> list[e.EventBase]:
        opened = self._opened.pop(obs.callid, None)
        record, how = opened if opened is not None else await self.registry.open(obs.callid, obs.at)
        if how in {"new", "recovered"}:
            return [self._event(e.CallCreated, record, None, "created", obs.at, obs.inferred, _created(obs.leg))]
        if how == "resumed":
            orbit = record.parked_orbit or ""
            record.parked_orbit = None
            data = e.ParkData(orbit=orbit, participant=obs.leg.participant)
            return [self._event(e.CallResumed, record, None, "resumed", obs.at, obs.inferred, data)]
        return []

    def _call_gone(self, record: CallRecord, obs: CallGone) -> list[e.EventBase]:
        hint = self._hint(obs.last_leg)
        if record.parked_orbit is not None:  # no visible leg, but the call waits in its park orbit
            self.registry.close(record, obs.at, parked_orbit=record.parked_orbit)
            return []
        answered = record.answered_at is not None
        if hint is not None and hint.command_type in {"transfer", "route_to", "divert"}:
            cause = e.EndCause.TRANSFERRED_AWAY
        else:
            cause = e.EndCause.COMPLETED if answered else e.EndCause.NO_ANSWER
        talk = max(0.0, obs.at - record.answered_at) if record.answered_at is not None else None
        ring = max(0.0, (record.answered_at or obs.at) - record.first_seen)
        data = e.CallEndedData(cause=cause, answered=answered, talk_seconds=talk, ring_seconds=ring)
        event = self._event(e.CallEnded, record, None, "ended", obs.at, obs.inferred, data, hint)
        self.registry.close(record, obs.at)
        return [event]

    # ------------------------------------------------------------------ legs

    def _leg_appeared(self, record: CallRecord, obs: LegAppeared) -> list[e.EventBase]:
        leg, at, inferred = obs.leg, obs.at, obs.inferred
        record.set_leg(leg)
        out: list[e.EventBase] = []
        if record.parked_orbit is not None:  # picked up from the orbit while one of its legs stayed visible
            resumed = e.ParkData(orbit=record.parked_orbit, participant=leg.participant)
            record.parked_orbit = None
            out.append(self._event(e.CallResumed, record, None, "resumed", at, inferred, resumed))
        if obs.referred_by:
            source_hint = self._hint_on_dn(record, obs.referred_by)
            if obs.source_status in RINGING:
                reason = "routeto" if source_hint and source_hint.command_type == "route_to" else "None"
                div = e.DivertData(to=leg.participant.dn, reason=reason)
                out.append(self._event(e.CallDiverted, record, leg, "diverted", at, inferred, div, source_hint))
            else:
                warm = bool(source_hint and source_hint.summary)
                data = e.TransferData(to=leg.participant.dn, from_dn=obs.referred_by, warm=warm,
                                      participant=leg.participant)  # fmt: skip
                out.append(self._event(e.CallTransferred, record, leg, "transferred", at, inferred, data, source_hint))
        payload = e.LegData(participant=leg.participant)
        if leg.status == "Connected":
            if self.config.connected_on_arrival == "ringing_then_answered":
                out.append(self._event(e.CallRinging, record, leg, "ringing", at, inferred, payload))
            record.answered_at = record.answered_at if record.answered_at is not None else at
            out.append(self._event(e.CallAnswered, record, leg, "answered", at, inferred, payload))
        elif leg.status in RINGING:
            out.append(self._event(e.CallRinging, record, leg, "ringing", at, inferred, payload))
        else:  # a status 3CX does not document: keep the leg, say what it is
            odd = e.ParticipantUpdatedData(participant=leg.participant, changed=["status"])
            out.append(self._event(e.ParticipantUpdated, record, leg, "updated", at, inferred, odd))
        return out

    def _leg_changed(self, record: CallRecord, obs: LegChanged) -> list[e.EventBase]:
        leg = obs.leg
        record.set_leg(leg)
        if obs.status_changed and leg.status == "Connected":
            record.answered_at = record.answered_at if record.answered_at is not None else obs.at
            data = e.LegData(participant=leg.participant)
            return [self._event(e.CallAnswered, record, leg, "answered", obs.at, obs.inferred, data)]
        changed = (["status"] if obs.status_changed else []) + list(obs.changed)
        update = e.ParticipantUpdatedData(participant=leg.participant, changed=changed)
        return [self._event(e.ParticipantUpdated, record, leg, "updated", obs.at, obs.inferred, update)]

    # ------------------------------------------------------------------ envelope

    def _hint(self, leg: LegSnapshot) -> Hint | None:
        return self.hints.for_leg(leg.participant.dn, leg.participant.participant_id)

    def _hint_on_dn(self, record: CallRecord, dn: str) -> Hint | None:
        return self.hints.for_call_dn(record.call_id, dn)

    def _event(
        self,
        cls: type[e.EventBase],
        record: CallRecord,
        leg: LegSnapshot | None,
        transition: str,
        at: float,
        inferred: bool,
        data: Any,
        hint: Hint | None = None,
    ) -> e.EventBase:
        leg_key = leg.key if leg is not None else ""
        hint = hint or (self._hint(leg) if leg is not None else None)
        ordinal = record.ordinal(leg_key, transition)
        ref = None
        if leg is not None:
            p = leg.participant
            ref = LegRef(dn=p.dn, participant_id=p.participant_id, legid=p.legid)
        return cls.model_validate({
            "event_id": leg_event_id(self.pbx_id, record.call_id, leg_key, transition, ordinal),
            "pbx_id": self.pbx_id, "call_id": record.call_id, "pbx_call_id": record.callid, "leg": ref,
            "seq": CallSeq(epoch=self.epoch, counter=record.next_seq()), "occurred_at": utc_at(at),
            "inferred": inferred, "correlation_id": hint.correlation_id if hint else None,
            "issued_by": hint.issued_by if hint else None, "data": data,
        })  # fmt: skip


def _callid(obs: Observation) -> int:
    if isinstance(obs, CallAppeared):
        return obs.callid
    return obs.last_leg.callid if isinstance(obs, CallGone) else obs.leg.callid


def _created(leg: LegSnapshot) -> e.CallCreatedData:
    """Who called whom, from the first leg the hub saw (a Dialing leg placed the call from its DN)."""
    p = leg.participant
    party = p.party_caller_id or p.party_dn
    external = p.party_dn_type == EXTERNAL
    if p.status == "Dialing":
        direction = Direction.OUTBOUND if external else Direction.INTERNAL
        return e.CallCreatedData(direction=direction, from_number=p.dn, to_number=party, did=p.party_did)
    direction = Direction.INBOUND if external else Direction.INTERNAL
    return e.CallCreatedData(direction=direction, from_number=party, from_name=p.party_caller_name,
                             to_number=p.dn, did=p.party_did)  # fmt: skip
