"""Every MCP tool and resource end to end against the simulator, with the whole path running: assistant -> MCP
facade -> bus -> worker -> 3CX simulator, and simulator -> ingest -> bus -> the facade's call view (leg choice,
park orbits) and resource-updated notifications."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from nats.aio.client import Client as Nats

from hub.bus import EventPublisher, connect
from hub.bus.kv import CALL_IDS, RECORDINGS, open_bucket
from hub.mcp.server import Facade
from hub.pbx import CallControlClient, CallControlGateway, TokenProvider
from hub.pbx.xapi import XapiClient
from hub.simulator import SimConfig, SimHandle, running_simulator, tone
from hub.worker.legs import LegOwnership
from hub.worker.messaging import LogOnlyProvider
from hub.worker.recording import HubRecorder
from hub.worker.service import Worker, WorkerConfig
from schemas.events import EventBase
from tests.helpers import eventually, fresh_bus
from tests.ingest.conftest import PBX, adapter_for
from tests.mcp.support import running_facade

pytestmark = [pytest.mark.nats, pytest.mark.anyio]


@dataclass
class Stack:
    sim: SimHandle
    nc: Nats
    facade: Facade


@contextlib.asynccontextmanager
async def _task(coro: Any) -> AsyncIterator[None]:
    task = asyncio.create_task(coro)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def stack(nats_server: str, tmp_path: Path) -> AsyncIterator[Stack]:
    nc = await connect(nats_server, name="test-mcp-stack")
    js = nc.jetstream()
    await fresh_bus(js)
    publisher = EventPublisher(js)

    async def publish(event: EventBase) -> None:
        await publisher.publish(event)
        await publisher.flush()

    async with running_simulator(SimConfig()) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        adapter = adapter_for(nc, sim, http, None)
        tokens: TokenProvider = adapter.tokens
        rest = CallControlClient(http, tokens)
        legs = LegOwnership(rest, await open_bucket(js, CALL_IDS))
        recorder = HubRecorder(nc, http, tokens, tmp_path, await open_bucket(js, RECORDINGS), publish, holder="t")
        gateway = CallControlGateway(rest, adapter.pbx, LogOnlyProvider(), XapiClient(http, tokens),
                                     recorder=recorder, call_id_of=legs.call_id_of)  # fmt: skip
        worker = Worker(nc, gateway, config=WorkerConfig(rate_per_second=0), leg_check=legs.check)
        stopping = asyncio.Event()
        ingest = asyncio.create_task(adapter.run(stopping))
        working = asyncio.create_task(worker.run(stopping, pbx_id=PBX))
        try:
            with anyio.fail_after(10):
                await adapter.synced.wait()
                await worker.ready.wait()
            async with running_facade(nc, PBX) as facade:
                yield Stack(sim=sim, nc=nc, facade=facade)
        finally:
            await recorder.close()
            stopping.set()
            await working
            await ingest
    await nc.close()


def _body(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    body: dict[str, Any] = result.structured_content
    return body


async def _call_seen(stack: Stack, pbx_callid: int, dn: str, status: str) -> str:
    """The hub's call id of a simulator call, once the facade's view (fed by ingest) has the leg in that status."""
    view = stack.facade.backend.calls

    def found() -> str | None:
        for call_id, call in view._calls.items():
            for leg in call.legs.values():
                if leg.dn == dn and leg.status == status:
                    sim_leg = stack.sim.engine.legs.get(leg.participant_id)
                    if sim_leg is not None and sim_leg.callid == pbx_callid:
                        return call_id
        return None

    await eventually(lambda: found() is not None, what=f"call {pbx_callid} with a {status} leg on {dn}")
    call_id = found()
    assert call_id is not None
    return call_id


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_every_tool_works_against_the_simulator_through_the_whole_hub(stack: Stack, mode: str) -> None:
    sim, engine = stack.sim, stack.sim.engine
    async with Client(stack.facade.server, mode=mode, raise_exceptions=True) as client:

        async def tool(name: str, **args: Any) -> dict[str, Any]:
            return _body(await client.call_tool(name, args))

        # make_call: 101's phone rings first (Dialing), then 100 (a uaCSTA phone: it can be answered remotely)
        placed = await tool("make_call", from_extension="101", to="100")
        assert placed["ok"], placed
        call = engine.calls[int(placed["result"]["pbx_call_id"])]
        call_id = await _call_seen(stack, call.callid, "100", "Ringing")
        answered = await tool("answer_call", call_id=call_id)  # the facade picks the ringing leg itself
        assert answered["ok"], answered
        call_id = await _call_seen(stack, call.callid, "100", "Connected")
        # hold parks the connected leg (3CX has no hold), resume picks it up from the orbit the events said
        [caller_leg] = [leg for leg in engine.legs_of(call.callid) if leg.dn == "101"]
        held = await tool("hold_call", call_id=call_id, leg={"dn": "101", "participant_id": caller_leg.id})
        assert held["ok"], held
        await eventually(lambda: stack.facade.backend.calls.get(call_id) is not None
                         and stack.facade.backend.calls.get(call_id).parked_orbit == "SP0",  # type: ignore[union-attr]
                         what="the call.parked event in the facade's view")  # fmt: skip
        resumed = await tool("resume_call", call_id=call_id, to_extension="102")
        assert resumed["ok"], resumed
        await eventually(lambda: any(leg.dn == "102" for leg in engine.legs_of(call.callid)), what="the pickup")
        # transfer: the connected leg at 102 goes to 101 (transferto), then drop ends the call
        await _call_seen(stack, call.callid, "102", "Connected")
        moved = await tool(
            "transfer_call",
            call_id=call_id,
            to="101",
            leg={"dn": "102", "participant_id": next(leg.id for leg in engine.legs_of(call.callid) if leg.dn == "102")},
        )
        assert moved["ok"], moved
        await eventually(
            lambda: any(leg.dn == "101" and leg.status == "Ringing" for leg in engine.legs_of(call.callid)),
            what="101 ringing after the transfer",
        )
        [far_end] = [leg for leg in engine.legs_of(call.callid) if leg.dn == "100"]  # two legs now: say which
        dropped = await tool("drop_call", call_id=call_id, leg={"dn": "100", "participant_id": far_end.id})
        assert dropped["ok"], dropped
        await eventually(lambda: call.callid not in engine.calls, what="the call to end")

        # record_call / stop_recording: a caller on the route point (the hub's own DN)
        inbound = engine.place_call("+15550100", "800")
        rp_call_id = await _call_seen(stack, inbound.callid, "800", "Connected")
        recording = await tool("record_call", call_id=rp_call_id)
        assert recording["ok"], recording
        spoken = await sim.say(sim.route_point_leg(inbound.callid).id, pcm=tone(440, 400))
        await eventually(lambda: sim.clock() >= spoken.end + 0.1, what="the caller's tone to be over")
        stopped = await tool("stop_recording", call_id=rp_call_id)
        assert stopped["ok"] and stopped["result"]["seconds"] > 0, stopped
        engine.hangup(inbound.callid)

        # messages (a provider), presence (XAPI), reads
        sent = await tool("send_message", to="+15550100", text="Your table is ready")
        assert sent["ok"], sent
        presence = await tool("set_presence", extension="102", profile="Away")
        assert presence["ok"] and presence["result"]["profile"] == "Away", presence
        [bob] = (await tool("get_presence", extension="102"))["items"]
        assert bob["profile"] == "Away"
        extensions = await tool("get_extensions")
        assert {e["number"] for e in extensions["items"]} >= {"100", "101", "102"}
        sim.add_chat_message("+15550100", "thanks!", from_name="Dana")
        logs = await tool("get_call_logs", extension="100")
        assert logs["ok"] and logs["items"] and logs["items"][0]["to_dn"] in {"100", "101", "102"}

        # resources
        async def resource(uri: str) -> Any:
            contents = (await client.read_resource(uri)).contents[0]
            return json.loads(contents.text)  # type: ignore[union-attr]

        live = engine.place_call("+15550111", "101")
        live_id = await _call_seen(stack, live.callid, "101", "Ringing")
        active = await resource("3cx://active-calls")
        assert any(c["call_id"] == live_id for c in active["items"])
        assert (await resource("3cx://call-history"))["items"]
        assert {e["number"] for e in (await resource("3cx://extensions"))["items"]} >= {"101"}
        assert [m["text"] for m in (await resource("3cx://messages"))["items"]] == ["thanks!"]
        assert (await resource("3cx://extensions/102/presence"))["items"][0]["profile"] == "Away"

        async def timeline_complete() -> bool:
            types = [e["type"] for e in (await resource(f"3cx://calls/{call_id}"))["events"]]
            return "call.ended" in types

        from tests.helpers import wait_until

        await wait_until(timeline_complete, what="the first call's timeline in the log")
        timeline = [e["type"] for e in (await resource(f"3cx://calls/{call_id}"))["events"]]
        for expected in ("call.created", "call.answered", "call.parked", "call.resumed", "call.transferred",
                         "command.accepted", "call.ended"):  # fmt: skip
            assert expected in timeline, (expected, timeline)
        engine.hangup(live.callid)
