"""The agent runtime against a real nats-server: typed filters, per-call order across replicas, replays, claims."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from hub.bus.kv import AGENTS, CALL_LEASES, open_bucket
from hub.sdk import (
    Agent,
    AgentClaimedCall,
    CallAnswered,
    CallEnded,
    CallRinging,
    Context,
    ParticipantUpdated,
    RuntimeOptions,
)
from hub.sdk.leases import LeaseStore
from hub.sdk.registry import AgentRecord
from schemas import events as ev
from schemas import subjects
from schemas.common import utcnow
from tests.agents.support import FAST, PBX, CallScript, bus_events, events_of, lease_owner, publish, running
from tests.helpers import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


async def test_an_agent_gets_only_the_event_classes_it_declared(nc: Client) -> None:
    agent = Agent("picky")
    seen: list[str] = []

    @agent.on(CallAnswered, CallEnded)
    async def handle(event: CallAnswered | CallEnded, ctx: Context) -> None:
        seen.append(event.type_name())

    async with running(agent, nc) as runtime:
        call = CallScript()
        await publish(nc, call.created(), call.ringing(), call.answered(), call.updated("x"), call.ended())
        await wait_until(lambda: _true(len(seen) >= 2), what="the answered and ended events")
        handled = runtime.handled
    assert seen == ["call.answered", "call.ended"]
    assert handled == 2  # created, ringing and the update were filtered out by the server, never delivered


async def test_per_call_order_holds_with_two_replicas_that_split_the_calls(nc: Client, nc2: Client) -> None:
    """Two replicas of one agent on separate connections: each call's events are handled in order, by one replica,
    exactly once; both replicas take part."""
    handled: dict[str, list[tuple[str, int]]] = defaultdict(list)

    def make_agent() -> Agent:
        agent = Agent("orderly")

        @agent.on(ParticipantUpdated)
        async def update(event: ParticipantUpdated, ctx: Context) -> None:
            await asyncio.sleep(random.uniform(0, 0.003))  # handlers take time: order must not depend on luck
            handled[event.call_id or ""].append((ctx._runtime.replica, int(event.data.changed[0])))

        return agent

    options = RuntimeOptions(partitions=8, heartbeat_s=0.2, ack_wait_s=5.0, pbx_ids=(PBX,))
    async with running(make_agent(), nc, options) as a, running(make_agent(), nc2, options) as b:
        try:
            await wait_until(
                lambda: _true(
                    a.active_partitions
                    and b.active_partitions
                    and not (a.active_partitions & b.active_partitions)
                    and a.active_partitions | b.active_partitions == frozenset(range(a.partitions))
                ),
                what="the two replicas to split the partitions",
            )
        except AssertionError as exc:
            state = {r.replica: (r.partitions, sorted(r.owned_partitions), sorted(r.active_partitions)) for r in (a, b)}
            raise AssertionError(f"{exc}: owned/active per replica {state}") from None
        calls = [CallScript() for _ in range(24)]
        per_call = 8
        events = [call.updated(str(i)) for i in range(per_call) for call in calls]  # interleaved across calls
        await publish(nc, *events)
        total = len(calls) * per_call
        await wait_until(
            lambda: _true(sum(len(v) for v in handled.values()) >= total), timeout=20, what="every event handled"
        )
    assert sum(len(v) for v in handled.values()) == total  # exactly once
    replicas_used = set()
    for call in calls:
        got = handled[call.call_id]
        assert [n for _, n in got] == list(range(per_call)), f"call {call.call_id} out of order: {got}"
        replicas = {r for r, _ in got}
        assert len(replicas) == 1, f"call {call.call_id} was split across replicas"
        replicas_used |= replicas
    assert replicas_used == {a.replica, b.replica}


async def test_replayed_events_are_dropped_unless_the_agent_runs_with_backfill(nc: Client) -> None:
    live: list[str] = []
    backfilled: list[tuple[str, bool]] = []
    acting, crm = Agent("acting"), Agent("crm")

    @acting.on(CallAnswered)
    async def act(event: CallAnswered, ctx: Context) -> None:
        live.append(str(event.event_id))

    @crm.on(CallAnswered)
    async def record(event: CallAnswered, ctx: Context) -> None:
        backfilled.append((str(event.event_id), ctx.replay))

    backfill = RuntimeOptions(**{**FAST.__dict__, "backfill": True})
    async with running(acting, nc) as acting_runtime, running(crm, nc, backfill):
        old, new = CallScript(), CallScript()
        replayed, fresh = old.answered(), new.answered()
        await publish(nc, replayed, headers={"Ml-Replay": "run1"})
        await publish(nc, fresh)
        await wait_until(lambda: _true(len(backfilled) == 2), what="the backfill agent to see both")
        await wait_until(lambda: _true(len(live) == 1), what="the acting agent to see the live event")
        await wait_until(lambda: _true(acting_runtime.counts["replays_dropped"] >= 1),
                         what="the acting agent to drop the replay (it may come after the live one)")  # fmt: skip
        dropped = acting_runtime.counts["replays_dropped"]
    assert live == [str(fresh.event_id)]
    assert sorted(backfilled) == sorted([(str(replayed.event_id), True), (str(fresh.event_id), False)])
    assert dropped == 1


async def test_two_agents_competing_for_a_call_get_one_owner(nc: Client, nc2: Client) -> None:
    results: dict[str, dict[str, bool]] = defaultdict(dict)

    def competitor(name: str) -> Agent:
        agent = Agent(name)

        @agent.on(CallRinging)
        async def grab(event: CallRinging, ctx: Context) -> None:
            results[event.call_id or ""][name] = await ctx.claim()

        return agent

    calls = [CallScript() for _ in range(10)]
    async with running(competitor("alpha"), nc), running(competitor("beta"), nc2):
        await publish(nc, *(call.ringing() for call in calls))
        await wait_until(lambda: _true(all(len(results[c.call_id]) == 2 for c in calls)), what="both to try each call")
        store = LeaseStore(await open_bucket(nc.jetstream(), CALL_LEASES))
        for call in calls:
            outcome = results[call.call_id]
            assert sorted(outcome.values()) == [False, True], outcome
            [winner] = [name for name, won in outcome.items() if won]
            held = await store.get(PBX, call.call_id)
            assert held is not None
            assert held.lease.agent == winner
        await wait_until(lambda: _count(events_of(nc, AgentClaimedCall), len(calls)), what="the agent.claimed events")
        claimed = await events_of(nc, AgentClaimedCall)
    by_call = defaultdict(list)
    for event in claimed:
        by_call[event.call_id].append(event.data.agent)
    assert all(len(by_call[c.call_id]) == 1 for c in calls)  # one agent.claimed per call, from the winner


async def test_a_lease_is_renewed_while_held_and_released_when_the_call_ends(nc: Client) -> None:
    agent = Agent("holder", lease_s=0.6)

    @agent.on(CallAnswered)
    async def take(event: CallAnswered, ctx: Context) -> None:
        assert await ctx.claim()

    store = LeaseStore(await open_bucket(nc.jetstream(), CALL_LEASES))
    call = CallScript()
    async with running(agent, nc):
        await publish(nc, call.answered())
        await wait_until(lambda: _has_lease(store, call.call_id), what="the claim")
        first = await store.get(PBX, call.call_id)
        assert first is not None
        # three renewals (one every third of the lease) span more than the lease itself
        await wait_until(lambda: _renewed(store, call.call_id, first.revision + 3), what="three renewals")
        held = await store.get(PBX, call.call_id)
        assert held is not None
        assert not held.lease.expired()
        await publish(nc, call.ended())
        await wait_until(lambda: _no_lease(store, call.call_id), what="the release at call end")
        await wait_until(lambda: _any(events_of(nc, ev.AgentReleasedCall, call.call_id)), what="agent.released")
        released = await events_of(nc, ev.AgentReleasedCall, call.call_id)
    assert [e.data.reason for e in released] == ["call ended"]


async def test_the_registry_shows_a_running_agent_and_forgets_it_when_it_stops(nc: Client) -> None:
    agent = Agent("visible", capabilities=["answer", "transfer"], version="2.1")
    kv = await open_bucket(nc.jetstream(), AGENTS)
    async with running(agent, nc) as runtime:
        key = f"visible.{runtime.replica}"
        first = await kv.get(key)
        assert first.value is not None
        record = AgentRecord.model_validate_json(first.value)
        assert (record.capabilities, record.version, record.health, record.load) == (
            ["answer", "transfer"],
            "2.1",
            "ok",
            0,
        )
        await wait_until(lambda: _beaten(kv, key, (first.revision or 0) + 2), what="two more heartbeats")
    with pytest.raises(KeyNotFoundError):
        await kv.get(key)
    agent_events = await bus_events(nc, subjects.event_filter(domain="agent"))
    # heartbeats live in KV only: the log got the registration and nothing for the beats
    assert [(e.type, e.data.agent) for e in agent_events] == [("agent.registered", "visible")]  # type: ignore[attr-defined]


async def test_a_failing_handler_is_retried_then_dead_lettered_and_the_partition_moves_on(nc: Client) -> None:
    agent = Agent("fragile")
    attempts: dict[str, int] = defaultdict(int)
    done: list[str] = []

    @agent.on(CallAnswered)
    async def handle(event: CallAnswered, ctx: Context) -> None:
        attempts[event.call_id or ""] += 1
        if event.call_id == poison.call_id:
            raise RuntimeError("boom")
        done.append(event.call_id or "")

    poison, healthy = CallScript(), CallScript()
    async with running(agent, nc):
        sub = await nc.jetstream().subscribe("ml.dlq.agent-fragile", stream="ML_DLQ", ordered_consumer=True)
        await publish(nc, poison.answered(), healthy.answered())
        await wait_until(lambda: _true(healthy.call_id in done), what="the healthy call after the poison one")
        letter = await sub.next_msg(timeout=5)
    assert attempts[poison.call_id] == FAST.handler_attempts
    assert letter.headers is not None
    assert "RuntimeError: boom" in letter.headers["Ml-Reason"]


async def _true(value: object) -> bool:
    return bool(value)


async def _any(awaitable: Awaitable[list[Any]]) -> bool:
    return bool(await awaitable)


async def _count(awaitable: Awaitable[list[Any]], at_least: int) -> bool:
    return len(await awaitable) >= at_least


async def _has_lease(store: LeaseStore, call_id: str) -> bool:
    return await store.get(PBX, call_id) is not None


async def _no_lease(store: LeaseStore, call_id: str) -> bool:
    return await store.get(PBX, call_id) is None


async def _renewed(store: LeaseStore, call_id: str, revision: int) -> bool:
    held = await store.get(PBX, call_id)
    return held is not None and held.revision >= revision


async def _beaten(kv: KeyValue, key: str, revision: int) -> bool:
    entry = await kv.get(key)
    return (entry.revision or 0) >= revision


async def test_work_spawned_for_a_call_runs_beside_the_handlers_and_stops_when_the_call_ends(nc: Client) -> None:
    agent = Agent("talker")
    started, cancelled, later = asyncio.Event(), asyncio.Event(), []

    async def conversation() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # a long conversation
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @agent.on(CallAnswered)
    async def answered(event: CallAnswered, ctx: Context) -> None:
        ctx.spawn(conversation())

    @agent.on(ParticipantUpdated)
    async def updated(event: ParticipantUpdated, ctx: Context) -> None:
        later.append(event.data.changed[0])  # the partition was not held by the running conversation

    call = CallScript()
    async with running(agent, nc):
        await publish(nc, call.answered(), call.updated("next"))
        await wait_until(lambda: _true(started.is_set() and later == ["next"]), what="both to run")
        assert not cancelled.is_set()
        await publish(nc, call.ended())
        await wait_until(lambda: _true(cancelled.is_set()), what="the task to be cancelled at call end")


def test_a_replica_that_stops_beating_counts_as_down() -> None:
    from datetime import timedelta

    from schemas.common import utcnow

    now = utcnow()
    record = AgentRecord(agent="a", replica="r", started_at=now, beat_at=now, heartbeat_s=0.2, down_after_beats=3)
    assert record.alive(now + timedelta(seconds=0.5))
    assert not record.alive(now + timedelta(seconds=0.7))
    assert not record.model_copy(update={"health": "stopping"}).alive(now)


async def test_an_unreadable_registry_record_is_passed_over_and_the_view_still_starts(nc: Client) -> None:
    """A garbled record as the bucket's last entry neither stops the view from syncing nor shows up as an agent."""
    from hub.sdk.registry import RegistryView
    from schemas.common import utcnow

    kv = await open_bucket(nc.jetstream(), AGENTS)
    now = utcnow()
    good = AgentRecord(agent="a", replica="r1", started_at=now, beat_at=now, heartbeat_s=1.0)
    await kv.put(good.key, good.model_dump_json().encode())
    await kv.put("a.r2", b"{not json")
    view = await asyncio.wait_for(RegistryView(nc.jetstream(), "a.*").start(), 5)
    try:
        assert list(view.records) == ["a.r1"]
        assert [r.replica for r in view.alive("a")] == ["r1"]
    finally:
        await view.stop()


def _assigned(call: CallScript, agent: str, *, late_s: float) -> ev.AgentAssigned:
    return ev.AgentAssigned.model_validate({
        "event_id": uuid.uuid4(), "pbx_id": PBX, "call_id": call.call_id, "leg": call.leg,
        "occurred_at": utcnow() - timedelta(seconds=late_s),
        "data": {"agent": agent, "rule": "default", "claim_within_s": 3.0},
    })  # fmt: skip


async def test_an_assignment_handled_after_its_claim_window_is_left_to_the_coordinator(nc: Client) -> None:
    """A replica far behind its feed (the soak's routing agent, minutes late) claimed calls the coordinator had
    already escalated: two parties acting on one call, and work spent on calls long gone."""
    agent = Agent("router")
    handled: list[str | None] = []

    @agent.on_assigned
    async def route(event: ev.AgentAssigned, ctx: Context) -> None:
        handled.append(ctx.call_id)

    fresh, late = CallScript(), CallScript()
    async with running(agent, nc) as runtime:
        await publish(nc, _assigned(late, "router", late_s=10.0), _assigned(fresh, "router", late_s=0.0))
        await wait_until(lambda: _true(runtime.handled >= 2), what="both assignments handled")
    assert handled == [fresh.call_id]
    assert runtime.expired_assignments == 1
    assert await lease_owner(nc, fresh.call_id) == "router"
    assert await lease_owner(nc, late.call_id) is None
