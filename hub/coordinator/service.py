"""The coordinator: who handles each inbound call, and what happens when an owner fails.

It is an agent itself (name ``coordinator``, partitioned like any other, so replicas split calls) plus a supervisor
that every replica runs over in-memory mirrors of the lease, assignment and registry buckets. Every action is a
compare-and-set on KV, so replicas never act twice.

- **Assignment**: on the first ringing/answered leg of an inbound call (at the PBX's route point when it is known),
  the rules choose candidates; down agents are skipped; the first live one gets ``agent.assigned`` and must claim
  within ``claim_timeout_s``. Not claimed in time, or its agent went down: the next candidate (``attempt`` + 1).
  None left, or a rule says so: the safe route, announced as ``agent.assigned`` with ``safe_route`` set.
- **Lease expiry**: a lease past ``until`` + grace is marked expired (one coordinator wins), ``agent.lease_expired``
  is published, and the call's leg is routed to the safe route with ``route_to`` (D§7: valid while the leg rings or
  is connected; the leg stays until the destination answers). Then the lease is removed: the call is with people.
- **Call end**: the call's lease and assignment are removed.

Commands go out as ``agent:coordinator``, which the worker's lease guard lets through on any leased call.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from nats.aio.client import Client
from prometheus_client import Gauge

from hub.bus import EventPublisher
from hub.bus.compaction import COMPACT_EVERY_S, compact_forever
from hub.bus.kv import AGENTS, ASSIGNMENTS, CALL_LEASES, open_bucket
from hub.bus.kvmirror import KvMirror
from hub.coordinator.assignments import Assignment, AssignmentChanged, AssignmentStore, Stored, assignment_key
from hub.coordinator.rules import AssignmentRules, Decision
from hub.logs import get_logger
from hub.rules import CallContext
from hub.sdk.agent import COORDINATOR, Agent, issuer
from hub.sdk.context import Context
from hub.sdk.leases import HeldLease, Lease, LeaseLostError, LeaseStore
from hub.sdk.registry import RegistryView
from hub.sdk.runtime import AgentRuntime, RuntimeOptions
from schemas import commands as c
from schemas import events as ev
from schemas.common import RETRYABLE_CODES, Direction, ErrorCode, LegRef, utcnow
from schemas.identity import derived_command_id, derived_event_id

log = get_logger(__name__)

SAFE_ROUTE_ATTEMPTS = 3
MAX_CALL_VIEWS = 100_000
CALL_VIEWS = Gauge("ml_coordinator_calls", "Calls the coordinator keeps a view of (each dropped at its call.ended)")


@dataclass(frozen=True, kw_only=True)
class CoordinatorConfig:
    safe_route: str | None = None
    safe_routes: Mapping[str, str] = field(default_factory=dict)
    route_points: Mapping[str, str] = field(default_factory=dict)  # pbx -> the hub's route-point DN
    claim_timeout_s: float = 3.0
    lease_grace_s: float = 0.5
    scan_interval_s: float = 0.1
    compact_every_s: float = COMPACT_EVERY_S  # delete markers out of the per-call buckets (hub.bus.compaction)

    def safe_route_for(self, pbx_id: str) -> str | None:
        return self.safe_routes.get(pbx_id, self.safe_route)


@dataclass
class CallView:
    """What the coordinator saw of a call: enough to match rules and to find a leg to route."""

    direction: Direction = Direction.UNKNOWN
    caller: str = ""
    did: str = ""
    legs: dict[str, LegRef] = field(default_factory=dict)
    last_leg: LegRef | None = None
    considered: bool = False


class Coordinator:
    def __init__(
        self,
        nc: Client,
        *,
        rules: AssignmentRules | None,
        config: CoordinatorConfig,
        runtime_options: RuntimeOptions,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.rules = rules
        self.config = config
        self.agent = Agent(
            COORDINATOR,
            capabilities=["assign", "lease-expiry", "safe-route"],
            claim_assigned=False,
            _internal=True,
        )
        self.runtime = AgentRuntime(self.agent, nc, runtime_options)
        self.calls: OrderedDict[tuple[str, str], CallView] = OrderedDict()  # bounded: a lost call.ended must not leak
        self.counts = {"assigned": 0, "escalated": 0, "lease_expired": 0, "safe_routed": 0, "safe_route_gone": 0}
        self._busy: set[str] = set()
        self._leases: LeaseStore | None = None
        self._assignments: AssignmentStore | None = None
        self._lease_view: KvMirror[Lease] | None = None
        self._assign_view: KvMirror[Assignment] | None = None
        self._registry: RegistryView | None = None
        self.ready = asyncio.Event()
        self._register_handlers()

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stopping: asyncio.Event) -> None:
        leases_kv = await open_bucket(self._js, CALL_LEASES)
        assign_kv = await open_bucket(self._js, ASSIGNMENTS)
        self._leases = LeaseStore(leases_kv)
        self._assignments = AssignmentStore(assign_kv)
        await open_bucket(self._js, AGENTS)
        self._lease_view = await KvMirror(self._js, CALL_LEASES.name, Lease.model_validate_json).start()
        self._assign_view = await KvMirror(self._js, ASSIGNMENTS.name, Assignment.model_validate_json).start()
        self._registry = await RegistryView(self._js).start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.runtime.run(stopping), name="coordinator-agent")
                await self.runtime.ready.wait()
                self.ready.set()
                tg.create_task(self._scan(stopping, tg), name="coordinator-scan")
                tg.create_task(compact_forever(self._js, stopping, every_s=self.config.compact_every_s),
                               name="coordinator-compaction")  # fmt: skip
        finally:
            for view in (self._lease_view, self._assign_view, self._registry):
                if view is not None:
                    await view.stop()

    @property
    def publisher(self) -> EventPublisher:
        return self.runtime.publisher

    def is_up(self, agent: str) -> bool:
        return self._registry is not None and self._registry.is_up(agent)

    # ------------------------------------------------------------------ event handlers

    def _register_handlers(self) -> None:
        agent = self.agent

        @agent.on(ev.CallCreated)
        async def created(event: ev.CallCreated, ctx: Context) -> None:
            view = self._view(event)
            view.direction = event.data.direction
            view.caller = event.data.from_number
            view.did = event.data.did or event.data.to_number

        @agent.on(ev.CallRinging, ev.CallAnswered, ev.ParticipantUpdated)
        async def leg_seen(event: ev.CallRinging | ev.CallAnswered | ev.ParticipantUpdated, ctx: Context) -> None:
            view = self._view(event)
            if event.leg is not None:
                view.legs[event.leg.key] = event.leg
                view.last_leg = event.leg
            if not isinstance(event, ev.ParticipantUpdated):
                await self._consider(event, view)

        @agent.on(ev.CallTransferred, ev.CallDiverted, ev.CallLegRemoved)
        async def leg_gone(event: ev.CallTransferred | ev.CallDiverted | ev.CallLegRemoved, ctx: Context) -> None:
            view = self._view(event)
            if event.leg is not None:
                view.legs.pop(event.leg.key, None)

        @agent.on(ev.AgentClaimedCall)
        async def claimed(event: ev.AgentClaimedCall, ctx: Context) -> None:
            assert event.call_id is not None
            stored = await self._assign_store.get(event.pbx_id, event.call_id)
            if stored is not None and stored.value.state == "pending":
                await self._assign_store.delete(event.pbx_id, event.call_id, stored.revision)

        @agent.on(ev.CallEnded)
        async def ended(event: ev.CallEnded, ctx: Context) -> None:
            assert event.call_id is not None
            self.calls.pop((event.pbx_id, event.call_id), None)
            CALL_VIEWS.set(len(self.calls))
            with contextlib.suppress(Exception):
                await self._lease_store.remove(event.pbx_id, event.call_id)
            with contextlib.suppress(Exception):
                await self._assign_store.delete(event.pbx_id, event.call_id)

    def _view(self, event: ev.EventBase) -> CallView:
        assert event.call_id is not None
        key = (event.pbx_id, event.call_id)
        view = self.calls.get(key)
        if view is None:
            view = self.calls[key] = CallView()
            while len(self.calls) > MAX_CALL_VIEWS:
                self.calls.popitem(last=False)
            CALL_VIEWS.set(len(self.calls))
        return view

    @property
    def _lease_store(self) -> LeaseStore:
        assert self._leases is not None, "run() first"
        return self._leases

    @property
    def _assign_store(self) -> AssignmentStore:
        assert self._assignments is not None, "run() first"
        return self._assignments

    # ------------------------------------------------------------------ assignment

    async def _consider(self, event: ev.CallRinging | ev.CallAnswered, view: CallView) -> None:
        if self.rules is None or view.considered or event.call_id is None or event.leg is None:
            return
        participant = event.data.participant
        route_point = self.config.route_points.get(event.pbx_id)
        if route_point is not None and event.leg.dn != route_point:
            return
        inbound = view.direction is Direction.INBOUND or (
            view.direction is Direction.UNKNOWN and participant.party_dn_type == "Wexternalline"
        )
        if not inbound:
            return
        view.considered = True
        context = CallContext(
            caller=view.caller or participant.party_caller_id,
            did=view.did or participant.party_did,
            queue=participant.on_behalf_of_dn,
            at=event.occurred_at,
        )
        decision = self.rules.decide(context)
        if decision is None or decision.ignore:
            return
        await self._assign(event, decision)

    async def _assign(self, event: ev.CallRinging | ev.CallAnswered, decision: Decision) -> None:
        assert event.call_id is not None
        skipped = [a for a in decision.agents if not self.is_up(a)]
        index = next((i for i, a in enumerate(decision.agents) if self.is_up(a)), len(decision.agents))
        assignment = Assignment(
            pbx_id=event.pbx_id,
            call_id=event.call_id,
            rule=decision.rule,
            candidates=decision.agents,
            index=index,
            claim_by=utcnow() + timedelta(seconds=self.config.claim_timeout_s),
            leg=event.leg,
            safe_route=decision.safe_route,
            trigger=event.event_id,
            state="pending" if index < len(decision.agents) else "routed",
        )
        stored = await self._assign_store.create(assignment)
        if stored is None:  # another replica, or an earlier delivery, assigned it
            return
        if assignment.state == "pending":
            reason = f"skipped (down): {', '.join(skipped)}" if skipped else ""
            await self._announce(assignment, reason)
            return
        if decision.agents:
            reason = f"no candidate agent is up ({', '.join(decision.agents)})"
        else:
            reason = f"rule {decision.rule} sends the call to the safe route"
        await self._route_unassigned(assignment, reason)

    async def _announce(self, a: Assignment, reason: str) -> None:
        self.counts["assigned" if a.attempt == 1 else "escalated"] += 1
        data = ev.AssignedData(
            agent=a.agent, rule=a.rule, attempt=a.attempt, claim_within_s=self.config.claim_timeout_s, reason=reason
        )
        await self._publish(ev.AgentAssigned, a.pbx_id, a.call_id, a.leg, data, self._assigned_id(a))
        log.info("call assigned", call_id=a.call_id, agent=a.agent, attempt=a.attempt, rule=a.rule, reason=reason)

    def _assigned_id(self, a: Assignment) -> uuid.UUID:
        return derived_event_id(a.trigger, f"{COORDINATOR}:assigned:{a.attempt}")

    async def _route_unassigned(self, a: Assignment, reason: str) -> None:
        target = a.safe_route or self.config.safe_route_for(a.pbx_id)
        leg = a.leg or self._best_leg(a.pbx_id, a.call_id)
        data = ev.AssignedData(agent=None, rule=a.rule, attempt=a.attempt, safe_route=target, reason=reason)
        event_id = self._assigned_id(a)
        await self._publish(ev.AgentAssigned, a.pbx_id, a.call_id, leg, data, event_id)
        log.warning("call sent to the safe route", call_id=a.call_id, to=target, reason=reason)
        await self._safe_route(a.pbx_id, a.call_id, leg, target, event_id)

    async def _escalate(self, stored: Stored) -> None:
        a = stored.value
        if await self._lease_store.get(a.pbx_id, a.call_id) is not None:  # claimed (event not seen yet): done
            await self._assign_store.delete(a.pbx_id, a.call_id, stored.revision)
            return
        why = (
            f"{a.agent} is down"
            if a.agent and not self.is_up(a.agent)
            else f"{a.agent} did not claim within {self.config.claim_timeout_s:g}s"
        )
        following = [i for i in range(a.index + 1, len(a.candidates)) if self.is_up(a.candidates[i])]
        if following:
            moved = a.model_copy(
                update={
                    "index": following[0],
                    "attempt": a.attempt + 1,
                    "claim_by": utcnow() + timedelta(seconds=self.config.claim_timeout_s),
                }
            )
        else:
            moved = a.model_copy(update={"index": len(a.candidates), "attempt": a.attempt + 1, "state": "routed"})
        try:
            await self._assign_store.swap(stored, moved)
        except AssignmentChanged:
            return
        if moved.state == "pending":
            await self._announce(moved, why)
        elif await self._lease_store.get(a.pbx_id, a.call_id) is None:  # checked again: a late claim wins
            await self._route_unassigned(moved, f"{why}; no other candidate is up")

    def _best_leg(self, pbx_id: str, call_id: str) -> LegRef | None:
        view = self.calls.get((pbx_id, call_id))
        if view is None:
            return None
        route_point = self.config.route_points.get(pbx_id)
        on_route_point = [leg for leg in view.legs.values() if leg.dn == route_point]
        return on_route_point[-1] if on_route_point else view.last_leg

    # ------------------------------------------------------------------ lease expiry

    async def _expire(self, held: HeldLease) -> None:
        try:
            marked = await self._lease_store.mark_expired(held)
        except LeaseLostError:  # renewed in time, released, or another coordinator is on it
            return
        lease = marked.lease
        target = self.config.safe_route_for(lease.pbx_id)
        leg = lease.leg or self._best_leg(lease.pbx_id, lease.call_id)
        event_id = derived_event_id(f"{held.key}@{held.revision}", f"{COORDINATOR}:lease_expired")
        data = ev.LeaseExpiredData(agent=lease.agent, safe_route=target if leg is not None else None)
        self.counts["lease_expired"] += 1
        await self._publish(ev.AgentLeaseExpired, lease.pbx_id, lease.call_id, leg, data, event_id)
        log.warning("lease expired", call_id=lease.call_id, agent=lease.agent, safe_route=target)
        await self._safe_route(lease.pbx_id, lease.call_id, leg, target, event_id)
        await self._lease_store.release(marked)

    async def _safe_route(
        self, pbx_id: str, call_id: str, leg: LegRef | None, target: str | None, source: uuid.UUID
    ) -> c.CommandResult | None:
        if target is None:
            log.error(
                "no safe route configured: the call is left where it is",
                call_id=call_id,
                fix="set ML_COORDINATOR__SAFE_ROUTE to a queue or operator extension",
            )
            return None
        if leg is None:
            log.error("no leg of the call is known: cannot route it", call_id=call_id)
            return None
        result: c.CommandResult | None = None
        for attempt in range(1, SAFE_ROUTE_ATTEMPTS + 1):
            command = c.RouteTo(
                command_id=derived_command_id(source, f"{COORDINATOR}:safe_route:{attempt}"),
                pbx_id=pbx_id,
                call_id=call_id,
                leg=leg,
                issued_by=issuer(COORDINATOR),
                args=c.DestinationArgs(to=target),
            )
            result = await self.runtime.client.send(command)
            if result.ok:
                self.counts["safe_routed"] += 1
                return result
            code = result.error.code if result.error else None
            if code is ErrorCode.NOT_FOUND:  # the caller hung up (or the leg moved on) first: nothing to route
                self.counts["safe_route_gone"] += 1
                log.info("safe route not needed: the call's leg is gone", call_id=call_id, to=target)
                return result
            log.error("safe route failed", call_id=call_id, to=target, code=code, attempt=attempt)
            if code not in RETRYABLE_CODES and code is not ErrorCode.OUTCOME_UNKNOWN:
                break
            await asyncio.sleep(0.5 * attempt)
        return result

    # ------------------------------------------------------------------ the scan

    async def _scan(self, stopping: asyncio.Event, tg: asyncio.TaskGroup) -> None:
        assert self._lease_view is not None
        assert self._assign_view is not None
        while not stopping.is_set():
            now = utcnow()
            grace = self.config.lease_grace_s
            for key, (lease, revision) in list(self._lease_view.values.items()):
                if lease.state == "held" and lease.expired(now, grace):
                    self._spawn(tg, key, self._expire(HeldLease(lease, revision)))
            for key, (assignment, revision) in list(self._assign_view.values.items()):
                if assignment.state != "pending":
                    continue
                agent = assignment.agent
                if assignment.claim_by < now or (agent is not None and not self.is_up(agent)):
                    self._spawn(tg, f"a:{key}", self._escalate(Stored(assignment, revision)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.config.scan_interval_s)

    def _spawn(self, tg: asyncio.TaskGroup, key: str, work: Any) -> None:
        if key in self._busy:
            work.close()
            return
        self._busy.add(key)

        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("coordinator action failed", key=key)
            finally:
                self._busy.discard(key)

        tg.create_task(run())

    async def _publish(
        self,
        cls: type[ev.EventBase],
        pbx_id: str,
        call_id: str,
        leg: LegRef | None,
        data: Any,
        event_id: uuid.UUID,
    ) -> None:
        event = cls.model_validate(
            {
                "event_id": event_id,
                "pbx_id": pbx_id,
                "call_id": call_id,
                "leg": leg,
                "occurred_at": utcnow(),
                "issued_by": issuer(COORDINATOR),
                "data": data,
            }
        )
        await self.publisher.publish(event)
        await self.publisher.flush()


__all__ = ["CallView", "Coordinator", "CoordinatorConfig", "assignment_key"]
