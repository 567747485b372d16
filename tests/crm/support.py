"""Helpers for CRM tests: a call's events as ingest publishes them (several legs, deterministic ids, explicit times),
the CRM agent run in-process against a real nats-server and a migrated database, and reading what it wrote."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import create_async_engine

from agents.crm import CrmAgent, CrmConfig, RemoteTarget
from agents.crm.tables import crm_calls, crm_links, crm_outbox, crm_records
from hub.eventlog.tables import agent_tracking, events
from hub.sdk import RuntimeOptions, Tracker
from schemas import events as ev
from schemas.common import CallSeq, Direction, LegRef, Participant
from schemas.identity import leg_event_id, new_call_id
from tests.agents.support import FAST, PBX, ROUTE_POINT, running

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@dataclass
class CallStory:
    """One call told in events: each helper adds the next event, ``at`` seconds after the call began."""

    call_id: str = field(default_factory=new_call_id)
    caller: str = "+15550100"
    did: str = "+15550199"
    start: datetime = T0
    events: list[ev.EventBase] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _pids: itertools.count[int] = field(default_factory=lambda: itertools.count(7))
    _ordinals: dict[tuple[str, str], int] = field(default_factory=dict)

    def leg(self, dn: str) -> LegRef:
        return LegRef(dn=dn, participant_id=next(self._pids), legid=1)

    def _add(self, cls: type[ev.EventBase], leg: LegRef | None, transition: str, at: float, data: Any,
             **envelope: Any) -> ev.EventBase:  # fmt: skip
        key = (leg.key if leg is not None else "", transition)
        ordinal = self._ordinals.get(key, 0)
        self._ordinals[key] = ordinal + 1
        event = cls.model_validate(
            {
                "event_id": leg_event_id(PBX, self.call_id, key[0], transition, ordinal),
                "pbx_id": PBX,
                "call_id": self.call_id,
                "pbx_call_id": 5,
                "leg": leg,
                "seq": CallSeq(epoch=1, counter=next(self._counter)),
                "occurred_at": self.start + timedelta(seconds=at),
                "data": data,
                **envelope,
            }
        )
        self.events.append(event)
        return event

    def participant(self, leg: LegRef, status: str) -> Participant:
        return Participant(
            dn=leg.dn, participant_id=leg.participant_id, legid=leg.legid, status=status,
            party_caller_id=self.caller, party_did=self.did, party_dn_type="Wexternalline",
        )  # fmt: skip

    def created(self, at: float = 0.0) -> CallStory:
        data = ev.CallCreatedData(direction=Direction.INBOUND, from_number=self.caller, from_name="Ann",
                                  to_number=ROUTE_POINT, did=self.did)  # fmt: skip
        self._add(ev.CallCreated, None, "created", at, data)
        return self

    def answered(self, leg: LegRef, at: float) -> CallStory:
        self._add(ev.CallAnswered, leg, "answered", at, ev.LegData(participant=self.participant(leg, "Connected")))
        return self

    def ringing(self, leg: LegRef, at: float) -> CallStory:
        self._add(ev.CallRinging, leg, "ringing", at, ev.LegData(participant=self.participant(leg, "Ringing")))
        return self

    def transferred(self, to: LegRef, from_dn: str, at: float) -> CallStory:
        data = ev.TransferData(to=to.dn, from_dn=from_dn, participant=self.participant(to, "Ringing"))
        self._add(ev.CallTransferred, to, "transferred", at, data)
        return self

    def removed(self, leg: LegRef, at: float) -> CallStory:
        data = ev.LegRemovedData(participant=self.participant(leg, "Connected"))
        self._add(ev.CallLegRemoved, leg, "removed", at, data)
        return self

    def ended(self, at: float, cause: ev.EndCause = ev.EndCause.COMPLETED) -> CallStory:
        self._add(ev.CallEnded, None, "ended", at, ev.CallEndedData(cause=cause, answered=True))
        return self

    def transcript(self, at: float, summary: str) -> CallStory:
        lines = [ev.TranscriptLine(role="caller", text="I need a quote")]
        data = ev.VoiceTranscriptData(lines=lines, summary=summary)
        self._add(ev.VoiceTranscript, None, "transcript", at, data, issued_by="agent:basma")
        return self

    def recording(self, at: float, location: str) -> CallStory:
        data = ev.RecordingStoppedData(recording_id="r1", location=location, seconds=10.0, bytes=160000)
        self._add(ev.RecordingStopped, None, "recording", at, data)
        return self

    def routed(self, at: float, rule: str, action: str, to: str) -> CallStory:
        data = ev.RoutingDecidedData(rule=rule, action=action, destination=to)
        self._add(ev.RoutingDecided, None, f"routed-{rule}", at, data, issued_by="agent:routing")
        return self

    @classmethod
    def typical(cls, **fields: Any) -> CallStory:
        """Caller -> route point (answers at once) -> routed to 101 -> 101 answers -> transfers to 102 -> ends."""
        story = cls(**fields)
        rp, alice, bob = story.leg(ROUTE_POINT), story.leg("101"), story.leg("102")
        story.created(0.0).answered(rp, 0.05).routed(0.2, "vip", "transfer", "101")
        story.transferred(alice, ROUTE_POINT, 0.3).ringing(alice, 0.3).removed(rp, 0.3).answered(alice, 4.3)
        story.transferred(bob, "101", 30.3).ringing(bob, 30.3).removed(alice, 30.3).answered(bob, 33.3)
        story.removed(bob, 93.3).ended(93.8)
        return story


def crm_config(**fields: Any) -> CrmConfig:
    return CrmConfig(**{"route_points": (ROUTE_POINT,), "poll_s": 0.2, **fields})


@contextlib.asynccontextmanager
async def running_crm(
    nc: Client,
    db_url: str,
    config: CrmConfig | None = None,
    *,
    remote: Mapping[str, RemoteTarget] | None = None,
    options: RuntimeOptions = FAST,
) -> AsyncIterator[CrmAgent]:
    crm = CrmAgent(config or crm_config(), remote=remote)
    tracker = await Tracker.open(db_url, crm.agent.name, crm.agent.database)
    try:
        async with running(crm.agent, nc, options, tracker=tracker):
            yield crm
    finally:
        await tracker.close()


async def rows(db_url: str, table: sa.Table, *where: Any) -> list[dict[str, Any]]:
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(sa.select(table).where(*where).order_by(*table.primary_key.columns))
            return [dict(r._mapping) for r in result]
    finally:
        await engine.dispose()


async def records(db_url: str) -> list[dict[str, Any]]:
    return await rows(db_url, crm_records)


async def outbox(db_url: str, target: str | None = None) -> list[dict[str, Any]]:
    return await rows(db_url, crm_outbox, *([crm_outbox.c.target == target] if target else []))


async def emptied(url: str) -> str:
    """``url`` with the CRM tables, the agents' positions and the event log emptied (Postgres is shared)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for table in (crm_calls, crm_records, crm_outbox, crm_links, agent_tracking, events):
                await conn.execute(sa.delete(table))
    finally:
        await engine.dispose()
    return url
