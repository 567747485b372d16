"""The simulator's ground truth: every state change it made, every request it received, every frame it sent.

Reliability tests compare the hub's event log with this journal (D§4), so entries are precise and ordered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# state: the call engine; request: every HTTP request and its status; ws: websocket connections; media: utterances,
# streams, reply audio, underruns; presence and chat: directory changes; fault: every injected fault; scenario: steps
Kind = Literal["state", "request", "ws", "media", "presence", "chat", "fault", "scenario"]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    index: int
    at: float
    kind: Kind
    callid: int | None = None
    dn: str | None = None
    participant_id: int | None = None
    legid: int | None = None
    old_status: str | None = None  # None: the leg appeared
    new_status: str | None = None  # None: the leg was removed
    detail: dict[str, Any] = field(default_factory=dict)


# detail keys holding wall-clock times (or amounts that depend on them): left out of ``replay_view``
WALL_CLOCK_KEYS = frozenset({"start", "end", "received_at", "played_at", "time_sent", "buffered_ms", "offset"})


class Journal:
    def __init__(self) -> None:
        self.entries: list[JournalEntry] = []

    def add(self, at: float, kind: Kind, **fields: Any) -> JournalEntry:
        entry = JournalEntry(index=len(self.entries), at=at, kind=kind, **fields)
        self.entries.append(entry)
        return entry

    def of(self, kind: Kind) -> list[JournalEntry]:
        return [e for e in self.entries if e.kind == kind]

    def transitions(self, callid: int | None = None) -> list[tuple[str, int, str | None, str | None]]:
        """(dn, participant id, old status, new status) of each state change, optionally for one call."""
        return [
            (e.dn or "", e.participant_id or 0, e.old_status, e.new_status)
            for e in self.of("state")
            if e.participant_id is not None and e.old_status != e.new_status and (callid is None or e.callid == callid)
        ]

    def replay_view(self) -> list[tuple[Any, ...]]:
        """The journal without wall-clock fields: two runs of one scenario give equal views."""
        return [
            (e.index, e.kind, e.callid, e.dn, e.participant_id, e.legid, e.old_status, e.new_status,
             {k: v for k, v in e.detail.items() if k not in WALL_CLOCK_KEYS})
            for e in self.entries
        ]  # fmt: skip
