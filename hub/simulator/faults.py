"""Fault injection: what goes wrong between a hub and a real PBX, on demand, each fault journalled.

- ``drop_websockets``: close every Call Control websocket now (the hub must reconnect and resync);
- ``refuse_websockets``: refuse upgrades (401 or 503) for ``seconds`` of simulated time or ``count`` attempts;
- ``rest_errors``: answer REST requests under ``paths`` with ``status`` (5xx, or 429 with ``Retry-After``) for
  ``count`` requests or ``seconds``;
- ``latency``: delay REST requests under ``paths`` by ``delay_s`` for ``count`` requests or ``seconds``;
- ``revoke_tokens``: every issued token stops working (a new grant works again);
- ``duplicate_events``: the next ``count`` websocket frames are each sent twice, same sequence number;
- ``reorder_events``: the next ``count`` groups of ``window`` frames are delivered in reverse order;
- ``malformed_frames``: send these raw frames (text or binary, anything at all) on every open websocket now.

Every fault is journalled when injected (``phase: injected``) and each time it acts (``phase: applied``), so a test
can measure recovery from the injection to the hub's next good event. Driving: the Python API (``SimHandle.faults``),
scenario steps (``fault:``), and HTTP under ``/_sim/faults`` (not a 3CX path).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from hub.simulator.app import Simulator

FaultKind = Literal[
    "drop_websockets", "refuse_websockets", "rest_errors", "latency", "revoke_tokens", "duplicate_events",
    "reorder_events", "malformed_frames",
]  # fmt: skip
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]


@dataclass
class _Budget:
    """How long a fault lasts: ``count`` uses and/or until simulated time ``until`` (None: unbounded)."""

    count: int | None
    until: float | None

    def active(self, now: float) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        return self.until is None or now < self.until

    def use(self) -> None:
        if self.count is not None:
            self.count -= 1


@dataclass
class RestFault:
    budget: _Budget
    paths: str
    status: int = 503
    retry_after: float | None = None
    delay_s: float = 0.0


@dataclass
class WsRefusal:
    budget: _Budget
    status: int


@dataclass
class EventFault:
    budget: _Budget  # count = frames (duplicate) or groups (reorder)
    window: int = 1


def _budget(now: float, count: int | None, seconds: float | None, what: str) -> _Budget:
    if count is None and seconds is None:
        raise ValueError(f"{what} needs a count (requests or frames) or seconds (simulated time), or both")
    if count is not None and count < 1:
        raise ValueError(f"{what}: count must be at least 1, not {count}")
    if seconds is not None and not seconds > 0:
        raise ValueError(f"{what}: seconds must be > 0, not {seconds}")
    return _Budget(count, None if seconds is None else now + seconds)


class Faults:
    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self.rest: list[RestFault] = []
        self.latency_faults: list[RestFault] = []
        self.ws_refusal: WsRefusal | None = None
        self.duplicate: EventFault | None = None
        self.reorder: EventFault | None = None

    def _now(self) -> float:
        return self._sim.clock()

    def _journal(self, fault: str, phase: str, **detail: Any) -> None:
        self._sim.engine.journal.add(self._now(), "fault", detail={"fault": fault, "phase": phase, **detail})

    # ------------------------------------------------------------------ injecting

    def inject(self, kind: str, **params: Any) -> None:
        """One entry point for scenarios and HTTP: ``inject("rest_errors", status=503, count=3)``."""
        method: Callable[..., Any] | None = getattr(self, kind, None) if kind in FAULT_KINDS else None
        if method is None:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        try:
            method(**params)
        except TypeError as exc:
            raise ValueError(f"fault {kind}: {exc}") from None

    def drop_websockets(self) -> int:
        dropped = self._sim.close_websockets()
        self._journal("drop_websockets", "injected", connections=dropped)
        return dropped

    def refuse_websockets(self, *, status: int = 503, seconds: float | None = None, count: int | None = None) -> None:
        if status not in (401, 403, 503):
            raise ValueError(f"refuse_websockets: status must be 401, 403 or 503, not {status}")
        self.ws_refusal = WsRefusal(_budget(self._now(), count, seconds, "refuse_websockets"), status)
        self._journal("refuse_websockets", "injected", status=status, seconds=seconds, count=count)

    def rest_errors(
        self, *, status: int = 503, count: int | None = None, seconds: float | None = None,
        retry_after: float | None = None, paths: str = "/",
    ) -> None:  # fmt: skip
        if not (status == 429 or 500 <= status <= 599):
            raise ValueError(f"rest_errors: status must be 429 or 5xx, not {status}")
        if retry_after is not None and status != 429:
            raise ValueError("rest_errors: retry_after goes with status 429")
        fault = RestFault(_budget(self._now(), count, seconds, "rest_errors"), paths, status, retry_after)
        self.rest.append(fault)
        self._journal("rest_errors", "injected", status=status, count=count, seconds=seconds, retry_after=retry_after,
                      paths=paths)  # fmt: skip

    def latency(
        self, *, delay_s: float, count: int | None = None, seconds: float | None = None, paths: str = "/"
    ) -> None:
        if not delay_s > 0:
            raise ValueError(f"latency: delay_s must be > 0, not {delay_s}")
        self.latency_faults.append(RestFault(_budget(self._now(), count, seconds, "latency"), paths, delay_s=delay_s))
        self._journal("latency", "injected", delay_s=delay_s, count=count, seconds=seconds, paths=paths)

    def revoke_tokens(self) -> None:
        self._sim.tokens.revoke_all()
        self._journal("revoke_tokens", "injected")
        self._sim.enforce_token_revocation()

    def duplicate_events(self, *, count: int = 1) -> None:
        self.duplicate = EventFault(_budget(self._now(), count, None, "duplicate_events"))
        self._journal("duplicate_events", "injected", count=count)

    def reorder_events(self, *, count: int = 1, window: int = 2) -> None:
        if window < 2:
            raise ValueError(f"reorder_events: window must be at least 2 frames, not {window}")
        self.reorder = EventFault(_budget(self._now(), count, None, "reorder_events"), window)
        self._journal("reorder_events", "injected", count=count, window=window)

    def malformed_frames(self, *, frames: list[str | bytes]) -> int:
        """Queue ``frames`` as they are (after whatever is already queued) on every open websocket; returns how many
        connections got them."""
        sent = self._sim.send_raw(frames)
        self._journal("malformed_frames", "injected", frames=len(frames), connections=sent)
        return sent

    def clear(self) -> None:
        """End every fault still active (a dropped socket or a revoked token stays as it is)."""
        self.rest.clear()
        self.latency_faults.clear()
        self.ws_refusal = self.duplicate = self.reorder = None
        self._sim.flush_reordered()
        self._journal("all", "cleared")

    def active(self) -> dict[str, Any]:
        now = self._now()
        out: dict[str, Any] = {
            "rest_errors": [asdict(f) for f in self.rest if f.budget.active(now)],
            "latency": [asdict(f) for f in self.latency_faults if f.budget.active(now)],
        }
        for name, fault in (("refuse_websockets", self.ws_refusal), ("duplicate_events", self.duplicate),
                            ("reorder_events", self.reorder)):  # fmt: skip
            if fault is not None and fault.budget.active(now):
                out[name] = asdict(fault)
        return out

    # ------------------------------------------------------------------ applying (called by the HTTP layer)

    def rest_fault(self, path: str) -> tuple[float, RestFault | None]:
        """For one REST request: (added delay, error to answer instead)."""
        now = self._now()
        delay = 0.0
        for fault in self.latency_faults:
            if path.startswith(fault.paths) and fault.budget.active(now):
                fault.budget.use()
                delay += fault.delay_s
                self._journal("latency", "applied", path=path, delay_s=fault.delay_s)
        self.latency_faults = [f for f in self.latency_faults if f.budget.active(now)]
        for fault in self.rest:
            if path.startswith(fault.paths) and fault.budget.active(now):
                fault.budget.use()
                self._journal("rest_errors", "applied", path=path, status=fault.status)
                return delay, fault
        self.rest = [f for f in self.rest if f.budget.active(now)]
        return delay, None

    def ws_refused(self) -> int | None:
        refusal = self.ws_refusal
        if refusal is None or not refusal.budget.active(self._now()):
            return None
        refusal.budget.use()
        self._journal("refuse_websockets", "applied", status=refusal.status)
        return refusal.status

    def frame_copies(self) -> int:
        """How many times to send the next websocket frame (a duplicate fault sends it twice)."""
        fault = self.duplicate
        if fault is None or not fault.budget.active(self._now()):
            return 1
        fault.budget.use()
        self._journal("duplicate_events", "applied")
        return 2

    def reorder_window(self) -> int:
        fault = self.reorder
        if fault is None or not fault.budget.active(self._now()):
            return 1
        return fault.window

    def reordered(self, frames: int) -> None:
        if self.reorder is not None:
            self.reorder.budget.use()
        self._journal("reorder_events", "applied", frames=frames)


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds (RFC 9110)."""
    return str(max(0, math.ceil(seconds)))
