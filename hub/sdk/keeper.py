"""The leases one agent replica holds: claiming, renewing every third of the lease, releasing, handing over, and the
lifecycle events (``agent.claimed``, ``agent.released``) with ids derived from the triggering event."""

from __future__ import annotations

import asyncio
import uuid

from hub.bus import EventPublisher
from hub.logs import get_logger
from hub.sdk.agent import issuer
from hub.sdk.leases import HeldLease, LeaseLostError, LeaseStore
from schemas import events as ev
from schemas.common import LegRef, utcnow
from schemas.identity import derived_event_id

log = get_logger(__name__)


class LeaseKeeper:
    def __init__(
        self, store: LeaseStore, publisher: EventPublisher, *, agent: str, replica: str, lease_s: float
    ) -> None:
        self.store = store
        self._publisher = publisher
        self.agent = agent
        self.replica = replica
        self.lease_s = lease_s
        self.held: dict[tuple[str, str], HeldLease] = {}
        self._lock = asyncio.Lock()  # renewals and a handler's release must not interleave on one lease

    def owns(self, pbx_id: str, call_id: str) -> bool:
        return (pbx_id, call_id) in self.held

    def leg(self, pbx_id: str, call_id: str) -> LegRef | None:
        held = self.held.get((pbx_id, call_id))
        return held.lease.leg if held is not None else None

    async def claim(
        self,
        pbx_id: str,
        call_id: str,
        *,
        leg: LegRef | None,
        lease_s: float | None = None,
        trigger: uuid.UUID | None = None,
    ) -> bool:
        seconds = lease_s or self.lease_s
        result = await self.store.claim(
            pbx_id, call_id, agent=self.agent, replica=self.replica, lease_s=seconds, leg=leg
        )
        if not result.won or result.held is None:
            owner = result.held.lease.agent if result.held is not None else "nobody (it just changed)"
            log.info("claim lost", agent=self.agent, call_id=call_id, owner=owner)
            return False
        held = result.held
        async with self._lock:
            self.held[(pbx_id, call_id)] = held
        source = trigger or f"{held.key}@{held.revision}"
        await self._publish(
            ev.AgentClaimedCall,
            held,
            ev.AgentClaimData(agent=self.agent, lease_seconds=seconds, lease_until=held.lease.until),
            derived_event_id(source, f"claimed:{self.agent}"),
        )
        return True

    async def adopt(self, pbx_id: str, call_id: str) -> bool:
        """Take up a lease another agent handed to us (it names our agent; we start renewing it)."""
        current = await self.store.get(pbx_id, call_id)
        if current is None or current.lease.agent != self.agent or current.lease.state != "held":
            return False
        async with self._lock:
            try:
                held = await self.store.renew(current, replica=self.replica)
            except LeaseLostError:
                return False
            self.held[(pbx_id, call_id)] = held
        return True

    async def release(
        self, pbx_id: str, call_id: str, *, reason: str = "", trigger: uuid.UUID | None = None, publish: bool = True
    ) -> bool:
        async with self._lock:
            held = self.held.pop((pbx_id, call_id), None)
            if held is None:
                return False
            released = await self.store.release(held)
        if released and publish:
            source = trigger or f"{held.key}@{held.revision}"
            await self._publish(
                ev.AgentReleasedCall,
                held,
                ev.AgentReleaseData(agent=self.agent, reason=reason),
                derived_event_id(source, f"released:{self.agent}"),
            )
        return released

    async def hand_over(self, pbx_id: str, call_id: str, to_agent: str) -> None:
        async with self._lock:
            held = self.held.pop((pbx_id, call_id))
            await self.store.hand_over(held, to_agent=to_agent, lease_s=held.lease.lease_s)

    def forget(self, pbx_id: str, call_id: str) -> None:
        self.held.pop((pbx_id, call_id), None)

    async def renew_all(self) -> None:
        """Renew every held lease once; a lease that changed under us (expired by the coordinator while we stalled,
        or released) is dropped from what we hold."""

        async def renew(key: tuple[str, str], held: HeldLease) -> None:
            try:
                self.held[key] = await self.store.renew(held)
            except LeaseLostError:
                self.held.pop(key, None)
                log.warning("lease lost", agent=self.agent, call_id=held.lease.call_id)

        async with self._lock:
            await asyncio.gather(*(renew(k, h) for k, h in list(self.held.items())))

    async def _publish(self, cls: type[ev.EventBase], held: HeldLease, data: object, event_id: uuid.UUID) -> None:
        event = cls.model_validate(
            {
                "event_id": event_id,
                "pbx_id": held.lease.pbx_id,
                "call_id": held.lease.call_id,
                "leg": held.lease.leg,
                "occurred_at": utcnow(),
                "issued_by": issuer(self.agent),
                "data": data,
            }
        )
        await self._publisher.publish(event)
