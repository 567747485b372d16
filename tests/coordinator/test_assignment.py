"""Assignment: who gets an inbound call (rules), escalation when an agent does not claim in time or is down, and
the safe route when nobody can take the call."""

from __future__ import annotations

import logging
import signal
import subprocess
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client

from hub.coordinator.service import CallView
from hub.sdk import Agent, AgentAssigned, Context, Direction
from tests.agents.support import (
    CLI,
    PBX,
    SAFE_ROUTE,
    CallScript,
    agent_up,
    cli_env,
    events_of,
    lease_owner,
    publish,
    running,
    running_coordinator,
    worker_rig,
)
from tests.helpers import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


def assign(*agents: str) -> str:
    return f"rules:\n  - {{name: inbound, match: {{}}, action: {{assign: [{', '.join(agents)}]}}}}\n"


def idle(name: str, seen: list[AgentAssigned]) -> Agent:
    """An agent that is up but never claims what it is assigned."""
    agent = Agent(name, claim_assigned=False)

    @agent.on_assigned
    async def ignore(event: AgentAssigned, ctx: Context) -> None:
        seen.append(event)

    return agent


async def assignments(nc: Client, call_id: str) -> list[tuple[str | None, int, str]]:
    return [(e.data.agent, e.data.attempt, e.data.reason) for e in await events_of(nc, AgentAssigned, call_id)]


async def test_an_agent_that_does_not_claim_in_time_is_passed_over_for_the_next_candidate(nc: Client) -> None:
    seen: list[AgentAssigned] = []
    async with (
        running_coordinator(nc, assign("slow", "quick")) as coordinator,
        running(idle("slow", seen), nc),
        running(Agent("quick"), nc),
    ):
        await _both_up(coordinator, "slow", "quick")
        call = CallScript()
        await publish(nc, call.created(), call.ringing())
        await wait_until(lambda: _is(lease_owner(nc, call.call_id), "quick"), what="quick's claim")
        history = await assignments(nc, call.call_id)
    assert [a.data.agent for a in seen] == ["slow"]  # slow was asked first, and let it pass
    assert history == [("slow", 1, ""), ("quick", 2, "slow did not claim within 0.5s")]


async def test_a_call_ringing_for_a_queue_goes_to_the_agent_its_queue_rule_names(nc: Client) -> None:
    rules = "rules:\n  - {name: sales, match: {queue: '8001'}, action: {assign: sales}}\ndefault: {assign: general}\n"
    async with (
        running_coordinator(nc, rules) as coordinator,
        running(Agent("sales"), nc),
        running(Agent("general"), nc),
    ):
        await _both_up(coordinator, "sales", "general")
        via_queue, direct = CallScript(on_behalf_of_dn="8001"), CallScript()
        await publish(nc, via_queue.created(), via_queue.ringing(), direct.created(), direct.ringing())
        await wait_until(lambda: _is(lease_owner(nc, via_queue.call_id), "sales"), what="sales' claim")
        await wait_until(lambda: _is(lease_owner(nc, direct.call_id), "general"), what="general's claim")
        [queued] = await events_of(nc, AgentAssigned, via_queue.call_id)
    assert (queued.data.agent, queued.data.rule) == ("sales", "sales")


async def test_an_agent_that_goes_down_after_assignment_is_passed_over_without_waiting(nc: Client) -> None:
    seen: list[AgentAssigned] = []
    async with running_coordinator(nc, assign("flaky", "steady"), claim_timeout_s=30) as coordinator:
        async with running(Agent("steady"), nc):
            async with running(idle("flaky", seen), nc):
                await _both_up(coordinator, "flaky", "steady")
                call = CallScript()
                await publish(nc, call.created(), call.ringing())
                await wait_until(lambda: _true(seen), what="flaky's assignment")
            # flaky stopped (its registry record is gone): no need to wait 30 s for its claim
            await wait_until(lambda: _is(lease_owner(nc, call.call_id), "steady"), what="steady's claim")
        history = await assignments(nc, call.call_id)
    assert history == [("flaky", 1, ""), ("steady", 2, "flaky is down")]


async def test_a_down_candidate_is_skipped_at_assignment(nc: Client) -> None:
    async with running_coordinator(nc, assign("ghost", "present")) as coordinator, running(Agent("present"), nc):
        await wait_until(lambda: _true(coordinator.is_up("present")), what="present to be seen")
        call = CallScript()
        await publish(nc, call.created(), call.answered())
        await wait_until(lambda: _is(lease_owner(nc, call.call_id), "present"), what="present's claim")
        history = await assignments(nc, call.call_id)
    assert history == [("present", 1, "skipped (down): ghost")]


async def test_with_no_candidate_up_the_call_takes_the_safe_route(nc: Client) -> None:
    async with worker_rig(nc) as rig, running_coordinator(nc, assign("ghost")):
        rig.sim.engine.place_call("+15550100", "800")
        call = rig.script(rig.route_point_leg())
        await publish(nc, call.created(), call.answered())
        await wait_until(lambda: _true(rig.requests("/routeto")), what="the safe route on the PBX")
        [assigned] = await events_of(nc, AgentAssigned, call.call_id)
        assert assigned.data.agent is None
        assert assigned.data.safe_route == SAFE_ROUTE
        assert assigned.data.reason == "no candidate agent is up (ghost)"
        [operator] = rig.sim.engine.participants(SAFE_ROUTE)
        assert operator.status == "Ringing"


async def test_a_call_gone_before_its_safe_route_is_not_an_error(nc: Client, caplog: pytest.LogCaptureFixture) -> None:
    """The soak logged thousands of "safe route failed" errors for callers who had hung up first: a leg the PBX
    no longer has needs no route, so it is counted and logged as such, not retried and not an error."""
    caplog.set_level(logging.INFO)
    async with worker_rig(nc) as rig, running_coordinator(nc, assign("ghost")) as coordinator:
        placed = rig.sim.engine.place_call("+15550100", "800")
        call = rig.script(rig.route_point_leg())
        rig.sim.engine.hangup(placed.callid)
        await publish(nc, call.created(), call.answered())
        await wait_until(lambda: _true(coordinator.counts["safe_route_gone"] == 1), what="the safe route's answer")
        assert coordinator.counts["safe_routed"] == 0
        assert len(rig.requests("/routeto")) == 1  # tried once: a 404 is not retried
    messages = [r.getMessage() for r in caplog.records if r.name == "hub.coordinator.service"]
    assert any("safe route not needed" in m for m in messages)
    assert not any("safe route failed" in m for m in messages)


async def test_outbound_and_internal_calls_are_not_assigned(nc: Client) -> None:
    async with running_coordinator(nc, assign("anyone")) as coordinator, running(Agent("anyone"), nc):
        await wait_until(lambda: _true(coordinator.is_up("anyone")), what="anyone to be seen")
        internal = CallScript(caller="101", direction=Direction.INTERNAL, party_dn_type="Wextension")
        inbound = CallScript()
        await publish(nc, internal.created(), internal.ringing(), inbound.created(), inbound.ringing())
        await wait_until(lambda: _is(lease_owner(nc, inbound.call_id), "anyone"), what="the inbound call's claim")
        seen = lambda: _true(coordinator.calls.get((PBX, internal.call_id), CallView()).legs)  # noqa: E731
        await wait_until(seen, what="the coordinator to have read the internal call's ringing leg")
        assert await events_of(nc, AgentAssigned, internal.call_id) == []
        assert coordinator.counts["assigned"] == 1


async def _both_up(coordinator: object, *agents: str) -> None:
    async def up() -> bool:
        return all(coordinator.is_up(a) for a in agents)  # type: ignore[attr-defined]

    await wait_until(up, what=f"{', '.join(agents)} to be seen by the coordinator")


async def _true(value: object) -> bool:
    return bool(value)


async def _is(awaitable: object, expected: object) -> bool:
    return bool(await awaitable == expected)  # type: ignore[misc]


async def test_masterlinc_coordinator_runs_as_a_service_and_registers(
    nc: Client, nats_server: str, tmp_path: Path
) -> None:
    rules = tmp_path / "assign.yaml"
    rules.write_text(assign("voice"))
    env = cli_env(
        nats_server, ML_DATA_DIR=str(tmp_path), ML_COORDINATOR__SAFE_ROUTE="100", ML_AGENTS__HEARTBEAT_S="0.2"
    )
    cmd = [*CLI, "coordinator", "--rules", str(rules)]
    with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) as proc:  # noqa: ASYNC220
        try:
            await wait_until(lambda: agent_up(nc, "coordinator"), timeout=30, what="the coordinator to register")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(proc.wait, 15)
        assert proc.stderr is not None
        logs = proc.stderr.read()
    assert code == 0, logs[-2000:]
    assert "no safe route" not in logs
