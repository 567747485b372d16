"""3CX Call Control wire formats, sans-IO: websocket frames and participants (reference §2.2, §3).

A frame is ``{"sequence": n, "event": {"event_type": 0|1|2|..., "entity": "/callcontrol/{dn}/participants/{id}",
"attached_data": ...}}``. ``event_type`` is a number: 0 Upsert (re-read the entity), 1 Remove, 2 DTMF (digits in
``attached_data.dtmf_input``), 3 PromptPlaybackFinished and 4 Response (not used by the hub). The entity may also be a
DN's participant list (``/callcontrol/{dn}/participants``) or a device; anything the hub cannot use is reported as
``ignored`` with the reason, and anything malformed raises :class:`FrameError`: the listener counts it and goes on.

``sequence`` is read but never trusted for identity or order (D§2): its meaning is unverified.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from schemas.common import Participant

FrameKind = Literal["upsert", "remove", "dtmf", "ignored"]
EVENT_TYPES: dict[int, FrameKind] = {0: "upsert", 1: "remove", 2: "dtmf"}
DTMF_RE = re.compile(r"[0-9*#A-Da-d]+")
MAX_FRAME_BYTES = 1 << 20


class FrameError(ValueError):
    """A websocket frame the hub cannot read; ``reason`` says what was wrong."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Frame:
    kind: FrameKind
    dn: str = ""
    participant_id: int | None = None  # None: the DN's whole participant list
    digits: str = ""
    sequence: int | None = None
    event_type: int = -1
    note: str = ""  # why an ``ignored`` frame was ignored

    @property
    def entity(self) -> tuple[str, int] | None:
        return None if self.participant_id is None else (self.dn, self.participant_id)


def _int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise FrameError(f"{what} is a boolean, expected a number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise FrameError(f"{what} is {type(value).__name__} {value!r:.40}, expected a number")


def parse_entity(entity: object) -> tuple[str, str, int | None]:
    """``(dn, collection, id)`` of an entity path; the last segments are dn/collection[/id] as in 3CX's sample."""
    if not isinstance(entity, str) or not entity:
        raise FrameError("entity is missing or not a string")
    parts = [p for p in entity.strip().split("/") if p]
    if "callcontrol" in parts:
        parts = parts[parts.index("callcontrol") + 1 :]
    if len(parts) == 2:
        return parts[0], parts[1], None
    if len(parts) == 3:
        return parts[0], parts[1], _int(parts[2], "entity id") if parts[1] == "participants" else None
    raise FrameError(f"entity {entity!r:.80} is not /callcontrol/<dn>/<collection>[/<id>]")


def parse_frame(data: str | bytes) -> Frame:
    """One websocket text frame -> :class:`Frame`; :class:`FrameError` when it is malformed."""
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(data)} bytes is larger than {MAX_FRAME_BYTES}")
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise FrameError(f"expected a JSON object, got {type(raw).__name__}")
    event = raw.get("event")
    if not isinstance(event, dict):
        raise FrameError("no 'event' object")
    sequence = raw.get("sequence")
    seq = None
    if sequence is not None:
        try:
            seq = _int(sequence, "sequence")
        except FrameError:
            seq = None  # unverified and unused: a bad sequence does not spoil the event
    if "event_type" not in event:
        raise FrameError("event has no event_type")
    event_type = _int(event["event_type"], "event_type")
    kind = EVENT_TYPES.get(event_type)
    if kind is None:
        return Frame("ignored", sequence=seq, event_type=event_type, note=f"event_type {event_type} is not used")
    dn, collection, pid = parse_entity(event.get("entity"))
    if collection != "participants":
        return Frame("ignored", dn=dn, sequence=seq, event_type=event_type, note=f"{collection} entity")
    if kind == "dtmf":
        attached = event.get("attached_data")
        digits = attached.get("dtmf_input") if isinstance(attached, dict) else None
        if not isinstance(digits, str) or DTMF_RE.fullmatch(digits) is None:
            raise FrameError(f"DTMF event without valid attached_data.dtmf_input ({digits!r:.40})")
        if pid is None:
            raise FrameError("DTMF event for a participant list, expected one participant")
        return Frame("dtmf", dn=dn, participant_id=pid, digits=digits, sequence=seq, event_type=event_type)
    if kind == "remove" and pid is None:
        return Frame("upsert", dn=dn, sequence=seq, event_type=event_type)  # a list "removed": re-read the list
    return Frame(kind, dn=dn, participant_id=pid, sequence=seq, event_type=event_type)


# --------------------------------------------------------------------------- participants

_TEXT_FIELDS = (
    "party_dn",
    "party_caller_id",
    "party_caller_name",
    "party_did",
    "device_id",
    "originated_by_dn",
    "referred_by_dn",
    "on_behalf_of_dn",
)


@dataclass(frozen=True, slots=True)
class LegSnapshot:
    """A participant as the hub last read it, with the 3CX callid that groups the legs of one call."""

    participant: Participant
    callid: int

    @property
    def entity(self) -> tuple[str, int]:
        return (self.participant.dn, self.participant.participant_id)

    @property
    def key(self) -> str:
        p = self.participant
        return f"{p.dn}:{p.participant_id}:{p.legid if p.legid is not None else ''}"

    @property
    def status(self) -> str:
        return self.participant.status

    def same_leg(self, other: LegSnapshot) -> bool:
        """Participant ids are reused: the same (dn, id) with another callid or legid is another leg."""
        return self.callid == other.callid and self.participant.legid == other.participant.legid

    def to_json(self) -> dict[str, Any]:
        return {"callid": self.callid, "participant": self.participant.model_dump(mode="json")}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LegSnapshot:
        return cls(participant=Participant.model_validate(raw["participant"]), callid=int(raw["callid"]))


def parse_participant(raw: object, dn: str | None = None) -> LegSnapshot:
    """A Call Control participant JSON -> :class:`LegSnapshot`. Tolerant of numbers sent as strings and of absent
    optional fields; strict on what identity needs (id, dn, callid, status)."""
    if not isinstance(raw, dict):
        raise FrameError(f"participant is {type(raw).__name__}, expected an object")
    pid = _int(raw.get("id"), "participant id")
    owner = raw.get("dn") if isinstance(raw.get("dn"), str) and raw.get("dn") else dn
    if not owner:
        raise FrameError(f"participant {pid} has no dn")
    if "callid" not in raw:
        raise FrameError(f"participant {pid} has no callid")
    callid = _int(raw["callid"], "callid")
    legid = _int(raw["legid"], "legid") if raw.get("legid") is not None else None
    status = raw.get("status")
    if not isinstance(status, str) or not status:
        raise FrameError(f"participant {pid} has no status")
    text = {name: str(raw.get(name) or "") for name in _TEXT_FIELDS}
    participant = Participant(
        dn=str(owner),
        participant_id=pid,
        legid=legid,
        status=status,
        party_dn_type=str(raw.get("party_dn_type") or "None"),
        direct_control=bool(raw.get("direct_control")),
        **text,
    )
    return LegSnapshot(participant=participant, callid=callid)


DETAIL_FIELDS = ("party_dn", "party_caller_id", "party_caller_name", "party_did", "party_dn_type", "device_id",
                 "direct_control", "originated_by_dn", "referred_by_dn", "on_behalf_of_dn")  # fmt: skip


def changed_fields(old: Participant, new: Participant) -> tuple[str, ...]:
    """The detail fields (not the status) that differ between two reads of the same leg."""
    return tuple(name for name in DETAIL_FIELDS if getattr(old, name) != getattr(new, name))
