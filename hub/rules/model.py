"""The rule model: matches on caller id, DID, queue and time (business hours, holidays, per timezone)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Protocol
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Window:
    start: time
    end: time  # exclusive; end <= start means the window crosses midnight

    def contains(self, t: time) -> bool:
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


@dataclass(frozen=True)
class Schedule:
    """Business hours per weekday in a timezone, and holidays (dates in that timezone) when they do not apply."""

    timezone: ZoneInfo
    hours: dict[int, tuple[Window, ...]] = field(default_factory=dict)  # weekday 0=Mon -> windows
    holidays: dict[date, str] = field(default_factory=dict)

    def local(self, at: datetime) -> datetime:
        return at.astimezone(self.timezone)

    def is_holiday(self, at: datetime) -> bool:
        return self.local(at).date() in self.holidays

    def is_open(self, at: datetime) -> bool:
        local = self.local(at)
        if local.date() in self.holidays:
            return False
        return any(w.contains(local.time()) for w in self.hours.get(local.weekday(), ()))


@dataclass(frozen=True)
class CallContext:
    caller: str = ""
    did: str = ""
    queue: str = ""
    digits: str = ""
    at: datetime | None = None


@dataclass(frozen=True)
class Match:
    """Each given condition must hold; lists mean any of. Numbers match exactly or as shell-style globs (``+1555*``)."""

    callers: tuple[str, ...] = ()
    caller_lists: tuple[str, ...] = ()
    dids: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    when: str | None = None  # "open", "closed", "holiday"

    def matches(self, ctx: CallContext, schedule: Schedule | None, lists: dict[str, frozenset[str]]) -> bool:
        if self.callers and not _any_glob(ctx.caller, self.callers):
            return False
        if self.caller_lists and not any(_any_glob(ctx.caller, tuple(lists[name])) for name in self.caller_lists):
            return False
        if self.dids and not _any_glob(ctx.did, self.dids):
            return False
        if self.queues and ctx.queue not in self.queues:
            return False
        if self.when is not None:
            if schedule is None or ctx.at is None:
                return False
            if self.when == "open" and not schedule.is_open(ctx.at):
                return False
            if self.when == "closed" and schedule.is_open(ctx.at):
                return False
            if self.when == "holiday" and not schedule.is_holiday(ctx.at):
                return False
        return True


def _any_glob(value: str, patterns: tuple[str, ...]) -> bool:
    return bool(value) and any(fnmatch.fnmatchcase(value, p) for p in patterns)


@dataclass(frozen=True)
class Rule:
    name: str
    match: Match
    action: dict[str, Any]
    line: int


class Positions(Protocol):
    def line(self, path: tuple[str | int, ...]) -> int: ...


@dataclass(frozen=True)
class RuleSet:
    source: str
    rules: tuple[Rule, ...]
    schedule: Schedule | None = None
    lists: dict[str, frozenset[str]] = field(default_factory=dict)
    default: dict[str, Any] | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    """Top-level sections a caller of ``parse_rules(sections=...)`` asked for, as parsed (it validates them)."""
    positions: Positions | None = field(default=None, repr=False, compare=False)

    def line(self, *path: str | int) -> int:
        """The source line of a value, by its path in the document (``"rules", 0, "action"``); 0 when unknown."""
        return self.positions.line(tuple(path)) if self.positions is not None else 0

    def first_match(self, ctx: CallContext) -> Rule | None:
        for rule in self.rules:
            if rule.match.matches(ctx, self.schedule, self.lists):
                return rule
        return None
