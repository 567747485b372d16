"""Call leases in NATS KV (D§8, D§9): one key per call, ``<pbx>.<call_id>`` in ML_LEASES.

Every change is atomic: a claim is a KV ``create`` (it fails when the key exists), a renewal, a handoff and an expiry
are compare-and-set updates on the revision last read, a release deletes with the revision. So two agents claiming
one call get one owner, and a renewal racing the coordinator's expiry has exactly one winner.

The owner is the agent's *name* (the worker checks ``issued_by == "agent:<name>"``); the replica that holds it is
recorded for people and for renewal. ``until`` is wall-clock UTC: hosts need synchronised clocks, and the
coordinator allows a grace period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from hub.bus.kv import create
from schemas.common import LegRef, UtcDateTime, utcnow


class Lease(BaseModel):
    """The value of a lease key. Unknown fields are ignored so an older worker still reads a newer coordinator's."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    pbx_id: str
    call_id: str
    agent: str
    replica: str = ""
    leg: LegRef | None = None
    lease_s: float
    until: UtcDateTime
    claimed_at: UtcDateTime
    state: Literal["held", "expired"] = "held"

    def expired(self, now: datetime | None = None, grace_s: float = 0.0) -> bool:
        return (now or utcnow()) > self.until + timedelta(seconds=grace_s)


@dataclass(frozen=True)
class HeldLease:
    """A lease as read, with the KV revision a compare-and-set must name."""

    lease: Lease
    revision: int

    @property
    def key(self) -> str:
        return lease_key(self.lease.pbx_id, self.lease.call_id)


@dataclass(frozen=True)
class ClaimResult:
    won: bool
    held: HeldLease | None  # ours when won, else the current owner's (None: the key vanished meanwhile)


class LeaseLostError(Exception):
    """The lease changed under us (renewed by nobody else, expired by the coordinator, handed off or released)."""


_WRONG_REVISION = (10071, 10164)


def lease_key(pbx_id: str, call_id: str) -> str:
    return f"{pbx_id}.{call_id}"


def _encode(lease: Lease) -> bytes:
    return lease.model_dump_json().encode()


class LeaseStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, pbx_id: str, call_id: str) -> HeldLease | None:
        try:
            entry = await self._kv.get(lease_key(pbx_id, call_id))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return HeldLease(Lease.model_validate_json(entry.value), entry.revision or 0)

    async def claim(
        self, pbx_id: str, call_id: str, *, agent: str, replica: str, lease_s: float, leg: LegRef | None
    ) -> ClaimResult:
        """Create the lease; when it exists, the claim is ours only if our agent already holds it (a redelivery)."""
        now = utcnow()
        lease = Lease(
            pbx_id=pbx_id,
            call_id=call_id,
            agent=agent,
            replica=replica,
            leg=leg,
            lease_s=lease_s,
            until=now + timedelta(seconds=lease_s),
            claimed_at=now,
        )
        try:
            revision = await create(self._kv, lease_key(pbx_id, call_id), _encode(lease))
            return ClaimResult(True, HeldLease(lease, revision))
        except KeyWrongLastSequenceError:
            pass
        current = await self.get(pbx_id, call_id)
        if current is not None and current.lease.agent == agent and current.lease.state == "held":
            try:
                return ClaimResult(True, await self.renew(current, replica=replica, lease_s=lease_s))
            except LeaseLostError:
                current = await self.get(pbx_id, call_id)
        return ClaimResult(False, current)

    async def _swap(self, held: HeldLease, lease: Lease) -> HeldLease:
        try:
            revision = await self._kv.update(held.key, _encode(lease), last=held.revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            raise LeaseLostError(
                f"the lease on call {held.lease.call_id} changed since revision {held.revision}"
            ) from None
        return HeldLease(lease, revision)

    async def renew(
        self, held: HeldLease, *, lease_s: float | None = None, replica: str | None = None, leg: LegRef | None = None
    ) -> HeldLease:
        seconds = lease_s or held.lease.lease_s
        update: dict[str, object] = {"until": utcnow() + timedelta(seconds=seconds), "lease_s": seconds}
        if replica is not None:
            update["replica"] = replica
        if leg is not None:
            update["leg"] = leg
        return await self._swap(held, held.lease.model_copy(update=update))

    async def hand_over(self, held: HeldLease, *, to_agent: str, lease_s: float) -> HeldLease:
        """Give the call to another agent; it adopts the lease (and starts renewing) when it sees the handoff."""
        lease = held.lease.model_copy(
            update={
                "agent": to_agent,
                "replica": "",
                "until": utcnow() + timedelta(seconds=lease_s),
                "lease_s": lease_s,
            }
        )
        return await self._swap(held, lease)

    async def mark_expired(self, held: HeldLease) -> HeldLease:
        """The coordinator's side: only one coordinator (and no late renewal) wins this."""
        return await self._swap(held, held.lease.model_copy(update={"state": "expired"}))

    async def release(self, held: HeldLease) -> bool:
        try:
            await self._kv.delete(held.key, last=held.revision)
        except APIError as exc:  # nats-py does not translate a delete's wrong-revision error
            if exc.err_code in _WRONG_REVISION:
                return False
            raise
        return True

    async def remove(self, pbx_id: str, call_id: str) -> None:
        """Forget a call's lease whatever its state (the call ended)."""
        await self._kv.delete(lease_key(pbx_id, call_id))
