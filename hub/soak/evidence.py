"""What a failed ground-truth verdict is judged from, written next to the run's data: for each call it names, the
simulator's journal around that call (its own entries, and the websocket, re-read and kill marks among them) and
the hub's events for it; the reads of its legs show when ingest asked and what the PBX answered (a leg gone
before its read leaves only a 404). A 30-minute run is not repeated to see why it failed; this is what one looks
at."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from schemas.events import Event

MAX_CALLS = 20
AFTER_ENTRIES = 2400  # journal entries after a call's last transition searched for late reads of its legs


def _journal_line(entry: Any, t0: float, cuts: set[int]) -> str:
    mark = "  <- ingest killed" if entry.index in cuts else ""
    if entry.kind == "state":
        what = f"{entry.dn} p{entry.participant_id} leg{entry.legid or 0} {entry.old_status} -> {entry.new_status}"
    else:
        what = " ".join(f"{k}={v}" for k, v in entry.detail.items() if k in ("action", "method", "path", "status"))
    return f"  #{entry.index:<9} {entry.at - t0:10.3f}s {entry.kind:<8} {what}{mark}"


def _event_line(event: Event, t0: float) -> str:
    leg = event.leg
    where = f" {leg.dn} p{leg.participant_id} leg{leg.legid or 0}" if leg is not None else ""
    flag = " inferred" if event.inferred else ""
    return f"  {event.occurred_at.timestamp() - t0:10.3f}s {event.type}{where}{flag}"


def call_evidence(
    entries: Sequence[Any], events: Iterable[Event], callids: Iterable[int], cuts: Iterable[int] = ()
) -> str:
    """The journal and the log side by side for each call (at most :data:`MAX_CALLS`): its transitions, the reads of
    its legs, the websocket's connects and closes, the re-reads and kills among them; times from the journal's
    first entry."""
    wanted = sorted(set(callids))[:MAX_CALLS]
    if not wanted or not entries:
        return ""
    t0, cut_set = entries[0].at, set(cuts)
    by_call: dict[int, list[Event]] = {c: [] for c in wanted}
    for event in events:
        if event.pbx_call_id in by_call:
            by_call[event.pbx_call_id].append(event)
    spans: dict[int, list[int]] = {}
    reads: dict[str, int] = {}  # the path of each of these calls' participants -> the call (its reads are shown)
    for entry in entries:
        if entry.callid in by_call:
            spans.setdefault(entry.callid, []).append(entry.index)
            if entry.kind == "state" and entry.participant_id is not None:
                reads[f"/callcontrol/{entry.dn}/participants/{entry.participant_id}"] = entry.callid
    out: list[str] = []
    for callid in wanted:
        indices = spans.get(callid, [])
        out.append(f"call {callid}")
        if indices:
            first, last = indices[0], indices[-1]
            start = first
            while start > 0 and entries[first].at - entries[start - 1].at < 15.0:  # back over what led up to it
                start -= 1
            out.append("  journal (this call, websocket, re-reads, kills):")
            for entry in entries[start : last + AFTER_ENTRIES]:
                path = entry.detail.get("path") if entry.kind == "request" else None
                if entry.index > last and reads.get(str(path)) != callid:
                    continue  # after its last transition, only the reads of its legs (a read that came late)
                if entry.callid == callid or entry.index in cut_set or entry.kind == "ws" or path == "/callcontrol" \
                        or reads.get(str(path)) == callid:  # fmt: skip
                    out.append(_journal_line(entry, t0, cut_set))
        out.append("  hub's events:" if by_call[callid] else "  hub's events: none")
        out += [_event_line(event, t0) for event in by_call[callid]]
    return "\n".join(out) + "\n"


def write_evidence(path: Path, entries: Sequence[Any], events: Iterable[Event], callids: Iterable[int],
                   cuts: Iterable[int] = ()) -> Path | None:  # fmt: skip
    text = call_evidence(entries, events, callids, cuts)
    if not text:
        return None
    path.write_text(text)
    return path
