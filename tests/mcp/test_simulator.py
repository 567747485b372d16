"""MCP tools end to end against the 3CX simulator: client -> facade -> bus -> worker -> Call Control REST -> PBX."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from nats.aio.client import Client as Nats

from hub.config import PbxConfig
from hub.pbx import CallControlClient, CallControlGateway, TokenProvider
from hub.simulator import SimHandle, running_simulator
from hub.worker.service import Worker, WorkerConfig
from schemas.identity import new_call_id
from tests.mcp.support import new_pbx, running_facade

pytestmark = [pytest.mark.nats, pytest.mark.anyio]


@pytest.fixture
async def pbx_worker(nc: Nats) -> AsyncIterator[tuple[str, SimHandle]]:
    pbx_id = new_pbx()
    async with running_simulator() as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        pbx = PbxConfig(id=pbx_id, base_url=sim.base_url, client_id="800", client_secret="sim-secret")
        gateway = CallControlGateway(CallControlClient(http, TokenProvider(http, "800", "sim-secret")), pbx)
        worker = Worker(nc, gateway, config=WorkerConfig(name=f"w-{pbx_id}", durable="ml-mcp-sim", rate_per_second=0))
        stopping = asyncio.Event()
        task = asyncio.create_task(worker.run(stopping, pbx_id=pbx_id))
        with anyio.fail_after(10):
            await worker.ready.wait()
        try:
            yield pbx_id, sim
        finally:
            stopping.set()
            await task


def _body(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    body: dict[str, Any] = result.structured_content
    return body


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_act_on_the_simulated_pbx(nc: Nats, pbx_worker: tuple[str, SimHandle], mode: str) -> None:
    pbx_id, sim = pbx_worker
    async with running_facade(nc, pbx_id) as facade, Client(facade.server, mode=mode, raise_exceptions=True) as client:
        placed = _body(await client.call_tool("make_call", {"from_extension": "101", "to": "102"}))
        assert placed["ok"], placed
        assert [leg.status for leg in sim.engine.participants("102")] == ["Ringing"]

        extensions = _body(await client.call_tool("get_extensions", {}))
        assert [e["number"] for e in extensions["items"]] == ["100", "101", "102"]

        sim.engine.answer(sim.engine.participants("102")[0].id)
        ringing_leg = sim.engine.participants("102")[0]
        held = _body(await client.call_tool(
            "hold_call", {"call_id": new_call_id(), "leg": {"dn": "102", "participant_id": ringing_leg.id}}
        ))  # fmt: skip
        assert held["ok"], held
        assert any(call.parked_at == "SP0" for call in sim.engine.calls.values())

        sim.engine.place_call("+15550100", "800")
        [rp] = sim.engine.participants("800")
        dropped = _body(await client.call_tool(
            "drop_call", {"call_id": new_call_id(), "leg": {"dn": "800", "participant_id": rp.id}}
        ))  # fmt: skip
        assert dropped["ok"], dropped
        assert sim.engine.participants("800") == []
    requests = [str(e.detail["path"]) for e in sim.journal.of("request")]
    assert any(p.endswith("/makecall") for p in requests)
    assert any(p.endswith("/transferto") for p in requests)
    assert any(p.endswith("/drop") for p in requests)
