"""The invariants every fault run is judged by (D§4), computed from the simulator's ground-truth journal and the
event log; each check returns a :class:`Verdict` so a run can report all of them, not only the first that failed.

- ``transitions_once``: every transition the hub could observe is in the log exactly once (the shared projection,
  :mod:`hub.simulator.projection`); websocket outages are read from the journal itself (a ``ws closed`` entry up to
  the hub's next re-read of ``/callcontrol``), so a fault that drops the link is judged as D§4 says.
- ``inferred_only_hidden``: an event is marked inferred only for a call changed inside an outage.
- ``event_ids_once``: no event id twice in the log.
- ``commands_once``: no command executed twice on the PBX: no call-control action (``POST .../participants/<id>/
  <action>``) succeeded twice on one participant (a worker taking over an in-flight command must reconcile, D§8).
- ``recovered``: every fault recovered without manual action, within a bound.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hub.simulator.projection import Item, Outage, observed, project

ACTION_PATH = re.compile(r"/participants/\d+/(?P<action>[a-z_]+)$")


@dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool
    detail: str = ""
    calls: tuple[int, ...] = ()  # the PBX call ids a failed ground-truth verdict is about (see hub.soak.evidence)

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}" + (f": {self.detail}" if self.detail else "")


def outages_of(entries: Sequence[Any], cuts: Iterable[int] = ()) -> list[Outage]:
    """The windows hidden from the hub: from each websocket close (or each ``cut``: the journal index where ingest
    was killed, before the simulator noticed the socket gone) to the first ``GET /callcontrol`` after the websocket
    connected again (the re-read; a new ingest process probes ``/callcontrol`` before it connects)."""
    opening = set(cuts)
    found: list[Outage] = []
    start: int | None = None
    linked = False  # the websocket is back: the next full read is the re-read (one before it is ingest's probe)
    for entry in entries:
        if start is None and (entry.index in opening
                              or (entry.kind == "ws" and entry.detail.get("action") == "closed")):  # fmt: skip
            start, linked = entry.index, False
        elif start is not None and entry.kind == "ws" and entry.detail.get("action") == "connected":
            linked = True
        elif (start is not None and linked and entry.kind == "request" and entry.detail.get("path") == "/callcontrol"
              and entry.detail.get("method", "GET") == "GET"):  # fmt: skip
            found.append(Outage(start, entry.index))
            start = None
    if start is not None:
        found.append(Outage(start, len(entries)))
    return found


def _plain(items: Counter[Item]) -> Counter[tuple[object, ...]]:
    return Counter({item[:-1]: n for item, n in items.items()})


LEG_KINDS = frozenset({"ringing", "answered", "leg_removed"})


def unreadable_legs(entries: Sequence[Any], within_s: float) -> set[tuple[object, ...]]:
    """Legs the hub cannot know: each lived under ``within_s`` and no read of it ever answered 200. 3CX's frames
    name only the participant's path, so a leg gone before its read answers leaves no state to publish (its call,
    if that was all of it, comes back from the call history: :func:`_fleeting`)."""
    born: dict[tuple[object, ...], float] = {}
    short: set[tuple[object, ...]] = set()
    paths: dict[str, tuple[object, ...]] = {}
    for e in entries:
        if e.kind != "state" or e.callid is None or e.participant_id is None:
            continue
        key = (e.callid, e.dn or "", e.participant_id, e.legid or 0)
        if e.old_status is None:
            born[key] = e.at
        elif e.new_status is None and key in born and e.at - born.pop(key) < within_s:
            short.add(key)
            paths[f"/callcontrol/{e.dn}/participants/{e.participant_id}"] = key
    for e in entries:
        if e.kind == "request" and int(e.detail.get("status", 0)) == 200 and e.detail.get("method", "GET") == "GET":
            read = paths.get(str(e.detail.get("path", "")))
            if read is not None:
                short.discard(read)
    return short


def unpublished_at_kill(entries: Sequence[Any], cuts: Iterable[int], slack_s: float) -> set[tuple[object, ...]]:
    """The items (as the projection names them, without the inferred flag) of transitions made within ``slack_s``
    before ingest was killed (a ``cut``): what the dead process may have read but not yet published. The next
    leader re-reads the PBX and rebuilds the net difference, inferred; a leg already gone by then leaves nothing
    to rebuild its last transitions from, so these may be missing (never doubled: extras are still judged)."""
    items: set[tuple[object, ...]] = set()
    for cut in cuts:
        if not 0 <= cut < len(entries):
            continue
        since = entries[cut].at - slack_s
        i = cut - 1
        while i >= 0 and entries[i].at >= since:
            e = entries[i]
            i -= 1
            if e.kind != "state" or e.callid is None or e.participant_id is None or e.old_status == e.new_status:
                continue
            leg = (e.callid, e.dn or "", e.participant_id, e.legid or 0)
            if e.old_status is None:  # a leg the dead process may have saved nothing of: its removal too
                items |= {(*leg, "ringing"), (*leg, "answered"), (*leg, "leg_removed"),
                          (e.callid, "", 0, 0, "created"), (e.callid, "", 0, 0, "ended")}  # fmt: skip
            elif e.new_status is None:
                items |= {(*leg, "leg_removed"), (e.callid, "", 0, 0, "ended")}
            elif e.new_status == "Connected":
                items.add((*leg, "answered"))
    return items


def transitions_once(
    entries: Sequence[Any], visible: Callable[[str], bool], events: Iterable[Any], *, end_grace_s: float,
    cuts: Iterable[int] = (), with_history: bool = True, fleeting_s: float = 1.0, crash_slack_s: float = 2.0,
) -> Verdict:  # fmt: skip
    """Each projected transition exactly once (live or rebuilt: the flag is judged by :func:`inferred_only_hidden`,
    since a crash loses what ingest had read but not yet published, which the resync then rebuilds, inferred)."""
    cuts = list(cuts)
    expected = project(entries, visible, outages=outages_of(entries, cuts), end_grace_s=end_grace_s,
                       with_history=with_history)  # fmt: skip
    want, got = _plain(expected), _plain(observed(events))
    missing, extra = want - got, got - want
    unreadable = unreadable_legs(entries, fleeting_s)
    excused = Counter({k: n for k, n in missing.items() if k[:4] in unreadable and k[4] in LEG_KINDS})
    missing -= excused
    at_risk = unpublished_at_kill(entries, cuts, crash_slack_s)
    lost = Counter({k: n for k, n in missing.items() if k in at_risk})
    missing -= lost
    name = "every observed transition once in the log"
    if not missing and not extra:
        notes = []
        if excused:
            notes.append(f"{len({k[:4] for k in excused})} legs gone before the hub's read of them answered")
        if lost:
            notes.append(f"{sum(lost.values())} transitions a killed ingest had not yet published, gone before the "
                         "next leader's re-read")  # fmt: skip
        note = f" (not in the log: {'; '.join(notes)})" if notes else ""
        return Verdict(name, True, f"{sum(want.values())} transitions{note}")
    lines = [f"missing {k} x{n}" for k, n in sorted(missing.items(), key=str)]
    lines += [f"extra   {k} x{n}" for k, n in sorted(extra.items(), key=str)]
    shown = "\n  ".join(lines[:12] + [line for line in lines[12:] if line.startswith("extra")][:6])
    calls = tuple(sorted({k[0] for k in missing + extra if isinstance(k[0], int)}))
    return Verdict(name, False, f"{len(lines)} differences:\n  {shown}", calls)


def _fleeting(entries: Sequence[Any], within_s: float) -> set[int]:
    """Calls each of whose legs was gone within ``within_s`` of appearing: ingest may lose the race to read such a
    leg (3CX's frames carry no state) and then rebuilds the call from the call history, inferred."""
    born: dict[tuple[int, str, int], float] = {}
    longest: dict[int, float] = {}
    for e in entries:
        if e.kind != "state" or e.callid is None or e.participant_id is None:
            continue
        key = (e.callid, e.dn or "", e.participant_id)
        if e.old_status is None:
            born[key] = e.at
            longest.setdefault(e.callid, 0.0)
        elif e.new_status is None and key in born:
            longest[e.callid] = max(longest[e.callid], e.at - born.pop(key))
    alive = {key[0] for key in born}
    return {c for c, span in longest.items() if span < within_s and c not in alive}


def inferred_only_hidden(
    entries: Sequence[Any], events: Iterable[Any], *, cuts: Iterable[int] = (), slack_s: float = 2.0,
    fleeting_s: float = 1.0,
) -> Verdict:  # fmt: skip
    """An event marked inferred only for a call the journal shows changing inside an outage (or up to ``slack_s``
    before one began: read by ingest, lost in its crash), or for a call whose legs all lived under ``fleeting_s``
    (rebuilt from the call history when they were gone before their first read); every other transition was
    seen live."""
    cuts = list(cuts)
    hidden: set[int] = _fleeting(entries, fleeting_s)
    for outage in outages_of(entries, cuts):
        if outage.start >= len(entries):
            continue
        since = entries[outage.start].at - slack_s
        first = outage.start  # back over the slack before the outage (the journal is in time order)
        while first > 0 and entries[first - 1].at >= since:
            first -= 1
        hidden |= {e.callid for e in entries[first : outage.end] if e.kind == "state" and e.callid is not None}
    inferred = [item for item in observed(events) if item[-1] and item[0] not in hidden]
    wrong = sorted({item[0] for item in inferred})
    if not wrong:
        return Verdict("inferred only for what an outage hid", True)
    shown = ", ".join(f"{i[0]} {i[4]}" for i in sorted(inferred, key=str)[:6])
    return Verdict("inferred only for what an outage hid", False,
                   f"calls {wrong[:10]} inferred outside any outage ({shown})", tuple(wrong))  # fmt: skip


def event_ids_once(event_ids: Iterable[object]) -> Verdict:
    counts = Counter(event_ids)
    twice = {k: n for k, n in counts.items() if n > 1}
    if not twice:
        return Verdict("each event id once", True, f"{len(counts)} events")
    return Verdict("each event id once", False, f"{len(twice)} ids repeated, e.g. {next(iter(twice))}")


def commands_once(entries: Sequence[Any]) -> Verdict:
    """No call-control action succeeded twice on one participant (the simulator's journal of requests). Audio
    streams are not actions: a prompt played again (a menu's retry, an agent restarted) is allowed."""
    done: Counter[str] = Counter()
    for entry in entries:
        if entry.kind != "request" or entry.detail.get("method") != "POST":
            continue
        path = str(entry.detail.get("path", ""))
        action = ACTION_PATH.search(path)
        if action and action["action"] != "stream" and int(entry.detail.get("status", 0)) < 400:
            done[path] += 1
    twice = sorted(p for p, n in done.items() if n > 1)
    if not twice:
        return Verdict("no command executed twice", True, f"{sum(done.values())} PBX actions")
    return Verdict("no command executed twice", False, f"{len(twice)} actions repeated: {', '.join(twice[:5])}")


@dataclass(frozen=True)
class Recovery:
    fault: str
    seconds: float | None  # None: it never recovered


def recovered(recoveries: Sequence[Recovery], *, within_s: float) -> Verdict:
    stuck = [r.fault for r in recoveries if r.seconds is None or r.seconds > within_s]
    if not recoveries:
        return Verdict("recovered without manual action", False, "no fault was injected")
    if stuck:
        return Verdict("recovered without manual action", False, f"not recovered within {within_s:.0f} s: "
                       + ", ".join(stuck))  # fmt: skip
    worst = max(r.seconds or 0.0 for r in recoveries)
    return Verdict("recovered without manual action", True, f"{len(recoveries)} faults, slowest {worst:.2f} s")


def failed(verdicts: Iterable[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if not v.ok]
