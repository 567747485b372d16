"""The shared projection of the simulator's ground truth onto what the hub can know (D§4).

Reliability tests compare the event log (or the stream) with this projection:
- every transition of a visible leg made while the link was up appears once, not inferred;
- for each outage (a window of journal indices: from the drop to the hub's re-read), the net difference of each
  leg between the start and the end of the window appears once, marked inferred; legs that came and went inside
  the window leave no trace;
- calls that appear and end wholly inside an outage are expected once, inferred, only from call-history
  reconciliation (``with_history=True``);
- a call is created with its first visible leg and ended when its last visible leg went (unless another leg of it
  appears within ``end_grace_s``).

A projected item is ``(pbx callid, dn, participant id, legid, kind, inferred)``; call-level kinds (created, ended)
have an empty leg.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Item = tuple[int, str, int, int, str, bool]
NO_LEG = ("", 0, 0)


@dataclass(frozen=True)
class Outage:
    """Journal indices: transitions with ``start <= index < end`` were hidden from the hub."""

    start: int
    end: int

    def hides(self, index: int) -> bool:
        return self.start <= index < self.end


def _arrival_kinds(status: str, connected_on_arrival: str) -> list[str]:
    if status == "Connected":
        return ["ringing", "answered"] if connected_on_arrival == "ringing_then_answered" else ["answered"]
    return ["ringing"]


def project(
    entries: Sequence[Any],
    visible: Callable[[str], bool],
    *,
    outages: Iterable[Outage] = (),
    connected_on_arrival: str = "answered",
    end_grace_s: float = 0.5,
    with_history: bool = False,
) -> Counter[Item]:
    """The multiset of items the hub should have published for these journal entries."""
    windows = sorted(outages, key=lambda o: o.start)
    states = [
        e
        for e in entries
        if e.kind == "state"
        and e.participant_id is not None
        and e.dn
        and visible(e.dn)
        and e.old_status != e.new_status
    ]  # fmt: skip  (DTMF and attached data change no status)
    arrivals: dict[int, list[tuple[int, float]]] = {}  # callid -> (journal index, at) of each leg's arrival
    for e in states:
        if e.new_status and e.old_status is None:
            arrivals.setdefault(e.callid, []).append((e.index, e.at))
    expected: Counter[Item] = Counter()
    legs: dict[tuple[int, str, int, int], str] = {}  # live view: (callid, dn, pid, legid) -> status
    calls_alive: dict[int, bool] = {}  # callid -> created (and not ended)

    def window_of(index: int) -> Outage | None:
        return next((w for w in windows if w.hides(index)), None)

    def call_events(callid: int, at: float, index: int, inferred: bool) -> None:
        alive = any(k[0] == callid for k in legs)
        if alive and not calls_alive.get(callid):
            calls_alive[callid] = True
            expected[(callid, *NO_LEG, "created", inferred)] += 1
        elif not alive and calls_alive.get(callid):
            # the call's next leg to arrive: a search, not a scan (a 30-minute soak's journal holds millions)
            mine = arrivals.get(callid, [])
            n = bisect.bisect_right(mine, (index, math.inf))
            if n < len(mine):
                later_index, later_at = mine[n]
                if later_at - at <= end_grace_s and window_of(later_index) == window_of(index):
                    return  # a transfer: the call goes on at another leg
            calls_alive[callid] = False
            expected[(callid, *NO_LEG, "ended", inferred)] += 1

    i = 0
    while i < len(states):
        entry = states[i]
        window = window_of(entry.index)
        if window is None:
            key = (entry.callid, entry.dn, entry.participant_id, entry.legid)
            if entry.new_status is None:
                legs.pop(key, None)
                expected[(*key, "leg_removed", False)] += 1
            elif entry.old_status is None:
                legs[key] = entry.new_status
                for kind in _arrival_kinds(entry.new_status, connected_on_arrival):
                    expected[(*key, kind, False)] += 1
            else:
                legs[key] = entry.new_status
                if entry.new_status == "Connected" and entry.old_status != "Connected":
                    expected[(*key, "answered", False)] += 1
            if entry.old_status is None:
                call_events(entry.callid, entry.at, entry.index, False)
            if entry.new_status is None:
                call_events(entry.callid, entry.at, entry.index, False)
            i += 1
            continue
        # an outage: apply every hidden transition, then report the net difference once, inferred
        before = dict(legs)
        hidden = []
        while i < len(states) and window.hides(states[i].index):
            hidden.append(states[i])
            i += 1
        appeared_inside: set[int] = set()
        for entry in hidden:
            key = (entry.callid, entry.dn, entry.participant_id, entry.legid)
            if entry.new_status is None:
                legs.pop(key, None)
            else:
                if entry.old_status is None and not any(k[0] == entry.callid for k in before):
                    appeared_inside.add(entry.callid)
                legs[key] = entry.new_status
        for key in before.keys() - legs.keys():
            expected[(*key, "leg_removed", True)] += 1
        for key in legs.keys() - before.keys():
            for kind in _arrival_kinds(legs[key], connected_on_arrival):
                expected[(*key, kind, True)] += 1
        for key in legs.keys() & before.keys():
            if legs[key] == "Connected" and before[key] != "Connected":
                expected[(*key, "answered", True)] += 1
        touched = {e.callid for e in hidden}
        for callid in sorted(touched):
            alive = any(k[0] == callid for k in legs)
            if alive and not calls_alive.get(callid):
                calls_alive[callid] = True
                expected[(callid, *NO_LEG, "created", True)] += 1
            elif not alive and calls_alive.get(callid):
                calls_alive[callid] = False
                expected[(callid, *NO_LEG, "ended", True)] += 1
            elif not alive and with_history and callid in appeared_inside:
                expected[(callid, *NO_LEG, "created", True)] += 1
                expected[(callid, *NO_LEG, "ended", True)] += 1
    return expected


KINDS = {
    "call.created": "created",
    "call.ringing": "ringing",
    "call.answered": "answered",
    "call.leg_removed": "leg_removed",
    "call.ended": "ended",
}


def observed(events: Iterable[Any]) -> Counter[Item]:
    """The same projection of the hub's events (call.created/ringing/answered/leg_removed/ended)."""
    out: Counter[Item] = Counter()
    for event in events:
        kind = KINDS.get(event.type)
        if kind is None or event.pbx_call_id is None:
            continue
        if kind in {"created", "ended"}:
            out[(event.pbx_call_id, *NO_LEG, kind, event.inferred)] += 1
        else:
            leg = event.leg
            out[(event.pbx_call_id, leg.dn, leg.participant_id, leg.legid or 0, kind, event.inferred)] += 1
    return out


def diff(expected: Counter[Item], actual: Counter[Item]) -> str:
    """A readable difference ('' when equal)."""
    missing = expected - actual
    extra = actual - expected
    lines = [f"missing {k} x{n}" for k, n in sorted(missing.items())]
    lines += [f"extra   {k} x{n}" for k, n in sorted(extra.items())]
    return "\n".join(lines)
