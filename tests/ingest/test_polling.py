"""XAPI in ingest: presence and chat polled into events once (across restarts too), degraded modes reported."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from hub.bus import connect
from hub.config import IngestConfig
from hub.ingest.adapter import PbxAdapter
from hub.ingest.polling import every
from hub.runner import Health
from hub.simulator import SimConfig, SimHandle, running_simulator
from schemas import events as e
from tests.helpers import eventually, fresh_bus
from tests.ingest.conftest import PBX, adapter_for, stream_events

pytestmark = [pytest.mark.anyio, pytest.mark.nats]

FAST = IngestConfig(call_end_grace_s=0.2, presence_interval_s=0.05, chat_interval_s=0.05, history_interval_s=0.2)


@contextlib.asynccontextmanager
async def running(
    nc: object, sim: SimHandle, http: httpx.AsyncClient, config: IngestConfig
) -> AsyncIterator[PbxAdapter]:
    adapter = adapter_for(nc, sim, http, config)  # type: ignore[arg-type]
    adapter.health = Health()
    stopping = asyncio.Event()
    task = asyncio.create_task(adapter.run(stopping))
    try:
        with anyio.fail_after(10):
            await adapter.synced.wait()
        yield adapter
    finally:
        stopping.set()
        with anyio.fail_after(15):
            await task


async def _polled(adapter: PbxAdapter, n: int = 2) -> None:
    """Wait for n more polls of every poller (so a change made before now has been seen)."""
    await eventually(lambda: len(adapter.pollers) == 2, what="the pollers to start")
    start = [p.polls for p in adapter.pollers]
    await eventually(lambda: all(p.polls >= s + n for p, s in zip(adapter.pollers, start, strict=True)),
                     what="the XAPI pollers")  # fmt: skip


async def test_presence_and_chat_become_events_once_also_across_an_ingest_restart(nats_server: str) -> None:
    nc = await connect(nats_server, name="test-polling")
    await fresh_bus(nc.jetstream())
    async with running_simulator(SimConfig()) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        async with running(nc, sim, http, FAST) as adapter:
            await _polled(adapter)  # the baseline: no events for the state found
            sim.set_presence("101", profile="Away")
            sim.add_chat_message("+15550100", "Is the shop open today?", from_name="Dana")
            await _polled(adapter)
            sim.set_presence("102", queue_status="LoggedOut")
            await _polled(adapter)
        # while ingest is down: one more change and one more message, then a restart
        sim.set_presence("101", profile="Available")
        sim.add_chat_message("+15550101", "Please call me back", from_name="Eli")
        async with running(nc, sim, http, FAST) as adapter:
            await _polled(adapter, 3)
        events = await stream_events(nc)
    await nc.close()
    presence = [ev for ev in events if isinstance(ev, e.PresenceChanged)]
    assert [(p.data.extension, p.data.profile, p.data.previous_profile) for p in presence] == [
        ("101", "Away", "Available"), ("102", "Available", "Available"), ("101", "Available", "Away"),
    ]  # fmt: skip
    assert [p.inferred for p in presence] == [False, False, True]  # the last happened while nobody polled
    queue = [ev.type for ev in events if ev.type.startswith("queue.")]
    assert queue == ["queue.agent_logged_out"]
    messages = [ev for ev in events if isinstance(ev, e.MessageReceived)]
    assert [(m.data.from_number, m.data.text) for m in messages] == [
        ("+15550100", "Is the shop open today?"), ("+15550101", "Please call me back"),
    ]  # fmt: skip
    assert messages[0].data.from_name == "Dana" and messages[0].data.channel == "SMS"
    assert len({ev.event_id for ev in events}) == len(events)


async def test_without_call_control_ingest_runs_on_xapi_and_says_so(nats_server: str) -> None:
    nc = await connect(nats_server, name="test-xapi-only")
    await fresh_bus(nc.jetstream())
    async with (
        running_simulator(SimConfig(call_control_enabled=False)) as sim,
        httpx.AsyncClient(base_url=sim.base_url) as http,
        running(nc, sim, http, FAST) as adapter,
    ):
        assert adapter.modes.name == "xapi-only"
        ready, components = adapter.health.ready()
        assert ready and "Call Control is not licensed or not enabled" in components[f"pbx:{PBX}"]["detail"]
        await _polled(adapter)  # the presence baseline
        call = sim.engine.place_call("+15550100", "101")
        sim.engine.answer(sim.engine.participants("101")[0].id)
        sim.engine.hangup(call.callid)
        sim.set_presence("102", profile="Away")
        await eventually(lambda: adapter.reconciler is not None and adapter.reconciler.reconciled >= 1,
                         what="the call from the call history")  # fmt: skip
        await _polled(adapter)
        events = await stream_events(nc)
    await nc.close()
    [connected] = [ev for ev in events if isinstance(ev, e.LinkConnected)]
    assert connected.data.mode == "xapi-only"
    calls = [ev for ev in events if ev.pbx_call_id == call.callid]
    assert [ev.type for ev in calls] == ["call.created", "call.ended"] and all(ev.inferred for ev in calls)
    ended = calls[1]
    assert isinstance(ended, e.CallEnded) and ended.data.answered is True
    assert any(isinstance(ev, e.PresenceChanged) and ev.data.extension == "102" for ev in events)


async def test_without_xapi_ingest_runs_on_call_control_alone_and_says_so(nats_server: str) -> None:
    nc = await connect(nats_server, name="test-cc-only")
    await fresh_bus(nc.jetstream())
    async with (
        running_simulator(SimConfig(xapi_enabled=False)) as sim,
        httpx.AsyncClient(base_url=sim.base_url) as http,
        running(nc, sim, http, FAST) as adapter,
    ):
        assert adapter.modes.name == "callcontrol-only" and adapter.pollers == [] and adapter.reconciler is None
        ready, components = adapter.health.ready()
        assert ready and "XAPI is not enabled" in components[f"pbx:{PBX}"]["detail"]
        call = sim.engine.place_call("+15550100", "101")
        await eventually(lambda: adapter.outbox is not None and adapter.outbox.published >= 3, what="call events")
        events = await stream_events(nc)
        xapi_requests = [j for j in sim.journal.of("request") if str(j.detail["path"]).startswith("/xapi/")]
    await nc.close()
    [connected] = [ev for ev in events if isinstance(ev, e.LinkConnected)]
    assert connected.data.mode == "callcontrol-only"
    assert [ev.type for ev in events if ev.pbx_call_id == call.callid] == ["call.created", "call.ringing"]
    assert len(xapi_requests) == 1  # the probe, then nothing: polling and reconciliation are off


async def test_a_poll_that_fails_on_the_bus_is_retried_not_fatal() -> None:
    """A KV write that times out while NATS restarts raised out of the poll loop and ended the ingest process
    (found by the 30-minute soak); the loop now backs off and polls again, as it does for a PBX error."""
    stopping = asyncio.Event()
    outcomes: list[str] = []

    async def work() -> None:
        outcomes.append("called")
        if len(outcomes) == 1:
            raise TimeoutError  # what nats-py raises for a KV put with no server to answer it
        if len(outcomes) == 3:
            stopping.set()

    with anyio.fail_after(5):
        await every(0.01, stopping, work, "presence poll")
    assert len(outcomes) == 3
