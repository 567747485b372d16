"""The whole path with no hand-made events: the simulator's call, ingest's events, the coordinator's assignment, the
template agent's claim and handoff, the worker's warm transfer back on the simulator (one token, owned by ingest)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import httpx
import pytest
from nats.aio.client import Client

from agents.template import agent as template
from hub.eventlog.migrate import upgrade_async
from hub.sdk import AgentAssigned, AgentClaimedCall, AgentHandedOff, Tracker
from hub.simulator import running_simulator
from tests.agents.support import FAST, ROUTE_POINT, events_of, ingest_and_worker, running, running_coordinator
from tests.helpers import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.nats]

RULES = "rules:\n  - {name: everyone, match: {}, action: {assign: template}}\n"


async def test_an_inbound_call_is_assigned_claimed_and_handed_to_the_operator_from_ingest_events(
    nc: Client, tmp_path: Path
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}"
    await upgrade_async(db_url)
    async with running_simulator() as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        adapter, worker = ingest_and_worker(nc, http, sim.base_url)
        stopping = asyncio.Event()
        tasks = [asyncio.create_task(adapter.run(stopping)), asyncio.create_task(worker.run(stopping))]
        tracker = await Tracker.open(db_url, template.name, template.database)
        try:
            with anyio.fail_after(10):
                await adapter.synced.wait()
                await worker.ready.wait()
            async with (
                running_coordinator(nc, RULES) as coordinator,
                running(template, nc, FAST, tracker=tracker),
            ):
                await wait_until(lambda: _true(coordinator.is_up("template")), what="the coordinator to see template")
                call = sim.engine.place_call("+15550100", ROUTE_POINT, did="+15550199")
                await wait_until(lambda: _any(events_of(nc, AgentClaimedCall)), what="template's claim")
                [claimed] = await events_of(nc, AgentClaimedCall)
                assert claimed.data.agent == "template"
                [assigned] = await events_of(nc, AgentAssigned, claimed.call_id)
                assert (assigned.data.agent, assigned.data.rule) == ("template", "everyone")
                sim.engine.send_dtmf(call.callid, "0")  # the caller asks for a person
                await wait_until(lambda: _true(sim.engine.participants("100")), what="the operator's phone to ring")
                [handoff] = await events_of(nc, AgentHandedOff, claimed.call_id)
        finally:
            stopping.set()
            with anyio.fail_after(15):
                await asyncio.gather(*tasks)
            await tracker.close()
    assert (handoff.data.from_agent, handoff.data.to_extension) == ("template", "100")
    assert handoff.data.context == {"digits": "0"}
    [ringing] = sim.engine.participants("100")
    assert sim.engine.calls[ringing.callid].attached == {"summary": "the caller asked for a person"}
    transfer = [e for e in sim.journal.of("request") if str(e.detail["path"]).endswith("/transferto")]
    assert len(transfer) == 1


async def _true(value: object) -> bool:
    return bool(value)


async def _any(awaitable: object) -> bool:
    return bool(await awaitable)  # type: ignore[misc]
