"""The event contract: one pydantic model per event type, gathered in a discriminated union on ``type``.

Every event shares the envelope of D§2 (:class:`EventBase`) and carries its own ``data`` model. The subject, the stored
type and the schema version are derived from the class (``DOMAIN``, ``NAME``, ``VERSION``), never typed by hand.

Adding a type: subclass :class:`EventBase` with ``DOMAIN``/``NAME``/``VERSION``, a ``type`` literal equal to
``"<domain>.<name>"``, a ``schema_version`` literal and a ``data`` model; add it to :data:`Event`. Changing a type's
data incompatibly: bump ``VERSION`` and register an upcaster from the old version (:mod:`schemas.upcast`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from schemas.common import CallSeq, Direction, LegRef, Model, Participant, UtcDateTime, utcnow
from schemas.tokens import PbxId, Token, check_token

DOMAINS: tuple[str, ...] = (
    "call",
    "presence",
    "message",
    "queue",
    "agent",
    "command",
    "recording",
    "link",
    "voice",
    "crm",
    "routing",
)


class EventBase(Model):
    """The envelope every event carries (D§2)."""

    DOMAIN: ClassVar[str]
    NAME: ClassVar[str]
    VERSION: ClassVar[int]
    DESCRIPTION: ClassVar[str] = ""

    event_id: uuid.UUID
    pbx_id: PbxId
    call_id: Token | None = None
    pbx_call_id: int | None = None
    leg: LegRef | None = None
    seq: CallSeq | None = None
    occurred_at: UtcDateTime
    observed_at: UtcDateTime = Field(default_factory=utcnow)
    inferred: bool = False
    correlation_id: Token | None = None
    issued_by: str | None = None

    @classmethod
    def type_name(cls) -> str:
        return f"{cls.DOMAIN}.{cls.NAME}"

    def subject_key(self) -> str:
        """The key token of the subject: the call id for anything about a call, else what the type names, else '_'."""
        if self.call_id is not None:
            return self.call_id
        return self._key_without_call()

    def _key_without_call(self) -> str:
        return "_"


# --------------------------------------------------------------------------- call


class CallCreatedData(Model):
    direction: Direction = Direction.UNKNOWN
    from_number: str = ""
    from_name: str = ""
    to_number: str = ""
    did: str = ""


class CallCreated(EventBase):
    DOMAIN, NAME, VERSION = "call", "created", 1
    DESCRIPTION = "The hub saw a 3CX call for the first time and minted its call_id."
    type: Literal["call.created"] = "call.created"
    schema_version: Literal[1] = 1
    data: CallCreatedData


class LegData(Model):
    participant: Participant


class CallRinging(EventBase):
    DOMAIN, NAME, VERSION = "call", "ringing", 1
    DESCRIPTION = "A leg of the call started ringing (or dialing, for the leg that placed it)."
    type: Literal["call.ringing"] = "call.ringing"
    schema_version: Literal[1] = 1
    data: LegData


class CallAnswered(EventBase):
    DOMAIN, NAME, VERSION = "call", "answered", 1
    DESCRIPTION = "A leg reached Connected."
    type: Literal["call.answered"] = "call.answered"
    schema_version: Literal[1] = 1
    data: LegData


class ParkData(Model):
    orbit: str
    participant: Participant | None = None


class CallParked(EventBase):
    DOMAIN, NAME, VERSION = "call", "parked", 1
    DESCRIPTION = "The call was transferred to a park orbit (3CX has no hold: the hub's hold is a park)."
    type: Literal["call.parked"] = "call.parked"
    schema_version: Literal[1] = 1
    data: ParkData


class CallResumed(EventBase):
    DOMAIN, NAME, VERSION = "call", "resumed", 1
    DESCRIPTION = "A parked call was picked up from its orbit."
    type: Literal["call.resumed"] = "call.resumed"
    schema_version: Literal[1] = 1
    data: ParkData


class TransferData(Model):
    to: str
    from_dn: str = ""
    warm: bool = False
    participant: Participant | None = None


class CallTransferred(EventBase):
    DOMAIN, NAME, VERSION = "call", "transferred", 1
    DESCRIPTION = "A connected leg was transferred to another destination."
    type: Literal["call.transferred"] = "call.transferred"
    schema_version: Literal[1] = 1
    data: TransferData


class DivertData(Model):
    to: str
    reason: str = "None"


class CallDiverted(EventBase):
    DOMAIN, NAME, VERSION = "call", "diverted", 1
    DESCRIPTION = "A ringing leg was replaced by another destination."
    type: Literal["call.diverted"] = "call.diverted"
    schema_version: Literal[1] = 1
    data: DivertData


class EndCause(StrEnum):
    COMPLETED = "completed"
    NO_ANSWER = "no_answer"
    REJECTED = "rejected"
    FAILED = "failed"
    TRANSFERRED_AWAY = "transferred_away"
    UNKNOWN = "unknown"


class CallEndedData(Model):
    cause: EndCause = EndCause.UNKNOWN
    answered: bool | None = None
    talk_seconds: float | None = Field(default=None, ge=0)
    ring_seconds: float | None = Field(default=None, ge=0)


class CallEnded(EventBase):
    DOMAIN, NAME, VERSION = "call", "ended", 2
    DESCRIPTION = "The last leg of the call is gone. v2 replaced v1's free-text cause with a closed set and timings."
    type: Literal["call.ended"] = "call.ended"
    schema_version: Literal[2] = 2
    data: CallEndedData


class ParticipantUpdatedData(Model):
    participant: Participant
    changed: list[str] = Field(default_factory=list)


class ParticipantUpdated(EventBase):
    DOMAIN, NAME, VERSION = "call", "participant_updated", 1
    DESCRIPTION = "A leg's details changed without a status change (caller name, party, device...)."
    type: Literal["call.participant_updated"] = "call.participant_updated"
    schema_version: Literal[1] = 1
    data: ParticipantUpdatedData


class LegRemovedData(Model):
    participant: Participant
    reason: str = Field(default="", description="Why, when the hub knows (a command it carried out); else empty.")


class CallLegRemoved(EventBase):
    DOMAIN, NAME, VERSION = "call", "leg_removed", 1
    DESCRIPTION = "A leg left the call (hung up, answered elsewhere, transferred, dropped); call.ended follows."
    type: Literal["call.leg_removed"] = "call.leg_removed"
    schema_version: Literal[1] = 1
    data: LegRemovedData


class DtmfData(Model):
    digits: str = Field(pattern=r"^[0-9*#A-Da-d]+$")


class DtmfReceived(EventBase):
    DOMAIN, NAME, VERSION = "call", "dtmf", 1
    DESCRIPTION = "DTMF digits from the remote party of a leg on the hub's route point."
    type: Literal["call.dtmf"] = "call.dtmf"
    schema_version: Literal[1] = 1
    data: DtmfData


# --------------------------------------------------------------------------- presence, messages, queues


class PresenceChangedData(Model):
    extension: Token
    profile: str
    registered: bool | None = None
    queue_status: str | None = None
    previous_profile: str | None = None


class PresenceChanged(EventBase):
    DOMAIN, NAME, VERSION = "presence", "changed", 1
    DESCRIPTION = "An extension's presence profile or registration changed (polled from XAPI)."
    type: Literal["presence.changed"] = "presence.changed"
    schema_version: Literal[1] = 1
    data: PresenceChangedData

    def _key_without_call(self) -> str:
        return self.data.extension


class MessageReceivedData(Model):
    conversation_id: str
    message_id: str
    from_number: str = ""
    from_name: str = ""
    to: str = ""
    text: str
    channel: str = ""
    sent_at: UtcDateTime | None = None


class MessageReceived(EventBase):
    DOMAIN, NAME, VERSION = "message", "received", 1
    DESCRIPTION = "A chat or SMS message appeared in 3CX's chat history (polled from XAPI)."
    type: Literal["message.received"] = "message.received"
    schema_version: Literal[1] = 1
    data: MessageReceivedData


class QueueAgentData(Model):
    extension: Token
    queue: str | None = None


class QueueAgentLoggedIn(EventBase):
    DOMAIN, NAME, VERSION = "queue", "agent_logged_in", 1
    DESCRIPTION = "An extension logged in to its queues."
    type: Literal["queue.agent_logged_in"] = "queue.agent_logged_in"
    schema_version: Literal[1] = 1
    data: QueueAgentData

    def _key_without_call(self) -> str:
        return self.data.extension


class QueueAgentLoggedOut(EventBase):
    DOMAIN, NAME, VERSION = "queue", "agent_logged_out", 1
    DESCRIPTION = "An extension logged out of its queues."
    type: Literal["queue.agent_logged_out"] = "queue.agent_logged_out"
    schema_version: Literal[1] = 1
    data: QueueAgentData

    def _key_without_call(self) -> str:
        return self.data.extension


# --------------------------------------------------------------------------- recording


class RecordingStartedData(Model):
    recording_id: str
    location: str
    format: str = "audio/wav"


class RecordingStarted(EventBase):
    DOMAIN, NAME, VERSION = "recording", "started", 1
    DESCRIPTION = "The hub started recording a leg on its own DN (hub-side recording)."
    type: Literal["recording.started"] = "recording.started"
    schema_version: Literal[1] = 1
    data: RecordingStartedData


class RecordingStoppedData(Model):
    recording_id: str
    location: str
    seconds: float = Field(ge=0)
    bytes: int = Field(ge=0)


class RecordingStopped(EventBase):
    DOMAIN, NAME, VERSION = "recording", "stopped", 1
    DESCRIPTION = "A hub-side recording ended; the file is complete at its location."
    type: Literal["recording.stopped"] = "recording.stopped"
    schema_version: Literal[1] = 1
    data: RecordingStoppedData


# --------------------------------------------------------------------------- commands (audit trail)


class CommandAcceptedData(Model):
    command: dict[str, Any] = Field(description="The whole command as received (audit, D§2).")


class CommandAccepted(EventBase):
    DOMAIN, NAME, VERSION = "command", "accepted", 1
    DESCRIPTION = "The worker accepted a command; the whole command is kept for audit."
    type: Literal["command.accepted"] = "command.accepted"
    schema_version: Literal[1] = 1
    data: CommandAcceptedData


class CommandSucceededData(Model):
    command_id: str
    command_type: str
    result: dict[str, Any] = Field(default_factory=dict)


class CommandSucceeded(EventBase):
    DOMAIN, NAME, VERSION = "command", "succeeded", 1
    DESCRIPTION = "A command was carried out on the PBX."
    type: Literal["command.succeeded"] = "command.succeeded"
    schema_version: Literal[1] = 1
    data: CommandSucceededData


class CommandFailedData(Model):
    command_id: str
    command_type: str
    code: str
    message: str
    pbx_reason: str | None = None


class CommandFailed(EventBase):
    DOMAIN, NAME, VERSION = "command", "failed", 1
    DESCRIPTION = "A command was refused or failed; code is one of D§7's error codes."
    type: Literal["command.failed"] = "command.failed"
    schema_version: Literal[1] = 1
    data: CommandFailedData


# --------------------------------------------------------------------------- agents


class AgentRegisteredData(Model):
    agent: Token
    capabilities: list[str] = Field(default_factory=list)
    version: str = ""


class AgentRegistered(EventBase):
    DOMAIN, NAME, VERSION = "agent", "registered", 1
    DESCRIPTION = "An agent joined the coordinator's registry."
    type: Literal["agent.registered"] = "agent.registered"
    schema_version: Literal[1] = 1
    data: AgentRegisteredData

    def _key_without_call(self) -> str:
        return self.data.agent


class AgentClaimData(Model):
    agent: Token
    lease_seconds: float = Field(gt=0)
    lease_until: UtcDateTime


class AgentClaimedCall(EventBase):
    DOMAIN, NAME, VERSION = "agent", "claimed", 1
    DESCRIPTION = "An agent took ownership of a call under a lease."
    type: Literal["agent.claimed"] = "agent.claimed"
    schema_version: Literal[1] = 1
    data: AgentClaimData


class AgentReleaseData(Model):
    agent: Token
    reason: str = ""


class AgentReleasedCall(EventBase):
    DOMAIN, NAME, VERSION = "agent", "released", 1
    DESCRIPTION = "An agent gave up ownership of a call."
    type: Literal["agent.released"] = "agent.released"
    schema_version: Literal[1] = 1
    data: AgentReleaseData


class HandoffData(Model):
    from_agent: Token
    to_agent: Token | None = None
    to_extension: str | None = None
    summary: str = ""
    context: dict[str, Any] = Field(default_factory=dict)


class AgentHandedOff(EventBase):
    DOMAIN, NAME, VERSION = "agent", "handed_off", 1
    DESCRIPTION = "A call's ownership moved to another agent or to a person, with context."
    type: Literal["agent.handed_off"] = "agent.handed_off"
    schema_version: Literal[1] = 1
    data: HandoffData


class AssignedData(Model):
    agent: Token | None = Field(default=None, description="The agent that should claim the call; None: nobody could.")
    rule: str = Field(default="", description="The assignment rule that matched (or 'default').")
    attempt: int = Field(default=1, ge=1, description="1 for the first choice, 2 after the first escalation, ...")
    claim_within_s: float | None = Field(default=None, gt=0, description="The agent must claim within this time.")
    safe_route: str | None = Field(default=None, description="Set when no agent took the call: where it was sent.")
    reason: str = ""


class AgentAssigned(EventBase):
    DOMAIN, NAME, VERSION = "agent", "assigned", 1
    DESCRIPTION = (
        "The coordinator chose who handles an inbound call: an agent that must claim it in time (else the next "
        "candidate), or, when none could, the safe route."
    )
    type: Literal["agent.assigned"] = "agent.assigned"
    schema_version: Literal[1] = 1
    data: AssignedData


class LeaseExpiredData(Model):
    agent: Token
    safe_route: str | None = None


class AgentLeaseExpired(EventBase):
    DOMAIN, NAME, VERSION = "agent", "lease_expired", 1
    DESCRIPTION = "An owner stopped renewing its lease; the call goes to the configured safe route."
    type: Literal["agent.lease_expired"] = "agent.lease_expired"
    schema_version: Literal[1] = 1
    data: LeaseExpiredData


# --------------------------------------------------------------------------- routing, voice, crm


class RoutingDecidedData(Model):
    rule: str
    action: str
    destination: str | None = None
    reason: str = ""
    dry_run: bool = False


class RoutingDecided(EventBase):
    DOMAIN, NAME, VERSION = "routing", "decided", 1
    DESCRIPTION = "The routing agent chose where a call goes, and by which rule."
    type: Literal["routing.decided"] = "routing.decided"
    schema_version: Literal[1] = 1
    data: RoutingDecidedData


class VoiceTurnData(Model):
    turn: int = Field(ge=0)
    role: Literal["caller", "agent"]
    text: str
    started_at: UtcDateTime | None = None
    ended_at: UtcDateTime | None = None
    latency_ms: float | None = Field(default=None, ge=0)
    interrupted: bool = False


class VoiceTurn(EventBase):
    DOMAIN, NAME, VERSION = "voice", "turn", 1
    DESCRIPTION = "One turn of a voice-agent dialogue (what the caller said, or what the agent played)."
    type: Literal["voice.turn"] = "voice.turn"
    schema_version: Literal[1] = 1
    data: VoiceTurnData


class TranscriptLine(Model):
    role: Literal["caller", "agent"]
    text: str
    at: datetime | None = None


class VoiceTranscriptData(Model):
    lines: list[TranscriptLine]
    summary: str = ""


class VoiceTranscript(EventBase):
    DOMAIN, NAME, VERSION = "voice", "transcript", 1
    DESCRIPTION = "The whole transcript of a voice-agent conversation, with a summary."
    type: Literal["voice.transcript"] = "voice.transcript"
    schema_version: Literal[1] = 1
    data: VoiceTranscriptData


class CrmRecordWrittenData(Model):
    record_id: str
    target: str
    external_id: str | None = None


class CrmRecordWritten(EventBase):
    DOMAIN, NAME, VERSION = "crm", "record_written", 1
    DESCRIPTION = "The CRM agent wrote (or updated) the call's record in a target."
    type: Literal["crm.record_written"] = "crm.record_written"
    schema_version: Literal[1] = 1
    data: CrmRecordWrittenData


# --------------------------------------------------------------------------- link


class LinkConnectedData(Model):
    endpoint: str = ""
    mode: str = "full"


class LinkConnected(EventBase):
    DOMAIN, NAME, VERSION = "link", "connected", 1
    DESCRIPTION = "The adapter's websocket to the PBX is up."
    type: Literal["link.connected"] = "link.connected"
    schema_version: Literal[1] = 1
    data: LinkConnectedData


class LinkDisconnectedData(Model):
    reason: str = ""


class LinkDisconnected(EventBase):
    DOMAIN, NAME, VERSION = "link", "disconnected", 1
    DESCRIPTION = "The adapter lost the PBX websocket: events may be missing until link.resynced."
    type: Literal["link.disconnected"] = "link.disconnected"
    schema_version: Literal[1] = 1
    data: LinkDisconnectedData


class LinkResyncedData(Model):
    gap_seconds: float = Field(ge=0)
    inferred_events: int = Field(default=0, ge=0)


class LinkResynced(EventBase):
    DOMAIN, NAME, VERSION = "link", "resynced", 1
    DESCRIPTION = "After a reconnect the adapter re-read the PBX; the differences were published as inferred events."
    type: Literal["link.resynced"] = "link.resynced"
    schema_version: Literal[1] = 1
    data: LinkResyncedData


Event = Annotated[
    CallCreated
    | CallRinging
    | CallAnswered
    | CallParked
    | CallResumed
    | CallTransferred
    | CallDiverted
    | CallEnded
    | ParticipantUpdated
    | CallLegRemoved
    | DtmfReceived
    | PresenceChanged
    | MessageReceived
    | QueueAgentLoggedIn
    | QueueAgentLoggedOut
    | RecordingStarted
    | RecordingStopped
    | CommandAccepted
    | CommandSucceeded
    | CommandFailed
    | AgentRegistered
    | AgentAssigned
    | AgentClaimedCall
    | AgentReleasedCall
    | AgentHandedOff
    | AgentLeaseExpired
    | RoutingDecided
    | VoiceTurn
    | VoiceTranscript
    | CrmRecordWritten
    | LinkConnected
    | LinkDisconnected
    | LinkResynced,
    Field(discriminator="type"),
]
"""Any event: a discriminated union on ``type``."""

EVENT_TYPES: tuple[type[EventBase], ...] = (
    CallCreated,
    CallRinging,
    CallAnswered,
    CallParked,
    CallResumed,
    CallTransferred,
    CallDiverted,
    CallEnded,
    ParticipantUpdated,
    CallLegRemoved,
    DtmfReceived,
    PresenceChanged,
    MessageReceived,
    QueueAgentLoggedIn,
    QueueAgentLoggedOut,
    RecordingStarted,
    RecordingStopped,
    CommandAccepted,
    CommandSucceeded,
    CommandFailed,
    AgentRegistered,
    AgentAssigned,
    AgentClaimedCall,
    AgentReleasedCall,
    AgentHandedOff,
    AgentLeaseExpired,
    RoutingDecided,
    VoiceTurn,
    VoiceTranscript,
    CrmRecordWritten,
    LinkConnected,
    LinkDisconnected,
    LinkResynced,
)

EVENT_CLASSES: dict[str, type[EventBase]] = {cls.type_name(): cls for cls in EVENT_TYPES}
"""Type name (``call.ringing``) -> class."""


def _check_registry() -> None:
    for cls in EVENT_TYPES:
        if cls.DOMAIN not in DOMAINS:
            raise TypeError(f"{cls.__name__}: unknown domain {cls.DOMAIN!r}")
        check_token(cls.NAME, f"{cls.__name__}.NAME")
        fields = cls.model_fields
        if fields["type"].default != cls.type_name():
            raise TypeError(f"{cls.__name__}: type literal {fields['type'].default!r} != {cls.type_name()!r}")
        if fields["schema_version"].default != cls.VERSION:
            raise TypeError(f"{cls.__name__}: schema_version literal does not match VERSION {cls.VERSION}")


_check_registry()
