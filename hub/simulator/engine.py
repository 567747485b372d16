"""The call engine: extensions, a route point, park orbits, external callers; sans-IO and clock-injected.

State rules (3CX V20 Call Control, reference §2 and §9): a leg is ``Dialing`` (the leg that placed the call),
``Ringing`` or ``Connected``; there is no Held status; a leg that hangs up is removed. ``divert`` only while ringing,
``transferto`` only when connected, ``routeto`` either; ``answer`` only with ``direct_control`` or on the route point.
Calls are two-party: when one side hangs up, every leg of the call is removed.

Listeners receive ``("upsert" | "remove" | "dtmf", participant, attached_data)`` for every visible change; the HTTP
layer turns them into websocket frames.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from hub.simulator.config import SimConfig
from hub.simulator.journal import Journal

Status = Literal["Dialing", "Ringing", "Connected"]
ChangeKind = Literal["upsert", "remove", "dtmf"]


class SimError(Exception):
    """A request the PBX refuses: ``status`` is the HTTP status 3CX answers with."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


@dataclass
class Leg:
    id: int
    dn: str
    callid: int
    legid: int
    status: Status
    party_caller_name: str = ""
    party_dn: str = ""
    party_caller_id: str = ""
    party_did: str = ""
    party_dn_type: str = "None"
    device_id: str = ""
    direct_control: bool = False
    originated_by_dn: str = ""
    originated_by_type: str = "None"
    referred_by_dn: str = ""
    referred_by_type: str = "None"
    on_behalf_of_dn: str = ""
    on_behalf_of_type: str = "None"
    # ground truth kept for call history (not on the wire)
    created_at: float = 0.0
    connected_at: float | None = None
    originator: bool = False  # the leg that placed the call (created Dialing)

    def wire(self) -> dict[str, Any]:
        """The Participant JSON exactly as 3CX sends it (reference §2.2, field order kept)."""
        return {
            "id": self.id,
            "status": self.status,
            "dn": self.dn,
            "party_caller_name": self.party_caller_name,
            "party_dn": self.party_dn,
            "party_caller_id": self.party_caller_id,
            "party_did": self.party_did,
            "device_id": self.device_id,
            "party_dn_type": self.party_dn_type,
            "direct_control": self.direct_control,
            "originated_by_dn": self.originated_by_dn,
            "originated_by_type": self.originated_by_type,
            "referred_by_dn": self.referred_by_dn,
            "referred_by_type": self.referred_by_type,
            "on_behalf_of_dn": self.on_behalf_of_dn,
            "on_behalf_of_type": self.on_behalf_of_type,
            "callid": self.callid,
            "legid": self.legid,
        }


@dataclass(frozen=True)
class Segment:
    """One leg's life, for call history: the leg as it last was, and when and how it ended."""

    leg: Leg
    ended_at: float
    ended_by: str


@dataclass
class Call:
    callid: int
    caller: str
    callee: str
    caller_name: str = ""
    did: str = ""
    legs: dict[int, Leg] = field(default_factory=dict)  # participant id -> leg
    parked_at: str | None = None
    attached: dict[str, str] = field(default_factory=dict)
    remote_answered: bool = False
    started_at: float = 0.0
    changed_at: float = 0.0
    ended_at: float | None = None
    segments: list[Segment] = field(default_factory=list)


Listener = Callable[[ChangeKind, Leg, dict[str, Any] | None], None]
CallListener = Callable[[Call], None]


class CallEngine:
    def __init__(self, config: SimConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.journal = Journal()
        self.calls: dict[int, Call] = {}
        self.legs: dict[int, Leg] = {}
        self._ids = itertools.count(config.first_participant_id)
        self._callids = itertools.count(config.first_callid)
        self._legids = itertools.count(config.first_legid)
        self._listeners: list[Listener] = []
        self._ended_listeners: list[CallListener] = []

    # ------------------------------------------------------------------ topology

    def dn_type(self, dn: str) -> str:
        if dn == self.config.client_id:
            return "Wroutepoint"
        if self.config.extension(dn) is not None:
            return "Wextension"
        if dn in self.config.queues:
            return "Wqueue"
        if dn in self.config.park_orbits:
            return "Wspecialmenu"
        return "Wexternalline"

    def is_internal(self, dn: str) -> bool:
        return self.dn_type(dn) != "Wexternalline"

    def device_id(self, dn: str) -> str:
        ext = self.config.extension(dn)
        if ext is not None and ext.device_id:
            return ext.device_id
        return f"sip:{dn}@{self.config.device_host}:5{int(dn) % 1000:03d}" if dn.isdigit() else f"sip:{dn}@local"

    def devices(self, dn: str) -> list[dict[str, str]]:
        ext = self.config.extension(dn)
        if dn == self.config.client_id:
            return [{"dn": dn, "device_id": f"routepoint:{dn}", "user_agent": "3CX Route Point"}]
        if ext is None:
            return []
        return [{"dn": dn, "device_id": self.device_id(dn), "user_agent": ext.user_agent}]

    def visible_dns(self) -> list[str]:
        return [self.config.client_id] + [e.dn for e in self.config.extensions if e.monitored]

    # ------------------------------------------------------------------ listeners and journal

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def on_call_ended(self, listener: CallListener) -> Callable[[], None]:
        """``listener(call)`` when a call ends (its segments complete): call history is filled from it."""
        self._ended_listeners.append(listener)
        return lambda: self._ended_listeners.remove(listener)

    def _emit(self, kind: ChangeKind, leg: Leg, attached: dict[str, Any] | None = None) -> None:
        if not self.config.visible(leg.dn):
            return
        for listener in list(self._listeners):
            listener(kind, leg, attached)

    def _change(self, leg: Leg, new: Status | None, **detail: Any) -> None:
        old = None if leg.id not in self.legs else leg.status
        now = self.clock()
        call = self.calls.get(leg.callid)
        if call is not None:
            call.changed_at = now
        if new is None:
            self.legs.pop(leg.id, None)
            if call is not None:
                call.legs.pop(leg.id, None)
                call.segments.append(Segment(dataclasses.replace(leg), now, str(detail.get("action", ""))))
        else:
            if new == "Connected" and leg.connected_at is None:
                leg.connected_at = now
            leg.status = new
            self.legs[leg.id] = leg
            self.calls[leg.callid].legs[leg.id] = leg
        self.journal.add(
            now, "state", callid=leg.callid, dn=leg.dn, participant_id=leg.id, legid=leg.legid,
            old_status=old, new_status=new, detail=detail,
        )  # fmt: skip
        self._emit("upsert" if new is not None else "remove", leg)

    def _new_leg(self, call: Call, dn: str, status: Status, party: str, party_name: str = "", **extra: Any) -> Leg:
        ext = self.config.extension(dn)
        leg = Leg(
            id=next(self._ids),
            dn=dn,
            callid=call.callid,
            legid=next(self._legids),
            status=status,
            party_caller_name=party_name,
            party_dn=party if self.is_internal(party) else "",
            party_caller_id=party,
            party_did=call.did if not self.is_internal(call.caller) else "",
            party_dn_type=self.dn_type(party),
            device_id=self.devices(dn)[0]["device_id"] if self.devices(dn) else "",
            direct_control=bool(ext and ext.direct_control),
            created_at=self.clock(),
            originator=status == "Dialing",
            **extra,
        )  # fmt: skip
        self._change(leg, status, action="leg_created")
        return leg

    # ------------------------------------------------------------------ driving API (and what the REST layer calls)

    def place_call(self, from_: str, to: str, *, caller_name: str = "", did: str = "") -> Call:
        """``from_`` dials ``to``. Either may be an extension, the route point, a queue, or an external number."""
        now = self.clock()
        call = Call(callid=next(self._callids), caller=from_, callee=to, caller_name=caller_name, did=did,
                    started_at=now, changed_at=now)  # fmt: skip
        self.calls[call.callid] = call
        self.journal.add(
            self.clock(), "state", callid=call.callid, detail={"action": "call_placed", "from": from_, "to": to}
        )
        if self.is_internal(from_) and self.dn_type(from_) in {"Wextension", "Wroutepoint"}:
            name = self._name(to)
            self._new_leg(call, from_, "Dialing", to, name)
        target = to
        if to.startswith(self.config.pickup_code) and to[len(self.config.pickup_code) :] in self.config.park_orbits:
            self._pickup(call, from_, to[len(self.config.pickup_code) :])
            return call
        if self.dn_type(target) == "Wroutepoint":
            status: Status = "Connected" if self.config.route_point_inbound_connected else "Ringing"
            self._new_leg(call, target, status, from_, caller_name or self._name(from_))
            if status == "Connected":
                self._connect_originator(call)
        elif self.dn_type(target) == "Wextension":
            self._new_leg(call, target, "Ringing", from_, caller_name or self._name(from_))
        elif self.dn_type(target) == "Wqueue":
            for member in self.config.queues[target]:
                self._new_leg(call, member, "Ringing", from_, caller_name or self._name(from_),
                              on_behalf_of_dn=target, on_behalf_of_type="Wqueue")  # fmt: skip
        return call

    def _name(self, dn: str) -> str:
        ext = self.config.extension(dn)
        return ext.name if ext else ""

    def _connect_originator(self, call: Call) -> None:
        for leg in list(call.legs.values()):
            if leg.status == "Dialing":
                self._change(leg, "Connected", action="remote_answered")

    def answer(self, participant_id: int) -> Leg:
        """The person at the phone picks up (or an API answer that was allowed)."""
        leg = self._leg(participant_id)
        if leg.status != "Ringing":
            raise SimError(422, f"participant {participant_id} is {leg.status}, not Ringing")
        call = self.calls[leg.callid]
        self._change(leg, "Connected", action="answered")
        route_origin = call.attached.pop(f"_route_origin_{leg.id}", None)
        if route_origin is not None and int(route_origin) in self.legs:
            self._change(self.legs[int(route_origin)], None, action="routed_away")
        if leg.on_behalf_of_type == "Wqueue":  # ring-all: the other members stop ringing
            for other in list(call.legs.values()):
                if other.id != leg.id and other.on_behalf_of_dn == leg.on_behalf_of_dn and other.status == "Ringing":
                    self._change(other, None, action="answered_elsewhere")
        self._connect_originator(call)
        return leg

    def answer_remote(self, callid: int) -> None:
        """The external party of an outbound call answers."""
        call = self.calls[callid]
        call.remote_answered = True
        self._connect_originator(call)

    def hangup(self, callid: int, *, reason: str = "hangup") -> None:
        """Either party hangs up: the call ends and every leg is removed."""
        call = self.calls.get(callid)
        if call is None:
            raise SimError(404, f"no call {callid}")
        for leg in list(call.legs.values()):
            self._change(leg, None, action=reason)
        call.parked_at = None
        call.ended_at = self.clock()
        self.journal.add(call.ended_at, "state", callid=callid, detail={"action": "call_ended", "reason": reason})
        self.calls.pop(callid, None)
        for listener in list(self._ended_listeners):
            listener(call)

    def drop(self, participant_id: int) -> None:
        leg = self._leg(participant_id)
        self.hangup(leg.callid, reason="dropped")

    def divert(self, participant_id: int, to: str, reason: str = "None") -> Leg | None:
        leg = self._leg(participant_id)
        if leg.status != "Ringing":
            raise SimError(422, f"divert needs a Ringing participant; {participant_id} is {leg.status}")
        call = self.calls[leg.callid]
        self._change(leg, None, action="diverted", to=to, reason=reason)
        return self._deliver(call, to, leg)

    def route_to(self, participant_id: int, to: str) -> Leg | None:
        leg = self._leg(participant_id)
        call = self.calls[leg.callid]
        new = self._deliver(call, to, leg)
        if new is not None:
            call.attached[f"_route_origin_{new.id}"] = str(leg.id)
        return new

    def transfer(self, participant_id: int, to: str) -> Leg | None:
        leg = self._leg(participant_id)
        if leg.status != "Connected":
            raise SimError(422, f"transferto needs a Connected participant; {participant_id} is {leg.status}")
        call = self.calls[leg.callid]
        self._change(leg, None, action="transferred", to=to)
        if to in self.config.park_orbits:
            call.parked_at = to
            self.journal.add(self.clock(), "state", callid=call.callid, detail={"action": "parked", "orbit": to})
            return None
        return self._deliver(call, to, leg)

    def _deliver(self, call: Call, to: str, source: Leg) -> Leg | None:
        """The call's remote party now rings at ``to`` (a monitored DN gets a visible leg)."""
        if self.dn_type(to) in {"Wextension", "Wroutepoint"}:
            status: Status = "Ringing"
            if self.dn_type(to) == "Wroutepoint" and self.config.route_point_inbound_connected:
                status = "Connected"
            return self._new_leg(
                call, to, status, source.party_caller_id, source.party_caller_name,
                referred_by_dn=source.dn, referred_by_type=self.dn_type(source.dn),
            )  # fmt: skip
        return None

    def _pickup(self, call: Call, ext: str, orbit: str) -> None:
        parked = next((c for c in self.calls.values() if c.parked_at == orbit), None)
        self.journal.add(self.clock(), "state", callid=call.callid, detail={"action": "pickup", "orbit": orbit})
        dialing = [leg for leg in call.legs.values() if leg.status == "Dialing"]
        for leg in dialing:
            self._change(leg, None, action="pickup_leg_done")
        self.calls.pop(call.callid, None)
        if parked is None:
            return
        parked.parked_at = None
        party = parked.caller if parked.caller != ext else parked.callee
        self._new_leg(parked, ext, "Connected", party, parked.caller_name)
        self.journal.add(self.clock(), "state", callid=parked.callid, detail={"action": "resumed", "orbit": orbit})

    def park(self, participant_id: int, orbit: str | None = None) -> str:
        orbit = orbit or next(o for o in self.config.park_orbits if all(c.parked_at != o for c in self.calls.values()))
        self.transfer(participant_id, orbit)
        return orbit

    def send_dtmf(self, callid: int, digits: str) -> None:
        """The remote party presses keys; reported for legs on the route point only (reference §3)."""
        call = self.calls[callid]
        for leg in call.legs.values():
            if leg.dn == self.config.client_id:
                self.journal.add(self.clock(), "state", callid=callid, dn=leg.dn, participant_id=leg.id,
                                 legid=leg.legid, detail={"action": "dtmf", "digits": digits})  # fmt: skip
                self._emit("dtmf", leg, {"dtmf_input": digits})

    def attach_data(self, participant_id: int, data: dict[str, str]) -> Leg:
        leg = self._leg(participant_id)
        self.calls[leg.callid].attached.update(data)
        self.journal.add(self.clock(), "state", callid=leg.callid, dn=leg.dn, participant_id=leg.id, legid=leg.legid,
                         detail={"action": "attach_participant_data", "data": dict(data)})  # fmt: skip
        return leg

    # ------------------------------------------------------------------ queries

    def _leg(self, participant_id: int) -> Leg:
        leg = self.legs.get(participant_id)
        if leg is None:
            raise SimError(404, f"participant {participant_id} not found")
        return leg

    def participant(self, dn: str, participant_id: int) -> Leg:
        leg = self.legs.get(participant_id)
        if leg is None or leg.dn != dn:
            raise SimError(404, f"participant {participant_id} not found on {dn}")
        return leg

    def participants(self, dn: str) -> list[Leg]:
        return [leg for leg in self.legs.values() if leg.dn == dn]

    def legs_of(self, callid: int) -> list[Leg]:
        return [leg for leg in self.legs.values() if leg.callid == callid]
