"""One call record from a call's events, sans-IO: :class:`CallState` takes each event once (in the call's order) and
gives the :class:`CallRecord` the targets receive.

What the record says, and from which events:

| field | from |
|---|---|
| direction, caller (number, name), callee, did | ``call.created`` |
| started_at | ``call.created`` (else the first leg event) |
| answered_at, answered_by | the first ``call.answered`` off the route point (which answers every call at once) |
| ended_at, end_cause | ``call.ended`` (its cause, as ingest saw it) |
| ring_seconds, talk_seconds | start -> answer, answer -> end (a call nobody answered rang until it ended) |
| outcome | rejected (a blocked caller, or that cause), answered (a person, or a voice agent talked), failed, missed |
| transfers | ``call.transferred``, ``call.diverted``, ``call.parked``, ``call.resumed``, in order |
| routing | ``routing.decided`` (not dry runs) |
| agents | ``agent.claimed``, ``agent.handed_off`` |
| recording_url | ``recording.stopped`` (else ``recording.started``) |
| summary | ``voice.transcript`` |

The route point's own answer counts only when a voice agent talked with the caller there (a ``voice.transcript``).
Nothing in a record comes from a clock: the same events give the same record, so a backfill rebuilds it exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas import events as ev
from schemas.common import UtcDateTime

RECORD_NAMESPACE = uuid.UUID("6c1f2a8e-3d4b-5e6f-8a9b-0c1d2e3f4a5b")
Outcome = Literal["answered", "missed", "rejected", "failed"]


def record_id(pbx_id: str, call_id: str) -> str:
    """The record's id: the same for a call wherever and however often it is built."""
    return str(uuid.uuid5(RECORD_NAMESPACE, f"{pbx_id}:{call_id}"))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Party(_Model):
    number: str = ""
    name: str = ""


class Step(_Model):
    """A change of hands: a transfer or divert (``to``, ``from_dn``), a park (``to`` = the orbit) or a resume."""

    kind: Literal["transfer", "divert", "park", "resume"]
    to: str
    from_dn: str = ""
    at: UtcDateTime
    warm: bool = False


class RoutingStep(_Model):
    rule: str
    action: str
    destination: str | None = None
    at: UtcDateTime


class CallRecord(_Model):
    """The record every target gets (``version`` grows when a late event, such as a transcript, changes it)."""

    record_id: str
    version: int = Field(ge=1)
    pbx_id: str
    call_id: str
    pbx_call_id: int | None = None
    direction: str
    caller: Party
    callee: Party
    did: str = ""
    answered_by: str | None = None
    parties: list[str] = Field(default_factory=list, description="Every DN that had a leg in the call, in order")
    agents: list[str] = Field(default_factory=list)
    started_at: UtcDateTime | None = None
    answered_at: UtcDateTime | None = None
    ended_at: UtcDateTime | None = None
    ring_seconds: float | None = None
    talk_seconds: float | None = None
    outcome: Outcome
    end_cause: str = "unknown"
    transfers: list[Step] = Field(default_factory=list)
    routing: list[RoutingStep] = Field(default_factory=list)
    recording_url: str | None = None
    summary: str | None = None
    inferred: bool = Field(default=False, description="Some of the events were rebuilt after an outage")


class CallState(_Model):
    """What has been seen of one call so far (kept in ``crm_calls`` between events)."""

    pbx_id: str
    call_id: str
    pbx_call_id: int | None = None
    direction: str = "unknown"
    caller: Party = Field(default_factory=Party)
    callee: Party = Field(default_factory=Party)
    did: str = ""
    parties: list[str] = Field(default_factory=list)
    agents: list[str] = Field(default_factory=list)
    started_at: UtcDateTime | None = None
    person_answered_at: UtcDateTime | None = None
    person: str | None = None
    first_answered_at: UtcDateTime | None = None
    first_answerer: str | None = None
    ended_at: UtcDateTime | None = None
    end_cause: str | None = None
    rejected: bool = False
    transfers: list[Step] = Field(default_factory=list)
    routing: list[RoutingStep] = Field(default_factory=list)
    recording_url: str | None = None
    recording_final: bool = False
    summary: str | None = None
    conversed: bool = False  # a voice agent talked with the caller
    inferred: bool = False
    version: int = 0  # 0 until the call ended; then the record's version

    @property
    def ended(self) -> bool:
        return self.end_cause is not None

    def apply(self, event: ev.EventBase, route_points: Collection[str] = ()) -> bool:
        """Take one event; True when it changed what the record says."""
        before = self.model_dump()
        self._apply(event, route_points)
        if event.inferred:
            self.inferred = True
        changed = self.model_dump() != before
        if changed and self.ended:
            self.version += 1
        return changed

    def _seen(self, event: ev.EventBase) -> None:
        if event.pbx_call_id is not None and self.pbx_call_id is None:
            self.pbx_call_id = event.pbx_call_id
        starts = isinstance(event, ev.CallCreated | ev.CallRinging | ev.CallAnswered)
        earlier = (
            isinstance(event, ev.CallCreated) and self.started_at is not None and event.occurred_at < self.started_at
        )
        if starts and (self.started_at is None or earlier):
            self.started_at = event.occurred_at
        joins = isinstance(event, ev.CallRinging | ev.CallAnswered | ev.CallTransferred)
        if joins and event.leg is not None and event.leg.dn not in self.parties:
            self.parties.append(event.leg.dn)

    def _apply(self, event: ev.EventBase, route_points: Collection[str]) -> None:
        self._seen(event)
        if isinstance(event, ev.CallCreated):
            created = event.data
            self.direction = created.direction.value
            self.caller = Party(number=created.from_number, name=created.from_name)
            self.callee = Party(number=created.to_number)
            self.did = created.did
        elif isinstance(event, ev.CallAnswered):
            dn = event.leg.dn if event.leg is not None else event.data.participant.dn
            if self.first_answered_at is None:
                self.first_answered_at, self.first_answerer = event.occurred_at, dn
            if self.person_answered_at is None and dn not in route_points:
                self.person_answered_at, self.person = event.occurred_at, dn
        elif isinstance(event, ev.CallTransferred):
            moved = event.data
            self.transfers.append(
                Step(kind="transfer", to=moved.to, from_dn=moved.from_dn, at=event.occurred_at, warm=moved.warm)
            )
        elif isinstance(event, ev.CallDiverted):
            source = event.leg.dn if event.leg is not None else ""
            self.transfers.append(Step(kind="divert", to=event.data.to, from_dn=source, at=event.occurred_at))
        elif isinstance(event, ev.CallParked | ev.CallResumed):
            kind: Literal["park", "resume"] = "park" if isinstance(event, ev.CallParked) else "resume"
            self.transfers.append(Step(kind=kind, to=event.data.orbit, at=event.occurred_at))
        elif isinstance(event, ev.CallEnded):
            self.ended_at = event.occurred_at
            self.end_cause = event.data.cause.value
        elif isinstance(event, ev.RecordingStopped):
            self.recording_url, self.recording_final = event.data.location, True
        elif isinstance(event, ev.RecordingStarted):
            if not self.recording_final:
                self.recording_url = event.data.location
        elif isinstance(event, ev.VoiceTranscript):
            self.summary = event.data.summary or self.summary
            self.conversed = self.conversed or bool(event.data.lines)
        elif isinstance(event, ev.RoutingDecided):
            decided = event.data
            if not decided.dry_run:
                step = RoutingStep(rule=decided.rule, action=decided.action, destination=decided.destination,
                                   at=event.occurred_at)  # fmt: skip
                self.routing.append(step)
                self.rejected = self.rejected or decided.action == "reject"
        elif isinstance(event, ev.AgentClaimedCall):
            self._agent(event.data.agent)
        elif isinstance(event, ev.AgentHandedOff) and event.data.to_agent:
            self._agent(event.data.to_agent)

    def _agent(self, name: str) -> None:
        if name not in self.agents:
            self.agents.append(name)

    def record(self) -> CallRecord:
        answered_at, answered_by = self.person_answered_at, self.person
        if answered_at is None and self.conversed:
            answered_at, answered_by = self.first_answered_at, self.first_answerer
        ring = _seconds(self.started_at, answered_at or self.ended_at) if self.started_at is not None else None
        talk = _seconds(answered_at, self.ended_at) if answered_at is not None else 0.0
        return CallRecord(
            record_id=record_id(self.pbx_id, self.call_id),
            version=max(1, self.version),
            pbx_id=self.pbx_id,
            call_id=self.call_id,
            pbx_call_id=self.pbx_call_id,
            direction=self.direction,
            caller=self.caller,
            callee=self.callee,
            did=self.did,
            answered_by=answered_by,
            parties=self.parties,
            agents=self.agents,
            started_at=self.started_at,
            answered_at=answered_at,
            ended_at=self.ended_at,
            ring_seconds=ring,
            talk_seconds=talk,
            outcome=self._outcome(answered_at),
            end_cause=self.end_cause or "unknown",
            transfers=self.transfers,
            routing=self.routing,
            recording_url=self.recording_url,
            summary=self.summary,
            inferred=self.inferred,
        )

    def _outcome(self, answered_at: datetime | None) -> Outcome:
        if self.rejected or self.end_cause == ev.EndCause.REJECTED.value:
            return "rejected"
        if answered_at is not None:
            return "answered"
        return "failed" if self.end_cause == ev.EndCause.FAILED.value else "missed"


def _seconds(start: datetime, end: datetime | None) -> float | None:
    if end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)
