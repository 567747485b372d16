"""What an agent wants to receive: typed filters (event classes, domains, a PBX), turned into subjects only through
:mod:`schemas.subjects`, and reduced to a set JetStream accepts (a consumer's filter subjects may not overlap)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from schemas import subjects
from schemas.events import DOMAINS, EventBase
from schemas.tokens import check_pbx_id


@dataclass(frozen=True)
class EventFilter:
    """One event class, or a whole domain, or everything; optionally from one PBX only."""

    event_type: type[EventBase] | None = None
    domain: str | None = None
    pbx_id: str | None = None

    def __post_init__(self) -> None:
        if self.event_type is not None and not (
            isinstance(self.event_type, type) and issubclass(self.event_type, EventBase)
        ):
            raise TypeError(f"filter by an event class such as CallAnswered, not {self.event_type!r}")
        if self.domain is not None and self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}; known: {', '.join(DOMAINS)}")
        if self.event_type is not None and self.domain is not None and self.domain != self.event_type.DOMAIN:
            raise ValueError(f"{self.event_type.__name__} is in domain {self.event_type.DOMAIN!r}, not {self.domain!r}")
        if self.pbx_id is not None:
            check_pbx_id(self.pbx_id)

    def subject(self, prefix: str) -> str:
        return subjects.event_filter(pbx_id=self.pbx_id, event_type=self.event_type, domain=self.domain, prefix=prefix)

    def matches(self, event: EventBase) -> bool:
        if self.pbx_id is not None and event.pbx_id != self.pbx_id:
            return False
        if self.event_type is not None:
            return type(event) is self.event_type
        return self.domain is None or self.domain == event.DOMAIN


def covers(general: str, specific: str) -> bool:
    """True when every subject matching ``specific`` also matches ``general`` (NATS token wildcards)."""
    g, s = general.split("."), specific.split(".")
    for i, part in enumerate(g):
        if part == ">":
            return len(s) > i
        if i >= len(s) or s[i] == ">":
            return False
        if part not in ("*", s[i]):
            return False
    return len(g) == len(s)


def collide(a: str, b: str) -> bool:
    """True when some subject matches both filters."""
    x, y = a.split("."), b.split(".")
    for i in range(max(len(x), len(y))):
        if i >= len(x) or i >= len(y):
            return False
        if x[i] == ">" or y[i] == ">":
            return True
        if x[i] != "*" and y[i] != "*" and x[i] != y[i]:
            return False
    return True


def consumer_filters(filters: Iterable[EventFilter], prefix: str) -> list[str]:
    """The filter subjects for one consumer: covered filters dropped; if two still overlap (neither covers the
    other), the whole prefix, and the runtime filters what it dispatches."""
    wanted = sorted({f.subject(prefix) for f in filters})
    kept = [s for s in wanted if not any(o != s and covers(o, s) for o in wanted)]
    for i, a in enumerate(kept):
        if any(collide(a, b) for b in kept[i + 1 :]):
            return [f"{prefix}.>"]
    return kept
