"""Running an agent: registry heartbeat, partitions of the feed split with the agent's other replicas, dispatch of
each event to the agent's handlers in order, and lease renewal.

    runtime = AgentRuntime(agent, nc, RuntimeOptions(...), tracker=...)
    await runtime.run(stopping)          # until stopping is set

What happens per event, in order: replayed copies are dropped (unless ``backfill``); a redelivered or replayed
event this agent already committed (tracking row) is skipped (a first delivery is not read for: that cost a round
trip an event, and an event published twice is still stopped at ``ctx.transaction()``'s INSERT); an ``agent.assigned``
naming this agent is claimed (then ``on_assigned``); an ``agent.handed_off`` to this agent adopts the lease (then
``on_handoff``); the matching ``on`` handlers run, then the batch handler; a ``call.ended`` releases this agent's
lease on the call. A first delivery that only the batch handler wants goes to it with the events in flight in the
replica's other partitions, in one transaction (:mod:`hub.sdk.batch`). A replica that stops (or dies) keeps no
state that matters: its partitions move to the other replicas, its leases run out and the coordinator sends those
calls to the safe route.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nats.aio.client import Client

from hub.bus import EventPublisher, PublishError
from hub.bus.kv import AGENTS, CALL_LEASES, open_bucket
from hub.logs import get_logger
from hub.sdk.agent import Agent
from hub.sdk.batch import Batch, GroupCommit
from hub.sdk.client import CommandClient
from hub.sdk.consumer import EVENTS, ConsumerOptions, PartitionConsumer, ensure_consumer
from hub.sdk.context import Context
from hub.sdk.feed import ensure_feed
from hub.sdk.filters import consumer_filters
from hub.sdk.keeper import LeaseKeeper
from hub.sdk.leases import LeaseStore
from hub.sdk.partitions import owned
from hub.sdk.registry import AgentRecord, Heartbeat, RegistryView
from hub.sdk.tracking import AlreadyHandled, Tracker
from schemas import events as ev
from schemas import subjects
from schemas.common import utcnow
from schemas.identity import deterministic_event_id, new_ulid

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class RuntimeOptions:
    partitions: int = 32
    lease_s: float = 10.0
    heartbeat_s: float = 1.0
    down_after_beats: int = 3
    ack_wait_s: float = 10.0
    handler_attempts: int = 5
    feed_max_age_s: float = 86400.0
    backfill: bool = False
    pbx_ids: tuple[str, ...] = ()  # where agent.registered is published (events need a PBX)
    replica: str | None = None


class AgentRuntime:
    def __init__(self, agent: Agent, nc: Client, options: RuntimeOptions, *, tracker: Tracker | None = None) -> None:
        self.agent = agent
        self.options = options
        self.replica = options.replica or new_ulid().lower()
        self.tracker = tracker
        self._nc = nc
        self._js = nc.jetstream()
        self.client = CommandClient(nc)
        self.publisher = EventPublisher(self._js)
        self.lease_s = agent.lease_s or options.lease_s
        self._leases: LeaseKeeper | None = None
        self._members: RegistryView | None = None
        self._heartbeat: Heartbeat | None = None
        self.partitions = options.partitions
        self.owned_partitions: frozenset[int] = frozenset()
        self._consumers: dict[int, asyncio.Task[None]] = {}
        self._consumer_objs: dict[int, PartitionConsumer] = {}
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.handled = 0
        self.skipped = 0
        self.expired_assignments = 0  # assignments taken after their claim window: left to the coordinator
        self._tasks: dict[tuple[str, str], set[asyncio.Task[None]]] = {}
        if agent.batch is not None and tracker is None:
            raise ValueError(f"agent {agent.name} has a batch handler, which commits with its position: give it its "
                             "database (DATABASE_URL)")  # fmt: skip
        self.group = GroupCommit(self.dispatch_batch) if agent.batch is not None else None

    @property
    def nc(self) -> Client:
        """The replica's NATS connection (for an agent's own lifespan resources, e.g. a token broker client)."""
        return self._nc

    @property
    def counts(self) -> dict[str, int]:
        """What this replica did with feed events so far (also on /metrics as ml_agent_events_total)."""
        consumers = self._consumer_objs.values()
        return {
            "handled": self.handled,
            "skipped": self.skipped,
            "replays_dropped": sum(c.dropped_replays for c in consumers),
            "dead_letters": sum(c.dead_letters for c in consumers),
        }

    def spawn(self, pbx_id: str, call_id: str | None, work: Coroutine[Any, Any, None], name: str = "") -> None:
        """Run ``work`` beside the handlers (long work must not hold the partition): the task is cancelled when its
        call ends or the replica stops; an exception is logged."""
        key = (pbx_id, call_id or "")
        task = asyncio.create_task(work, name=name or f"{self.agent.name}-{call_id}")
        self._tasks.setdefault(key, set()).add(task)

        def finished(done: asyncio.Task[None]) -> None:
            tasks = self._tasks.get(key)
            if tasks is not None:
                tasks.discard(done)
                if not tasks:
                    self._tasks.pop(key, None)
            if not done.cancelled() and done.exception() is not None:
                log.error("agent task failed", agent=self.agent.name, call_id=call_id, error=repr(done.exception()))

        task.add_done_callback(finished)

    def _cancel_tasks(self, key: tuple[str, str] | None = None) -> list[asyncio.Task[None]]:
        keys = [key] if key is not None else list(self._tasks)
        cancelled = [t for k in keys for t in self._tasks.pop(k, set())]
        for task in cancelled:
            task.cancel()
        return cancelled

    @property
    def leases(self) -> LeaseKeeper:
        if self._leases is None:
            raise RuntimeError("the runtime is not started")
        return self._leases

    @property
    def consumer_options(self) -> ConsumerOptions:
        return ConsumerOptions(
            agent=self.agent.name,
            ack_wait_s=self.options.ack_wait_s,
            attempts=self.options.handler_attempts,
            backfill=self.options.backfill,
        )

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stopping: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as resources:  # the agent's lifespans: entered first, left last
            for lifespan in self.agent.lifespans:
                await resources.enter_async_context(lifespan(self))
            try:
                await self._start()
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._beat_loop(), name=f"{self.agent.name}-heartbeat")
                    tg.create_task(self._renew_loop(), name=f"{self.agent.name}-renew")
                    tg.create_task(self._partition_loop(), name=f"{self.agent.name}-partitions")
                    await stopping.wait()
                    self._stopping.set()
            finally:
                self._stopping.set()
                await self._stop()

    async def _start(self) -> None:
        self.partitions = await ensure_feed(self._js, self.options.partitions, self.options.feed_max_age_s)
        for partition in range(self.partitions):  # all of them, so no partition's events pass unconsumed
            await ensure_consumer(self._js, self.consumer_options, partition, self._filters(partition))
        self._leases = LeaseKeeper(
            LeaseStore(await open_bucket(self._js, CALL_LEASES)),
            self.publisher,
            agent=self.agent.name,
            replica=self.replica,
            lease_s=self.lease_s,
        )
        agents_kv = await open_bucket(self._js, AGENTS)
        now = utcnow()
        self._heartbeat = Heartbeat(
            agents_kv,
            AgentRecord(
                agent=self.agent.name,
                replica=self.replica,
                capabilities=list(self.agent.capabilities),
                version=self.agent.version,
                started_at=now,
                beat_at=now,
                heartbeat_s=self.options.heartbeat_s,
                down_after_beats=self.options.down_after_beats,
            ),
        )
        await self._heartbeat.beat()
        self._members = await RegistryView(self._js, f"{self.agent.name}.*").start()
        await self._register_events()
        await self._rebalance()
        self.ready.set()
        log.info("agent started", agent=self.agent.name, replica=self.replica, partitions=sorted(self.owned_partitions))

    async def _stop(self) -> None:
        for task in self._cancel_tasks():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for consumer in self._consumer_objs.values():
            consumer.stop()  # each finishes the event it is handling
        tasks = [t for t in self._consumers.values() if not t.done()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.options.ack_wait_s)
            for task in late:
                task.cancel()
        for task in self._consumers.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._consumers.clear()
        if self.group is not None:
            await self.group.close()
        if self._members is not None:
            await self._members.stop()
        if self._heartbeat is not None:
            await self._heartbeat.remove()
        with contextlib.suppress(PublishError, TimeoutError):
            await self.publisher.flush(ack_wait=2.0)
        held = len(self._leases.held) if self._leases is not None else 0
        log.info("agent stopped", agent=self.agent.name, replica=self.replica, held_leases=held)

    def _filters(self, partition: int) -> list[str]:
        return consumer_filters(self.agent.filters(), subjects.feed_prefix(partition))

    async def _register_events(self) -> None:
        for pbx_id in self.options.pbx_ids:
            await self.publisher.publish(
                ev.AgentRegistered(
                    event_id=deterministic_event_id("agent-registered", pbx_id, self.agent.name, self.replica),
                    pbx_id=pbx_id,
                    occurred_at=utcnow(),
                    issued_by=f"agent:{self.agent.name}",
                    data=ev.AgentRegisteredData(
                        agent=self.agent.name, capabilities=list(self.agent.capabilities), version=self.agent.version
                    ),
                )
            )

    # ------------------------------------------------------------------ loops

    async def _beat_loop(self) -> None:
        assert self._heartbeat is not None
        while not self._stopping.is_set():
            await _sleep_or(self._stopping, self.options.heartbeat_s)
            if self._stopping.is_set():
                return
            try:
                await self._heartbeat.beat(load=len(self.leases.held))
            except Exception as exc:  # the bus is reconnecting: the next beat tries again
                log.warning("heartbeat failed", agent=self.agent.name, error=str(exc))

    async def _renew_loop(self) -> None:
        while not self._stopping.is_set():
            await _sleep_or(self._stopping, self.lease_s / 3)
            if self._stopping.is_set():
                return
            try:
                await self.leases.renew_all()
                await self.publisher.flush()
            except Exception as exc:
                log.warning("lease renewal failed", agent=self.agent.name, error=str(exc))

    async def _partition_loop(self) -> None:
        assert self._members is not None
        while not self._stopping.is_set():
            self._members.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._members.changed.wait(), self.options.heartbeat_s)
            await self._rebalance()

    @property
    def active_partitions(self) -> frozenset[int]:
        """Partitions this replica is pulling right now (a moved partition leaves once its consumer stopped)."""
        return frozenset(p for p, t in self._consumers.items() if not t.done())

    async def _rebalance(self) -> None:
        """Start consumers for the partitions this replica now owns, stop the others."""
        assert self._members is not None
        replicas = [r.replica for r in self._members.alive(self.agent.name)]
        want = owned(self.replica, replicas, self.partitions)
        if want != self.owned_partitions:
            log.info("partitions", agent=self.agent.name, replica=self.replica, owned=sorted(want), replicas=replicas)
        self.owned_partitions = want
        for partition, task in list(self._consumers.items()):
            if task.done():
                del self._consumers[partition]
                if not task.cancelled() and task.exception() is not None:
                    log.error("partition consumer failed", partition=partition, error=str(task.exception()))
            elif partition not in want:
                self._consumer_objs[partition].stop()
        for partition in want:
            if partition not in self._consumers:
                consumer = PartitionConsumer(self._nc, self._js, self.consumer_options, partition, self)
                self._consumer_objs[partition] = consumer
                self._consumers[partition] = asyncio.create_task(consumer.run(), name=f"{self.agent.name}-p{partition}")

    # ------------------------------------------------------------------ dispatch

    async def dispatch(self, event: ev.EventBase, replay: bool, position: int | None, redelivered: bool) -> None:
        if self.tracker is not None and (replay or redelivered) and await self.tracker.seen(event.event_id):
            self.skipped += 1  # committed by an earlier delivery (or replayed): nothing to do
            self.handled += 1
            return
        if self.group is not None and not (replay or redelivered) and self.batchable(event):
            await self.group.submit(event, position)  # with the other partitions' events in flight (one transaction)
            return
        ctx = Context(self, event, replay=replay, position=position)
        try:
            if isinstance(event, ev.AgentAssigned) and event.data.agent == self.agent.name and event.call_id:
                await self._assigned(event, ctx)
            elif isinstance(event, ev.AgentHandedOff) and event.data.to_agent == self.agent.name and event.call_id:
                await self._handed_over(event, ctx)
            for handler in self.agent.handlers_for(event, ctx.owns):
                await handler(event, ctx)
            if self.agent.batch is not None and self.agent.batch.wants(event):
                await self._run_batch([event], [position])
            if isinstance(event, ev.CallEnded) and event.call_id:
                self._cancel_tasks((event.pbx_id, event.call_id))
                if ctx.owns:
                    await self.leases.release(event.pbx_id, event.call_id, reason="call ended", trigger=event.event_id)
        except AlreadyHandled:
            self.skipped += 1
        self.handled += 1

    def batchable(self, event: ev.EventBase) -> bool:
        """Only the batch handler wants ``event``, and the runtime has no work of its own for it."""
        if self.agent.batch is None or not self.agent.batch.wants(event):
            return False
        if any(s.wants(event) for s in self.agent.subscriptions):
            return False
        if isinstance(event, ev.AgentAssigned) and event.data.agent == self.agent.name:
            return False
        if isinstance(event, ev.AgentHandedOff) and event.data.to_agent == self.agent.name:
            return False
        if isinstance(event, ev.CallEnded) and event.call_id is not None:
            key = (event.pbx_id, event.call_id)
            return key not in self._tasks and not self.leases.owns(*key)
        return True

    async def dispatch_batch(self, events: list[ev.EventBase], positions: list[int | None]) -> None:
        """Hand :meth:`batchable` events of different partitions to the batch handler at once (one transaction)."""
        try:
            await self._run_batch(events, positions)
        except AlreadyHandled:
            self.skipped += len(events)
        self.handled += len(events)

    async def _run_batch(self, events: list[ev.EventBase], positions: list[int | None]) -> None:
        assert self.agent.batch is not None
        assert self.tracker is not None  # checked when the runtime was made
        await self.agent.batch.handler(Batch(self.tracker, events, positions))

    async def _handed_over(self, event: ev.AgentHandedOff, ctx: Context) -> None:
        assert event.call_id is not None
        if not await self.leases.adopt(event.pbx_id, event.call_id):
            log.warning(
                "handoff not adopted: the lease no longer names us", agent=self.agent.name, call_id=event.call_id
            )
            return
        for handler in self.agent.handoff_handlers:
            await handler(event, ctx)

    async def _assigned(self, event: ev.AgentAssigned, ctx: Context) -> None:
        if self.agent.claim_assigned and claim_window_passed(event, utcnow()):
            # a lagging replica: the coordinator escalates this call (next candidate or the safe route), and a claim
            # now would race it, two parties acting on one call; leaving it also lets the replica catch up
            self.expired_assignments += 1
            EVENTS.labels(self.agent.name, "assignment_expired").inc()
            late_s = round((utcnow() - event.occurred_at).total_seconds(), 1)
            log.info("assignment expired before it was handled; the coordinator escalates it",
                     agent=self.agent.name, call_id=event.call_id, late_s=late_s)  # fmt: skip
            return
        if self.agent.claim_assigned and not await ctx.claim(leg=event.leg):
            return
        for handler in self.agent.assigned_handlers:
            await handler(event, ctx)


def claim_window_passed(event: ev.AgentAssigned, now: datetime) -> bool:
    """The coordinator's claim window (``claim_within_s`` from the assignment) is over (its clock and ours agree to
    well under a window, as NTP keeps them)."""
    within = event.data.claim_within_s
    return within is not None and now > event.occurred_at + timedelta(seconds=within)


async def _sleep_or(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
