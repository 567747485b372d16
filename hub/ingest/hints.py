"""What the worker is doing to which leg (D§8): ingest tags the events a command causes with its correlation id.

The worker publishes ``command.accepted`` (carrying the whole command, with its target leg) and
``command.succeeded`` (carrying, for make_call, the leg the PBX created). Ingest listens to both on core NATS and
keeps a short-lived hint per leg. A hint also tells what 3CX cannot: a leg that disappears after a park command
was parked, not hung up; after a transfer it went to another destination.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.events import CommandAccepted, CommandSucceeded, EventBase


@dataclass(frozen=True, slots=True)
class Hint:
    command_type: str
    call_id: str | None
    correlation_id: str | None
    issued_by: str | None
    to: str = ""
    summary: str = ""
    at: float = 0.0


class CommandHints:
    def __init__(self, *, ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._by_leg: dict[tuple[str, int], Hint] = {}

    def observe(self, event: EventBase) -> None:
        """Feed a command event (other events are ignored)."""
        now = self._clock()
        if isinstance(event, CommandAccepted):
            command: dict[str, Any] = event.data.command
            leg = command.get("leg")
            if not isinstance(leg, dict) or "dn" not in leg or "participant_id" not in leg:
                return
            args = command.get("args") if isinstance(command.get("args"), dict) else {}
            hint = Hint(
                command_type=str(command.get("type", "")),
                call_id=event.call_id,
                correlation_id=event.correlation_id,
                issued_by=event.issued_by,
                to=str((args or {}).get("to") or ""),
                summary=str((args or {}).get("summary") or ""),
                at=now,
            )
            self._by_leg[(str(leg["dn"]), int(leg["participant_id"]))] = hint
        elif isinstance(event, CommandSucceeded) and event.data.command_type in {"make_call", "resume"}:
            result = event.data.result
            if result.get("dn") and isinstance(result.get("participant_id"), int):
                self._by_leg[(str(result["dn"]), int(result["participant_id"]))] = Hint(
                    command_type=event.data.command_type, call_id=event.call_id, correlation_id=event.correlation_id,
                    issued_by=event.issued_by, at=now,
                )  # fmt: skip
        self._expire(now)

    def for_leg(self, dn: str, participant_id: int) -> Hint | None:
        hint = self._by_leg.get((dn, participant_id))
        if hint is None or self._clock() - hint.at > self.ttl_s:
            return None
        return hint

    def for_call_dn(self, call_id: str, dn: str) -> Hint | None:
        """The newest live hint for a leg of this call on this DN (the leg itself may be gone already)."""
        now = self._clock()
        found = [
            h for (d, _), h in self._by_leg.items() if d == dn and h.call_id == call_id and now - h.at <= self.ttl_s
        ]
        return max(found, key=lambda h: h.at) if found else None

    def _expire(self, now: float) -> None:
        if len(self._by_leg) < 1024:
            return
        for key in [k for k, h in self._by_leg.items() if now - h.at > self.ttl_s]:
            del self._by_leg[key]
