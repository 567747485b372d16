"""Sample contract objects for tests: one valid instance of every event, command and query type."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import commands as c
from schemas import events as e
from schemas.common import LegRef, Participant
from schemas.identity import new_call_id

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
PARTICIPANT = Participant(
    dn="209",
    participant_id=6,
    legid=2,
    status="Connected",
    party_dn="101",
    party_caller_id="101",
    party_caller_name="Naif saleh",
    party_dn_type="Wextension",
    device_id="sip:209@127.0.0.1:5483",
)
LEG = LegRef(dn="209", participant_id=6, legid=2)

EVENT_DATA: dict[type[e.EventBase], dict[str, Any]] = {
    e.CallCreated: {"direction": "inbound", "from_number": "+15550100", "to_number": "800", "did": "+15550199"},
    e.CallRinging: {"participant": PARTICIPANT.model_copy(update={"status": "Ringing"})},
    e.CallAnswered: {"participant": PARTICIPANT},
    e.CallParked: {"orbit": "SP0", "participant": PARTICIPANT},
    e.CallResumed: {"orbit": "SP0"},
    e.CallTransferred: {"to": "102", "from_dn": "209", "warm": True},
    e.CallDiverted: {"to": "103", "reason": "NoAnswer"},
    e.CallEnded: {"cause": "completed", "answered": True, "talk_seconds": 12.5, "ring_seconds": 3.0},
    e.ParticipantUpdated: {"participant": PARTICIPANT, "changed": ["party_caller_name"]},
    e.CallLegRemoved: {"participant": PARTICIPANT, "reason": "dropped"},
    e.DtmfReceived: {"digits": "12#"},
    e.PresenceChanged: {"extension": "101", "profile": "Away", "registered": True, "previous_profile": "Available"},
    e.MessageReceived: {"conversation_id": "c1", "message_id": "m1", "from_number": "+15550100", "text": "hi"},
    e.QueueAgentLoggedIn: {"extension": "101", "queue": "8000"},
    e.QueueAgentLoggedOut: {"extension": "101"},
    e.RecordingStarted: {"recording_id": "r1", "location": "file:///var/rec/r1.wav"},
    e.RecordingStopped: {"recording_id": "r1", "location": "file:///var/rec/r1.wav", "seconds": 4.2, "bytes": 67244},
    e.CommandAccepted: {"command": {"type": "drop", "command_id": "01J"}},
    e.CommandSucceeded: {"command_id": "01J", "command_type": "drop", "result": {"already_gone": False}},
    e.CommandFailed: {"command_id": "01J", "command_type": "answer", "code": "not_supported", "message": "no uaCSTA"},
    e.AgentRegistered: {"agent": "routing", "capabilities": ["route"], "version": "0.1.0"},
    e.AgentAssigned: {"agent": "basma", "rule": "vip", "claim_within_s": 3},
    e.AgentClaimedCall: {"agent": "basma", "lease_seconds": 15, "lease_until": T0 + timedelta(seconds=15)},
    e.AgentReleasedCall: {"agent": "basma", "reason": "done"},
    e.AgentHandedOff: {"from_agent": "basma", "to_extension": "101", "summary": "wants billing"},
    e.AgentLeaseExpired: {"agent": "basma", "safe_route": "8000"},
    e.RoutingDecided: {"rule": "vip", "action": "transfer", "destination": "101"},
    e.VoiceTurn: {"turn": 1, "role": "caller", "text": "hello"},
    e.VoiceTranscript: {"lines": [{"role": "caller", "text": "hello"}], "summary": "greeting"},
    e.CrmRecordWritten: {"record_id": "rec1", "target": "db"},
    e.LinkConnected: {"endpoint": "wss://pbx.example.com/callcontrol/ws"},
    e.LinkDisconnected: {"reason": "closed 1006"},
    e.LinkResynced: {"gap_seconds": 3.5, "inferred_events": 2},
}

NO_CALL = {
    e.PresenceChanged,
    e.MessageReceived,
    e.QueueAgentLoggedIn,
    e.QueueAgentLoggedOut,
    e.AgentRegistered,
    e.LinkConnected,
    e.LinkDisconnected,
    e.LinkResynced,
}


def make_event(
    cls: type[e.EventBase], *, pbx_id: str = "main", call_id: str | None = None, **envelope: Any
) -> e.EventBase:
    about_call = cls not in NO_CALL
    fields: dict[str, Any] = {
        "event_id": envelope.pop("event_id", uuid.uuid4()),
        "pbx_id": pbx_id,
        "occurred_at": envelope.pop("occurred_at", T0),
        "data": EVENT_DATA[cls],
    }
    if about_call:
        fields["call_id"] = call_id or new_call_id()
        fields["pbx_call_id"] = 2
        fields["leg"] = LEG
    fields.update(envelope)
    return cls.model_validate(fields)


def command_samples(pbx_id: str = "main") -> list[c.CommandBase]:
    target: dict[str, Any] = {"pbx_id": pbx_id, "issued_by": "test", "call_id": new_call_id(), "leg": LEG}
    free: dict[str, Any] = {"pbx_id": pbx_id, "issued_by": "test"}
    return [
        c.MakeCall(**free, args=c.MakeCallArgs.model_validate({"from": "101", "to": "+15550100"})),
        c.Answer(**target),
        c.Divert(**target, args=c.DivertArgs(to="102")),
        c.RouteTo(**target, args=c.DestinationArgs(to="102")),
        c.Transfer(**target, args=c.TransferArgs(to="102", summary="billing")),
        c.Drop(**target),
        c.Park(**target),
        c.Resume(**free, args=c.ResumeArgs(orbit="SP0", to="101")),
        c.StartRecording(**target),
        c.StopRecording(**target),
        c.SendMessage(**free, args=c.SendMessageArgs(to="+15550100", text="hello")),
        c.SetPresence(**free, args=c.SetPresenceArgs(extension="101", profile="Away")),
    ]


def query_samples(pbx_id: str = "main") -> list[c.QueryBase]:
    return [
        c.ActiveCalls(pbx_id=pbx_id),
        c.CallHistory(pbx_id=pbx_id, args=c.CallHistoryArgs(since=T0, until=T0 + timedelta(days=1))),
        c.Extensions(pbx_id=pbx_id),
        c.Presence(pbx_id=pbx_id, args=c.PresenceArgs(extension="101")),
        c.Recordings(pbx_id=pbx_id),
        c.ChatHistory(pbx_id=pbx_id),
    ]
