"""Schema evolution: read events written with older versions of their type.

Every event type has a ``VERSION``. When its data changes incompatibly the version is bumped and an upcaster is
registered here that turns the raw JSON of version N into version N+1. :func:`upcast` applies the chain up to the
current version, so the log, replay and every consumer read old events as current models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.events import EVENT_CLASSES

Raw = dict[str, Any]
Upcaster = Callable[[Raw], Raw]


class UnknownEventTypeError(ValueError):
    """An event's ``type`` is not in the contract."""


class UnsupportedVersionError(ValueError):
    """An event's ``schema_version`` is newer than this code, or has no upcaster path."""


_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register ``fn`` as the upcaster of ``event_type`` from ``from_version`` to ``from_version + 1``."""

    def register(fn: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in _UPCASTERS:
            raise ValueError(f"upcaster for {event_type} v{from_version} registered twice")
        _UPCASTERS[key] = fn
        return fn

    return register


def has_path(event_type: str, from_version: int) -> bool:
    """Whether raw events of ``from_version`` can be upcast to the current version."""
    cls = EVENT_CLASSES.get(event_type)
    if cls is None:
        return False
    return all((event_type, v) in _UPCASTERS for v in range(from_version, cls.VERSION))


def upcast(raw: Raw) -> Raw:
    """Return ``raw`` at the current version of its type (the input is not modified)."""
    event_type = raw.get("type")
    if not isinstance(event_type, str) or event_type not in EVENT_CLASSES:
        raise UnknownEventTypeError(f"unknown event type {event_type!r}")
    cls = EVENT_CLASSES[event_type]
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise UnsupportedVersionError(f"{event_type}: schema_version {version!r} is not a positive integer")
    if version > cls.VERSION:
        raise UnsupportedVersionError(
            f"{event_type} v{version} is newer than this hub understands (v{cls.VERSION}): upgrade masterlinc"
        )
    current = raw
    while version < cls.VERSION:
        step = _UPCASTERS.get((event_type, version))
        if step is None:
            raise UnsupportedVersionError(f"no upcaster for {event_type} from v{version}")
        current = step(dict(current))
        version += 1
        current["schema_version"] = version
    return current


# --------------------------------------------------------------------------- the history of the contract

_V1_CAUSES = {
    "hangup": "completed",
    "completed": "completed",
    "normal": "completed",
    "noanswer": "no_answer",
    "no_answer": "no_answer",
    "no answer": "no_answer",
    "busy": "rejected",
    "rejected": "rejected",
    "declined": "rejected",
    "failed": "failed",
    "error": "failed",
    "transferred": "transferred_away",
}


@upcaster("call.ended", 1)
def _call_ended_v1(raw: Raw) -> Raw:
    """v1 data was ``{"cause": <free text>, "duration": <seconds of talk, or null>}``.

    v2 has a closed ``cause`` set, ``answered`` and separate ring/talk times. A v1 duration was talk time; an answered
    flag is only known when the cause says so.
    """
    old = dict(raw.get("data") or {})
    text = str(old.get("cause") or "").strip().lower()
    cause = _V1_CAUSES.get(text, "unknown")
    duration = old.get("duration")
    answered: bool | None = True if cause == "completed" else (False if cause in {"no_answer", "rejected"} else None)
    if isinstance(duration, int | float) and duration > 0:
        answered = True
    raw["data"] = {
        "cause": cause,
        "answered": answered,
        "talk_seconds": float(duration) if isinstance(duration, int | float) and duration >= 0 else None,
        "ring_seconds": None,
    }
    return raw
