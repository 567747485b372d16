"""Call ownership end to end: agents (in-process and as `masterlinc agent run` subprocesses), the coordinator, and
the real worker with the KV lease guard against the simulator, checked in the simulator's journal."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import create_async_engine

from hub.eventlog.migrate import upgrade_async
from hub.eventlog.tables import agent_tracking
from hub.sdk import (
    Agent,
    AgentHandedOff,
    AgentLeaseExpired,
    CallAnswered,
    CommandClient,
    CommandResult,
    Context,
    DestinationArgs,
    Drop,
    DtmfReceived,
    ErrorCode,
    RouteTo,
)
from tests.agents.support import (
    CLI,
    FAST,
    PBX,
    ROUTE_POINT,
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


async def test_an_agents_command_on_a_call_it_does_not_own_is_refused_by_the_worker(nc: Client, nc2: Client) -> None:
    owner, intruder = Agent("alpha"), Agent("beta")
    refused: list[CommandResult] = []

    @owner.on(CallAnswered)
    async def take(event: CallAnswered, ctx: Context) -> None:
        assert await ctx.claim()

    @intruder.on(DtmfReceived)
    async def meddle(event: DtmfReceived, ctx: Context) -> None:
        refused.append(await ctx.send(Drop))

    async with worker_rig(nc) as rig, running(owner, nc), running(intruder, nc2):
        rig.sim.engine.place_call("+15550100", ROUTE_POINT)
        call = CallScript(leg=rig.route_point_leg())
        await publish(nc, call.answered())
        await wait_until(lambda: _is(lease_owner(nc, call.call_id), "alpha"), what="alpha's claim")
        await publish(nc, call.dtmf("5"))
        await wait_until(lambda: _true(refused), what="beta's command result")
        [result] = refused
        assert result.error is not None
        assert result.error.code is ErrorCode.FORBIDDEN
        assert "owned by agent 'alpha'" in result.error.message
        assert "override scope" in result.error.message
        assert rig.requests("/drop") == []  # never reached the PBX
        assert rig.sim.engine.participants(ROUTE_POINT) != []

        client = CommandClient(nc)
        leg = call.leg

        def command(cls: type[Any], issuer: str, **extra: Any) -> Any:
            return cls(pbx_id=PBX, call_id=call.call_id, leg=leg, issued_by=issuer, **extra)

        faked = await client.send(command(Drop, "agent:beta", override=True))  # agents are not trusted to override
        assert faked.error is not None
        assert faked.error.code is ErrorCode.FORBIDDEN
        routed = await client.send(command(RouteTo, "agent:coordinator", args=DestinationArgs(to="101")))
        assert routed.ok, routed.error  # the coordinator may always act (safe routes)
        overridden = await client.send(command(Drop, "mcp:tok1", override=True))
        assert overridden.ok, overridden.error  # an MCP token with the override scope may
        assert len(rig.requests("/drop")) == 1
        assert rig.guard.refused == 2


async def test_handoff_to_another_agent_carries_context_then_to_a_person_with_a_warm_transfer(
    nc: Client, nc2: Client
) -> None:
    first, second = Agent("reception"), Agent("billing")
    after_handoff: list[CommandResult] = []
    received: list[AgentHandedOff] = []
    transfers: list[CommandResult | None] = []

    @first.on(CallAnswered)
    async def take_and_pass(event: CallAnswered, ctx: Context) -> None:
        assert await ctx.claim()
        await ctx.handoff(to_agent="billing", summary="wants a refund", context={"intent": "refund", "account": "A-17"})
        assert not ctx.owns
        after_handoff.append(await ctx.send(Drop, purpose="too-late"))

    @second.on_handoff
    async def take_over(event: AgentHandedOff, ctx: Context) -> None:
        received.append(event)
        assert ctx.owns
        transfers.append(await ctx.handoff(to_extension="101", summary=f"billing: {event.data.summary}"))

    async with worker_rig(nc) as rig, running(first, nc), running(second, nc2):
        rig.sim.engine.place_call("+15550100", ROUTE_POINT)
        call = CallScript(leg=rig.route_point_leg())
        await publish(nc, call.answered())
        await wait_until(lambda: _true(transfers), what="billing's transfer to extension 101")
        [handoff] = received
        assert handoff.data.from_agent == "reception"
        assert handoff.data.context == {"intent": "refund", "account": "A-17"}
        assert handoff.data.summary == "wants a refund"
        [too_late] = after_handoff
        assert too_late.error is not None
        assert too_late.error.code is ErrorCode.FORBIDDEN
        assert "owned by agent 'billing'" in too_late.error.message
        [transfer] = transfers
        assert transfer is not None
        assert transfer.ok, transfer.error
        [ringing] = rig.sim.engine.participants("101")
        assert ringing.status == "Ringing"
        assert rig.sim.engine.calls[ringing.callid].attached == {"summary": "billing: wants a refund"}
        assert [e.detail["path"].rsplit("/", 1)[1] for e in rig.sim.journal.of("request")][-2:] == [
            "attach_participant_data",
            "transferto",
        ]
        assert await lease_owner(nc, call.call_id) is None  # with a person now
        await wait_until(lambda: _two(events_of(nc, AgentHandedOff, call.call_id)), what="both agent.handed_off")
        handoffs = await events_of(nc, AgentHandedOff, call.call_id)
    assert [(e.data.from_agent, e.data.to_agent, e.data.to_extension) for e in handoffs] == [
        ("reception", "billing", None),
        ("billing", None, "101"),
    ]


async def test_a_sigkilled_owner_loses_its_lease_and_the_call_takes_the_safe_route(
    nc: Client, nats_server: str, tmp_path: Path
) -> None:
    """`masterlinc agent run template` in a subprocess is assigned the call and claims it; SIGKILL; the lease
    expires, the coordinator publishes agent.lease_expired and routes the leg to the safe route (the simulator's
    journal shows the routeto and the operator's phone ringing)."""
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}"
    await upgrade_async(db_url)
    env = cli_env(
        nats_server,
        DATABASE_URL=db_url,
        ML_DATA_DIR=str(tmp_path),
        ML_AGENTS__LEASE_S="1",
        ML_AGENTS__HEARTBEAT_S="0.2",
        ML_AGENTS__PARTITIONS=str(FAST.partitions),
    )
    log_file = (tmp_path / "agent.log").open("w")
    async with (
        worker_rig(nc) as rig,
        running_coordinator(nc, "rules:\n  - {name: all, match: {}, action: {assign: template}}\n") as coordinator,
    ):
        with subprocess.Popen([*CLI, "agent", "run", "template"], env=env, stderr=log_file) as agent:  # noqa: ASYNC220
            try:
                await wait_until(lambda: agent_up(nc, "template"), timeout=30, what="the template agent to register")
                await wait_until(lambda: _true(coordinator.is_up("template")), what="the coordinator to see it")
                rig.sim.engine.place_call("+15550100", ROUTE_POINT)
                call = CallScript(leg=rig.route_point_leg())
                await publish(nc, call.created(), call.answered())
                await wait_until(lambda: _is(lease_owner(nc, call.call_id), "template"), what="the agent's claim")
                await wait_until(lambda: _noted(db_url), what="the agent's note committed")  # claimed, then noted
                agent.send_signal(signal.SIGKILL)
                await anyio.to_thread.run_sync(agent.wait, 10)
                await wait_until(lambda: _true(not coordinator.is_up("template")), what="its beats to stop counting")
                await wait_until(lambda: _true(rig.requests("/routeto")), what="the safe route on the PBX")
            finally:
                if agent.poll() is None:
                    agent.kill()
        [expired] = await events_of(nc, AgentLeaseExpired, call.call_id)
        assert (expired.data.agent, expired.data.safe_route) == ("template", SAFE_ROUTE)
        [route] = rig.requests("/routeto")
        assert route.detail["path"].endswith(
            f"/callcontrol/{ROUTE_POINT}/participants/{call.leg.participant_id}/routeto"
        )
        [operator] = rig.sim.engine.participants(SAFE_ROUTE)
        assert operator.status == "Ringing"
        await wait_until(lambda: _is(lease_owner(nc, call.call_id), None), what="the expired lease to be removed")
        assert coordinator.counts["lease_expired"] == 1
        assert coordinator.counts["safe_routed"] == 1
    log_file.close()
    # before it died, the agent noted the call, with its position, in one transaction
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            notes = (await conn.execute(sa.text("SELECT call_id, how FROM template_calls"))).all()
            tracked = (await conn.execute(sa.select(agent_tracking.c.agent, agent_tracking.c.event_type))).all()
    finally:
        await engine.dispose()
    assert [tuple(n) for n in notes] == [(call.call_id, "assigned")]
    assert [tuple(t) for t in tracked] == [("template", "agent.assigned")]


async def _noted(db_url: str) -> bool:
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            return bool((await conn.execute(sa.text("SELECT count(*) FROM template_calls"))).scalar())
    finally:
        await engine.dispose()


async def _two(awaitable: Any) -> bool:
    return len(await awaitable) >= 2


async def _true(value: object) -> bool:
    return bool(value)


async def _is(awaitable: Any, expected: object) -> bool:
    return bool(await awaitable == expected)
