"""The PBX data XAPI serves (reference §5), sans-IO: users and presence, call history, recordings, chat, parkings.

Users come from the configured extensions. Call history is filled as calls end, one CallHistoryView row per segment
(a leg's life: the party it connected, and when), and one CallLogData row per segment for ReportCallLogData.
Recordings are added for calls of extensions with ``record_calls``. Presence changes and chat messages have a
driving API (``set_presence``, ``add_chat_message``) so ingest tests can make them; every change is journalled.

Field names and types follow the XAPI description for 20.0.10. Values 3CX does not document are the simulator's own
and marked *inferred* below: DN types are numbered in the order of XAPI's PeerType enum (None=0, Extension=1,
Queue=2, ..., SpecialMenu=7, Parking=8, ExternalLine=9, Group=10, RoutePoint=11); ``SegmentType`` is 2 for an
answered segment and 1 otherwise; ``SegmentActionId`` says how the segment ended (see ``ACTION_IDS``).
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from hub.simulator.config import SimConfig
from hub.simulator.engine import Call, CallEngine, Segment
from hub.simulator.odata import FieldType, ODataError, Schema

PEER_TYPES = ("None", "Extension", "Queue", "RingGroup", "IVR", "Fax", "Conference", "SpecialMenu", "Parking",
              "ExternalLine", "Group", "RoutePoint")  # fmt: skip
_W_TO_PEER = {"Wextension": "Extension", "Wqueue": "Queue", "Wspecialmenu": "SpecialMenu",
              "Wexternalline": "ExternalLine", "Wroutepoint": "RoutePoint"}  # fmt: skip
ACTION_IDS = {
    "hangup": 1,
    "dropped": 1,
    "transferred": 2,
    "diverted": 3,
    "routed_away": 3,
    "answered_elsewhere": 4,
    "pickup_leg_done": 5,
}  # fmt: skip (inferred codes)
_NS = uuid.UUID("6d1f1c0e-3c7a-4c4e-9f4e-5a1b2c3d4e5f")

USER_SCHEMA: Schema = {
    "Id": "int", "Number": "string", "FirstName": "string", "LastName": "string", "DisplayName": "string",
    "EmailAddress": "string", "Mobile": "string", "Enabled": "bool", "IsRegistered": "bool",
    "CurrentProfileName": "string", "QueueStatus": "string", "VMEnabled": "bool", "RecordCalls": "bool",
    "PrimaryGroupId": "int",
}  # fmt: skip
PROFILE_SCHEMA: Schema = {
    "Id": "int", "Name": "string", "CustomName": "string", "AvailableRoute": "object", "AwayRoute": "object",
    "CustomMessage": "string", "NoAnswerTimeout": "int", "AcceptMultipleCalls": "bool", "BlockPushCalls": "bool",
    "DisableRingGroupCalls": "bool", "RingMyMobile": "bool", "OfficeHoursAutoQueueLogOut": "bool",
}  # fmt: skip
ACTIVE_CALL_SCHEMA: Schema = {
    "Id": "int", "Caller": "string", "Callee": "string", "Status": "string", "EstablishedAt": "datetime",
    "LastChangeStatus": "datetime", "ServerNow": "datetime",
}  # fmt: skip
_PARTY = ("Id", "Dn", "DnType", "CallerNumber", "DisplayName", "ExtendedDisplayName", "External", "Internal",
          "ParticipantId", "RecId")  # fmt: skip
_PARTY_TYPES: dict[str, FieldType] = {"Id": "int", "Dn": "string", "DnType": "int", "CallerNumber": "string",
                                "DisplayName": "string", "ExtendedDisplayName": "string", "External": "bool",
                                "Internal": "bool", "ParticipantId": "int", "RecId": "int"}  # fmt: skip
CALL_HISTORY_SCHEMA: Schema = {
    "SegmentId": "int", "SegmentStartTime": "datetime", "SegmentEndTime": "datetime", "SegmentType": "int",
    "SegmentActionId": "int",
    **{f"Src{k}": _PARTY_TYPES[k] for k in _PARTY}, **{f"Dst{k}": _PARTY_TYPES[k] for k in _PARTY},
    "CallAnswered": "bool", "CallTime": "duration",
}  # fmt: skip
CALL_LOG_SCHEMA: Schema = {
    "CdrId": "string", "CallId": "int", "CallHistoryId": "string", "MainCallHistoryId": "string", "SegmentId": "int",
    "StartTime": "datetime", "SourceDn": "string", "SourceType": "int", "SourceCallerId": "string",
    "SourceDisplayName": "string", "DestinationDn": "string", "DestinationType": "int",
    "DestinationCallerId": "string", "DestinationDisplayName": "string", "ActionType": "int", "actionDnDn": "string",
    "ActionDnCallerId": "string", "ActionDnDisplayName": "string", "ActionDnType": "int",
    "RingingDuration": "duration", "TalkingDuration": "duration", "Answered": "bool", "Direction": "string",
    "CallType": "string", "Status": "string", "Reason": "string", "CallCost": "decimal", "RecordingUrl": "string",
    "Recordings": "array", "QualityReport": "bool", "SentimentScore": "int", "Summary": "string",
    "Transcription": "string", "Indent": "int", "SubrowDescNumber": "int", "SrcRecId": "int", "DstRecId": "int",
}  # fmt: skip
_RECORDING_PARTY: tuple[tuple[str, FieldType], ...] = (
    ("Dn", "string"), ("DnType", "int"), ("CallerNumber", "string"), ("DisplayName", "string"),
    ("DidNumber", "string"), ("CrmContact", "string"), ("IdParticipant", "int"),
)  # fmt: skip
RECORDING_SCHEMA: Schema = {
    "Id": "int", "StartTime": "datetime", "EndTime": "datetime",
    **{f"{side}{k}": t for side in ("From", "To") for k, t in _RECORDING_PARTY},
    "CallType": "string", "RecordingUrl": "string", "IsArchived": "bool", "ArchivedUrl": "string",
    "RefParticipantId": "int", "CanBeTranscribed": "bool", "IsTranscribed": "bool", "Transcription": "string",
    "TranscriptionResult": "int", "Summary": "string", "SentimentScore": "int",
}  # fmt: skip
CHAT_SCHEMA: Schema = {
    "ConversationId": "int", "ChatName": "string", "FromName": "string", "FromNo": "string", "IsExternal": "bool",
    "Message": "string", "TimeSent": "datetime", "ProviderName": "string", "ProviderType": "string",
    "QueueNumber": "string", "Source": "string", "ParticipantEmail": "string", "ParticipantIp": "string",
    "ParticipantPhone": "string", "ParticipantsGroupsArray": "array",
}  # fmt: skip
PARKING_SCHEMA: Schema = {"Id": "int", "Number": "string", "Groups": "array", "TranscriptionMode": "string"}
CHAT_TYPES = ("SMS", "LiveChat", "Facebook", "Internal", "RCS")


def iso(t: float) -> str:
    """An XAPI date-time: UTC with milliseconds, ``2025-03-13T23:00:00.000Z``."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_duration(seconds: float) -> str:
    """An ISO-8601 duration as XAPI writes them: ``PT1M5.25S``, ``PT0S``."""
    seconds = max(0.0, seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = "PT" + (f"{int(hours)}H" if hours else "") + (f"{int(minutes)}M" if minutes else "")
    if secs or out == "PT":
        out += f"{secs:.3f}".rstrip("0").rstrip(".") + "S"
    return out


@dataclass
class User:
    id: int
    number: str
    first_name: str
    last_name: str
    display_name: str
    email: str
    mobile: str
    registered: bool
    profile: str
    queue_status: Literal["LoggedIn", "LoggedOut"]
    record_calls: bool
    profiles: tuple[str, ...]

    def row(self) -> dict[str, Any]:
        return {
            "Id": self.id, "Number": self.number, "FirstName": self.first_name, "LastName": self.last_name,
            "DisplayName": self.display_name, "EmailAddress": self.email, "Mobile": self.mobile, "Enabled": True,
            "IsRegistered": self.registered, "CurrentProfileName": self.profile, "QueueStatus": self.queue_status,
            "VMEnabled": True, "RecordCalls": self.record_calls, "PrimaryGroupId": 1,
        }  # fmt: skip

    def profile_rows(self) -> list[dict[str, Any]]:
        route = {"Internal": {"Type": "VoiceMail"}, "External": {"Type": "VoiceMail"}}
        return [{"Id": self.id * 100 + i, "Name": name, "CustomName": name if i > 2 else None,
                 "AvailableRoute": route, "AwayRoute": route, "CustomMessage": "", "NoAnswerTimeout": 20,
                 "AcceptMultipleCalls": False, "BlockPushCalls": False, "DisableRingGroupCalls": False,
                 "RingMyMobile": False, "OfficeHoursAutoQueueLogOut": False}
                for i, name in enumerate(self.profiles, 1)]  # fmt: skip


@dataclass
class Directory:
    """Everything XAPI reads, kept up to date from the engine."""

    engine: CallEngine
    users: dict[str, User] = field(default_factory=dict)  # extension -> user
    call_history: list[dict[str, Any]] = field(default_factory=list)
    call_log: list[dict[str, Any]] = field(default_factory=list)
    recordings: list[dict[str, Any]] = field(default_factory=list)
    chats: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = self.config
        ids = config.user_ids()
        for ext in config.extensions:
            first, _, last = ext.name.partition(" ")
            self.users[ext.dn] = User(
                id=ids[ext.dn], number=ext.dn, first_name=first, last_name=last, display_name=ext.name,
                email=ext.email, mobile=ext.mobile, registered=ext.registered, profile=ext.profile,
                queue_status=ext.queue_status, record_calls=ext.record_calls, profiles=config.profile_names,
            )  # fmt: skip
        self._segment_ids = itertools.count(1)
        self._recording_ids = itertools.count(1)
        self._conversations = itertools.count(1)
        self.engine.on_call_ended(self._call_ended)

    @property
    def config(self) -> SimConfig:
        return self.engine.config

    # ------------------------------------------------------------------ users and presence

    def user(self, *, id: int | None = None, number: str | None = None) -> User:
        for user in self.users.values():
            if (id is not None and user.id == id) or (number is not None and user.number == number):
                return user
        key = f"Id={id}" if id is not None else f"Number='{number}'"
        raise ODataError(404, f"No User with key {key} was found", code="NotFound")

    def set_presence(
        self,
        number: str,
        *,
        profile: str | None = None,
        queue_status: Literal["LoggedIn", "LoggedOut"] | None = None,
        registered: bool | None = None,
        by: str = "driver",
    ) -> User:
        """Change a user's presence (the PBX side: a user pressing buttons, or XAPI PATCH with ``by="xapi"``)."""
        user = self.user(number=number)
        if profile is not None and self.config.strict_profile_names and profile not in user.profiles:
            raise ODataError(400, f"'{profile}' is not a forwarding profile of user {number}; "
                                  f"use one of: {', '.join(user.profiles)}", target="CurrentProfileName")  # fmt: skip
        if queue_status is not None and queue_status not in ("LoggedIn", "LoggedOut"):
            raise ODataError(400, f"QueueStatus must be LoggedIn or LoggedOut, not {queue_status!r}",
                             target="QueueStatus")  # fmt: skip
        changes = [("CurrentProfileName", "profile", profile), ("QueueStatus", "queue_status", queue_status),
                   ("IsRegistered", "registered", registered)]  # fmt: skip
        for wire, attr, value in changes:
            if value is None:
                continue
            old = getattr(user, attr)
            setattr(user, attr, value)
            self.engine.journal.add(self.engine.clock(), "presence", dn=number,
                                    detail={"field": wire, "old": old, "new": value, "by": by})  # fmt: skip
        return user

    # ------------------------------------------------------------------ chat

    def add_chat_message(
        self,
        from_no: str,
        message: str,
        *,
        from_name: str = "",
        chat_name: str = "",
        conversation_id: int | None = None,
        is_external: bool = True,
        provider_name: str = "",
        provider_type: str = "SMS",
        queue_number: str = "",
        source: str = "",
        participant_phone: str = "",
        participant_email: str = "",
    ) -> dict[str, Any]:
        """A chat or SMS message reaches the PBX (there is no XAPI to send one: it is read-only, reference §5.7)."""
        if provider_type not in CHAT_TYPES:
            raise ValueError(f"provider_type must be one of {', '.join(CHAT_TYPES)}, not {provider_type!r}")
        if not message:
            raise ValueError("a chat message needs text")
        conversation = conversation_id if conversation_id is not None else next(self._conversations)
        row = {
            "ConversationId": conversation, "ChatName": chat_name or from_name or from_no, "FromName": from_name,
            "FromNo": from_no, "IsExternal": is_external, "Message": message, "TimeSent": iso(self.engine.clock()),
            "ProviderName": provider_name or provider_type, "ProviderType": provider_type,
            "QueueNumber": queue_number or None, "Source": source or from_no,
            "ParticipantEmail": participant_email or None, "ParticipantIp": None,
            "ParticipantPhone": participant_phone or (from_no if is_external else None),
            "ParticipantsGroupsArray": [],
        }  # fmt: skip
        self.chats.append(row)
        self.engine.journal.add(self.engine.clock(), "chat", dn=queue_number or None,
                                detail={"conversation": conversation, "from": from_no, "message": message,
                                        "provider_type": provider_type, "time_sent": row["TimeSent"]})  # fmt: skip
        return row

    # ------------------------------------------------------------------ live views

    def active_calls(self) -> list[dict[str, Any]]:
        now = iso(self.engine.clock())
        rows = []
        for call in self.engine.calls.values():
            if not call.legs and call.parked_at is None:
                continue
            connected = call.parked_at is not None or any(leg.status == "Connected" for leg in call.legs.values())
            rows.append({"Id": call.callid, "Caller": call.caller, "Callee": call.callee,
                         "Status": "Connected" if connected else "Ringing", "EstablishedAt": iso(call.started_at),
                         "LastChangeStatus": iso(call.changed_at), "ServerNow": now})  # fmt: skip
        return rows

    def parkings(self) -> list[dict[str, Any]]:
        return [{"Id": 1000 + i, "Number": orbit, "Groups": [], "TranscriptionMode": None}
                for i, orbit in enumerate(self.config.park_orbits, 1)]  # fmt: skip

    # ------------------------------------------------------------------ history, as calls end

    def _party(self, dn: str, name: str, participant_id: int) -> dict[str, Any]:
        kind = self.engine.dn_type(dn)
        user = self.users.get(dn)
        internal = kind != "Wexternalline"
        name = name or (user.display_name if user else "")
        return {
            "Id": user.id if user else 0, "Dn": dn, "DnType": PEER_TYPES.index(_W_TO_PEER.get(kind, "None")),
            "CallerNumber": dn, "DisplayName": name, "ExtendedDisplayName": f"{name} ({dn})" if name else dn,
            "External": not internal, "Internal": internal, "ParticipantId": participant_id, "RecId": None,
        }  # fmt: skip

    def _history_segments(self, call: Call) -> list[tuple[Segment, Segment | None]]:
        """(segment, the originator's segment) pairs: one per leg that received the call, or the originator's own
        leg when nothing internal received it (an outbound call to an outside number)."""
        originator = next((s for s in call.segments if s.leg.originator), None)
        received = [s for s in call.segments if not s.leg.originator]
        if received:
            return [(s, originator) for s in received]
        return [(originator, None)] if originator is not None else []

    def _call_ended(self, call: Call) -> None:
        history_id = str(uuid.uuid5(_NS, f"{call.callid}:{call.started_at}"))
        for segment, origin in self._history_segments(call):
            leg = segment.leg
            if leg.originator:
                src = self._party(leg.dn, "", leg.id)
                dst = self._party(call.callee, "", 0)
            else:
                source_pid = origin.leg.id if origin is not None else 0
                src = self._party(leg.party_caller_id, leg.party_caller_name, source_pid)
                dst = self._party(leg.dn, "", leg.id)
            answered = leg.connected_at is not None
            talk = segment.ended_at - leg.connected_at if leg.connected_at is not None else 0.0
            ring = (leg.connected_at or segment.ended_at) - leg.created_at
            segment_id = next(self._segment_ids)
            recording = self._record(call, leg, src, dst, segment) if self._recorded(leg.dn, src, dst) else None
            if recording is not None:
                (dst if dst["Internal"] and dst["Dn"] == leg.dn else src)["RecId"] = recording["Id"]
            row: dict[str, Any] = {
                "SegmentId": segment_id,
                "SegmentStartTime": iso(leg.created_at),
                "SegmentEndTime": iso(segment.ended_at),
                "SegmentType": 2 if answered else 1,
                "SegmentActionId": ACTION_IDS.get(segment.ended_by, 1),
            }
            row.update({f"Src{k}": src[k] for k in _PARTY})
            row.update({f"Dst{k}": dst[k] for k in _PARTY})
            row.update({"CallAnswered": answered, "CallTime": iso_duration(talk)})
            self.call_history.append(row)
            self.call_log.append(self._log_row(call, history_id, segment_id, segment, src, dst, ring, talk, recording))

    def _recorded(self, dn: str, src: dict[str, Any], dst: dict[str, Any]) -> bool:
        return any(self.users[d].record_calls for d in (dn, src["Dn"], dst["Dn"]) if d in self.users)

    def _direction(self, src: dict[str, Any], dst: dict[str, Any]) -> str:
        if src["External"]:
            return "Inbound"
        return "Outbound" if dst["External"] else "Internal"

    def _log_row(
        self, call: Call, history_id: str, segment_id: int, segment: Segment, src: dict[str, Any],
        dst: dict[str, Any], ring: float, talk: float, recording: dict[str, Any] | None,
    ) -> dict[str, Any]:  # fmt: skip
        answered = segment.leg.connected_at is not None
        return {
            "CdrId": str(uuid.uuid5(_NS, f"{history_id}:{segment_id}")), "CallId": call.callid,
            "CallHistoryId": history_id, "MainCallHistoryId": history_id, "SegmentId": segment_id,
            "StartTime": iso(segment.leg.created_at), "SourceDn": src["Dn"], "SourceType": src["DnType"],
            "SourceCallerId": src["CallerNumber"], "SourceDisplayName": src["DisplayName"],
            "DestinationDn": dst["Dn"], "DestinationType": dst["DnType"], "DestinationCallerId": dst["CallerNumber"],
            "DestinationDisplayName": dst["DisplayName"], "ActionType": ACTION_IDS.get(segment.ended_by, 1),
            "actionDnDn": None, "ActionDnCallerId": None, "ActionDnDisplayName": None, "ActionDnType": None,
            "RingingDuration": iso_duration(ring), "TalkingDuration": iso_duration(talk), "Answered": answered,
            "Direction": self._direction(src, dst), "CallType": None,
            "Status": "Answered" if answered else "Unanswered", "Reason": segment.ended_by, "CallCost": None,
            "RecordingUrl": recording["RecordingUrl"] if recording else None,
            "Recordings": [{"Id": recording["Id"], "SentimentScore": None, "Summary": None, "Transcription": None}]
            if recording else [],
            "QualityReport": False, "SentimentScore": None, "Summary": None, "Transcription": None, "Indent": 0,
            "SubrowDescNumber": 0, "SrcRecId": src["RecId"], "DstRecId": dst["RecId"],
        }  # fmt: skip

    def _record(self, call: Call, leg: Any, src: dict[str, Any], dst: dict[str, Any],
                segment: Segment) -> dict[str, Any] | None:  # fmt: skip
        if leg.connected_at is None:
            return None
        rec_id = next(self._recording_ids)
        direction = self._direction(src, dst)
        row: dict[str, Any] = {
            "Id": rec_id, "StartTime": iso(leg.connected_at), "EndTime": iso(segment.ended_at),
            "CallType": {"Inbound": "InboundExternal", "Outbound": "OutboundExternal"}.get(direction, "Local"),
            "RecordingUrl": f"/xapi/v1/Recordings/Pbx.DownloadRecording(recId={rec_id})", "IsArchived": False,
            "ArchivedUrl": None, "RefParticipantId": leg.id, "CanBeTranscribed": True, "IsTranscribed": False,
            "Transcription": None, "TranscriptionResult": None, "Summary": None, "SentimentScore": None,
        }  # fmt: skip
        for side, party in (("From", src), ("To", dst)):
            row.update({f"{side}Dn": party["Dn"], f"{side}DnType": party["DnType"],
                        f"{side}CallerNumber": party["CallerNumber"], f"{side}DisplayName": party["DisplayName"],
                        f"{side}DidNumber": call.did or None, f"{side}CrmContact": None,
                        f"{side}IdParticipant": party["ParticipantId"] or None})  # fmt: skip
        self.recordings.append(row)
        return row
