"""The routing agent on the whole path: the simulator's call, ingest's events, the coordinator's assignment to
``routing``, the agent's decision, the worker's command back on the simulator (3CX semantics: the route-point leg
arrives Connected, so transfer or route_to, never divert), menu prompts on the route-point leg's audio stream."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from prometheus_client import REGISTRY

from agents.routing import DRY_RUN_NAME
from hub.sdk import AgentReleasedCall, RoutingDecided
from hub.simulator import peak
from schemas import subjects
from schemas.common import utcnow
from schemas.events import AgentAssigned
from tests.agents.support import PBX, ROUTE_POINT, bus_events, events_of, publish, running, running_coordinator
from tests.helpers import eventually, wait_until
from tests.routing.support import COORDINATOR_RULES, Hub, hub_with_simulator, routing_agent, rules

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


async def decisions(hub: Hub, call_id: str | None = None) -> list[RoutingDecided]:
    return await events_of(hub.nc, RoutingDecided, call_id)


async def _ringing(hub: Hub, dn: str) -> bool:
    return bool(hub.sim.engine.participants(dn))


async def _decided(hub: Hub, n: int) -> bool:
    return len(await decisions(hub)) >= n


async def test_a_vip_caller_is_transferred_to_their_person(nc: Client, tmp_path: Path) -> None:
    async with hub_with_simulator(nc) as hub:
        agent = routing_agent(hub, rules(), tmp_path)
        async with running_coordinator(nc, COORDINATOR_RULES), running(agent.agent, nc):
            hub.sim.engine.place_call("+15550101", ROUTE_POINT, did="+15550199")
            await wait_until(lambda: _ringing(hub, "101"), what="101 to ring")
            await wait_until(lambda: _any(events_of(nc, AgentReleasedCall)), what="the lease to be let go")
            [decided] = await decisions(hub)
    assert (decided.data.rule, decided.data.action, decided.data.destination) == ("vip", "transfer", "101")
    assert not decided.data.dry_run
    assert len(hub.requests("/transferto")) == 1 and hub.transferred_to() == ["101"]
    assert hub.requests("/divert") == []  # a Connected route-point leg is never diverted (D§7)
    [released] = await events_of(nc, AgentReleasedCall)
    assert released.data.reason == "routed to 101"


async def test_a_blocked_caller_is_dropped(nc: Client, tmp_path: Path) -> None:
    async with hub_with_simulator(nc) as hub:
        agent = routing_agent(hub, rules(), tmp_path)
        async with running_coordinator(nc, COORDINATOR_RULES), running(agent.agent, nc):
            call = hub.sim.engine.place_call("+19005550000", ROUTE_POINT)
            await eventually(lambda: call.callid not in hub.sim.engine.calls, what="the call to be dropped")
            [decided] = await decisions(hub)
    assert (decided.data.rule, decided.data.action) == ("blocked", "reject")
    assert len(hub.requests("/drop")) == 1


async def test_outside_business_hours_calls_go_to_voicemail(nc: Client, tmp_path: Path) -> None:
    async with hub_with_simulator(nc) as hub:
        agent = routing_agent(hub, rules(open_now=False), tmp_path)
        async with running_coordinator(nc, COORDINATOR_RULES), running(agent.agent, nc):
            hub.sim.engine.place_call("+15550101", ROUTE_POINT)  # a VIP, but the office is closed
            await wait_until(lambda: _ringing(hub, "100"), what="the voicemail number to ring")
            [decided] = await decisions(hub)
    assert (decided.data.rule, decided.data.action, decided.data.destination) == ("closed", "voicemail", "100")


async def test_a_menu_plays_its_prompt_on_the_route_point_leg_and_a_key_routes_the_call(
    nc: Client, tmp_path: Path
) -> None:
    async with hub_with_simulator(nc) as hub:
        agent = routing_agent(hub, rules(), tmp_path)
        async with running_coordinator(nc, COORDINATOR_RULES), running(agent.agent, nc):
            call = hub.sim.engine.place_call("+15557770000", ROUTE_POINT)
            leg = hub.sim.route_point_leg(call.callid)
            await eventually(lambda: _replies(hub, leg.id) >= 1, what="the prompt to play")
            hub.sim.engine.send_dtmf(call.callid, "2")
            await wait_until(lambda: _ringing(hub, "102"), what="102 to ring")
            found = await decisions(hub)
    assert [(d.data.rule, d.data.action, d.data.destination) for d in found] == [
        ("default", "menu", "main"),
        ("menu main", "transfer", "102"),
    ]
    playout = hub.sim.playout(leg.id)
    assert playout.replies and playout.replies[0].last_loud_played_at - playout.replies[0].first_loud_played_at > 0.2
    assert len(hub.requests("/transferto")) == 1 and hub.transferred_to() == ["102"]


async def test_a_menu_plays_again_after_a_wrong_key_and_silence_then_takes_its_otherwise_route(
    nc: Client, tmp_path: Path
) -> None:
    async with hub_with_simulator(nc) as hub:
        agent = routing_agent(hub, rules(attempts=3), tmp_path)
        async with running_coordinator(nc, COORDINATOR_RULES), running(agent.agent, nc):
            call = hub.sim.engine.place_call("+15557770000", ROUTE_POINT)
            leg = hub.sim.route_point_leg(call.callid)
            await eventually(lambda: _replies(hub, leg.id) >= 1, what="the prompt")
            hub.sim.engine.send_dtmf(call.callid, "9")  # not an option: the invalid prompt, then the menu again
            await wait_until(lambda: _ringing(hub, "100"), timeout=15, what="the otherwise route after three plays")
            found = await decisions(hub)
    # prompt (300 ms), invalid (150 ms), prompt, silence, prompt, silence: 1050 ms of tone reached the caller
    assert 950 <= _loud_ms(hub, leg.id) <= 1150
    assert found[-1].data.rule == "menu main" and found[-1].data.destination == "100"
    assert "after 3 plays" in found[-1].data.reason and "1 invalid" in found[-1].data.reason


async def test_an_unanswered_destination_overflows_to_the_queue_number(nc: Client, tmp_path: Path) -> None:
    vip = '{transfer: {to: "101", overflow: "102", after_s: 1}}'
    async with hub_with_simulator(nc) as hub:
        agent = routing_agent(hub, rules(vip_action=vip), tmp_path)
        async with running_coordinator(nc, COORDINATOR_RULES), running(agent.agent, nc):
            hub.sim.engine.place_call("+15550101", ROUTE_POINT)
            await wait_until(lambda: _ringing(hub, "101"), what="101 to ring")
            await wait_until(lambda: _ringing(hub, "102"), what="the overflow to 102")
            [first, overflow] = await decisions(hub)
    assert len(hub.requests("/routeto")) == 2 and hub.rang() == [ROUTE_POINT, "101", "102"]
    assert hub.requests("/transferto") == []  # route_to keeps the route-point leg until delivery (D§7)
    assert (first.data.action, first.data.destination) == ("transfer", "101")
    assert (overflow.data.action, overflow.data.destination) == ("overflow", "102")
    assert "did not answer within 1s" in overflow.data.reason


async def test_a_destination_that_answers_in_time_needs_no_overflow(nc: Client, tmp_path: Path) -> None:
    vip = '{transfer: {to: "101", overflow: "102", after_s: 2}}'
    async with hub_with_simulator(nc) as hub:
        agent = routing_agent(hub, rules(vip_action=vip), tmp_path)
        async with running_coordinator(nc, COORDINATOR_RULES), running(agent.agent, nc):
            hub.sim.engine.place_call("+15550101", ROUTE_POINT)
            await wait_until(lambda: _ringing(hub, "101"), what="101 to ring")
            [ringing] = hub.sim.engine.participants("101")
            hub.sim.engine.answer(ringing.id)
            await wait_until(lambda: _any(events_of(nc, AgentReleasedCall)), what="the lease to be let go")
            [released] = await events_of(nc, AgentReleasedCall)
    assert released.data.reason == "delivered to 101"
    assert len(hub.requests("/routeto")) == 1
    assert hub.sim.engine.participants("102") == []


async def test_a_failed_route_goes_to_the_fallback(nc: Client, tmp_path: Path) -> None:
    async with hub_with_simulator(nc) as hub:
        agent = routing_agent(hub, rules(), tmp_path)
        async with running_coordinator(nc, COORDINATOR_RULES), running(agent.agent, nc):
            call = hub.sim.engine.place_call("+15550101", ROUTE_POINT)
            pid = hub.sim.route_point_leg(call.callid).id
            hub.sim.faults.rest_errors(
                status=500, count=1, paths=f"/callcontrol/{ROUTE_POINT}/participants/{pid}/transferto"
            )
            await wait_until(lambda: _ringing(hub, "100"), what="the safe route to ring")
            [first, fallback] = await decisions(hub)
    assert (first.data.rule, first.data.destination) == ("vip", "101")
    assert (fallback.data.action, fallback.data.destination) == ("fallback", "100")
    assert "pbx_unavailable" in fallback.data.reason


async def test_a_dry_run_decides_and_says_so_but_touches_nothing(nc: Client, tmp_path: Path) -> None:
    async with hub_with_simulator(nc) as hub:
        agent = routing_agent(hub, rules(), tmp_path, dry_run=True)
        assert agent.agent.name == DRY_RUN_NAME
        async with running(agent.agent, nc):  # no coordinator: a dry run decides for every inbound call itself
            call = hub.sim.engine.place_call("+15557770000", ROUTE_POINT)
            await wait_until(lambda: _decided(hub, 1), what="the menu decision")
            hub.sim.engine.send_dtmf(call.callid, "1")
            await wait_until(lambda: _decided(hub, 2), what="the key's decision")
            found = await decisions(hub)
            leg = hub.sim.route_point_leg(call.callid)
    assert [(d.data.action, d.data.destination, d.data.dry_run) for d in found] == [
        ("menu", "main", True),
        ("transfer", "101", True),
    ]
    assert hub.requests("/transferto") == hub.requests("/routeto") == hub.requests("/drop") == []
    assert hub.sim.playout(leg.id).replies == []  # nothing played either
    assert await events_of(nc, AgentReleasedCall) == []  # and nothing claimed


async def test_new_rules_apply_to_the_next_call_without_a_restart(nc: Client, tmp_path: Path) -> None:
    async with hub_with_simulator(nc) as hub:
        agent = routing_agent(hub, rules(), tmp_path)
        assert agent.source.path is not None
        async with running_coordinator(nc, COORDINATOR_RULES), running(agent.agent, nc):
            agent.source.path.write_text(rules(vip_action='{transfer: "102"}'))
            await eventually(lambda: agent.source.reloads == 1, what="the reload")
            agent.source.path.write_text("rules: [oops")  # a broken save: refused, the new rules stay
            await eventually(lambda: agent.source.rejected == 1, what="the refusal")
            hub.sim.engine.place_call("+15550101", ROUTE_POINT)
            await wait_until(lambda: _ringing(hub, "102"), what="102 to ring (the new VIP rule)")
    assert agent.source.last_error is not None and agent.source.last_error.line == 1
    assert "not valid YAML" in str(agent.source.last_error)


async def test_an_assignment_after_the_call_ended_routes_nothing_and_keeps_nothing(nc: Client, tmp_path: Path) -> None:
    """A coordinator catching up after a restart assigns calls that ended while it was away (its assignment lands
    in the feed after the call's end; here it is published as the coordinator would): the agent lets the call go
    without a command and keeps no facts for it. Facts made then were never dropped: one leaked set per call."""
    async with hub_with_simulator(nc) as hub:
        agent = routing_agent(hub, rules(), tmp_path)
        async with running(agent.agent, nc):
            call = hub.sim.engine.place_call("+15550101", ROUTE_POINT)  # a VIP: would be transferred to 101
            await eventually(lambda: len(agent.calls) == 1, what="the agent to see the call")
            [(_, call_id)] = agent.calls
            hub.sim.engine.hangup(call.callid)
            await eventually(lambda: not agent.calls, what="the agent to see the call end")
            await publish(nc, await _assignment(nc, call_id))
            await wait_until(lambda: _any(events_of(nc, AgentReleasedCall)), what="the late assignment handled")
            [released] = await events_of(nc, AgentReleasedCall)
            held = dict(agent.calls)
    assert released.data.reason == "the call ended before it was routed"
    assert held == {} and REGISTRY.get_sample_value("ml_routing_calls") == 0
    assert await decisions(hub) == []
    assert hub.requests("/transferto") == hub.requests("/routeto") == []


async def test_a_live_call_this_replica_never_saw_is_routed_by_the_caller_read_back(nc: Client, tmp_path: Path) -> None:
    """A replica that holds nothing about a live call (it restarted after the call's first events: its memory is
    empty) reads the call's ``call.created`` back from the event stream: the caller is known (a VIP, where an
    unknown caller would get the menu), and the call, not ended, is routed."""
    async with hub_with_simulator(nc) as hub:
        agent = routing_agent(hub, rules(), tmp_path)
        async with running(agent.agent, nc):
            hub.sim.engine.place_call("+15550101", ROUTE_POINT)
            await eventually(lambda: len(agent.calls) == 1, what="the agent to see the call")
            [(_, call_id)] = agent.calls
            agent.calls.clear()  # what a replica started after the call's first events holds
            await publish(nc, await _assignment(nc, call_id))
            await wait_until(lambda: _ringing(hub, "101"), what="101 to ring")
            [decided] = await decisions(hub)
    assert (decided.data.rule, decided.data.destination) == ("vip", "101")


async def _assignment(nc: Client, call_id: str) -> AgentAssigned:
    """``routing``'s assignment of the call's route-point leg, as the coordinator publishes it."""
    leg = next(e.leg for e in await bus_events(nc, subjects.event_filter(key=call_id)) if e.leg is not None)
    return AgentAssigned.model_validate({
        "event_id": uuid.uuid4(), "pbx_id": PBX, "call_id": call_id, "leg": leg, "occurred_at": utcnow(),
        "data": {"agent": "routing", "rule": "everyone", "claim_within_s": 5.0},
    })  # fmt: skip


def _loud_ms(hub: Hub, pid: int) -> float:
    """How much of what the caller heard was loud (10 ms slices above the simulator's silence threshold)."""
    pcm = bytes(hub.sim.playout(pid).pcm)
    slices = [pcm[i : i + 160] for i in range(0, len(pcm), 160)]
    return 10.0 * sum(1 for piece in slices if peak(piece) > hub.sim.config.silence_threshold)


def _replies(hub: Hub, pid: int) -> int:
    try:
        return len(hub.sim.playout(pid).replies)
    except Exception:
        return 0


async def _any(awaitable: Any) -> bool:
    return bool(await awaitable)
