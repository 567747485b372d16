"""An ingest rig: a real nats-server, the simulator, and the adapter in this event loop, collecting the stream."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from nats.aio.client import Client

from hub.bus import connect
from hub.config import IngestConfig, PbxConfig
from hub.ingest.adapter import PbxAdapter
from hub.pbx.callcontrol import CallControlClient
from hub.pbx.token import TokenProvider
from hub.pbx.xapi import XapiClient
from hub.simulator import SimConfig, SimHandle, running_simulator
from hub.simulator.projection import Outage
from schemas.codec import parse_event
from schemas.events import Event
from tests.helpers import eventually, fresh_bus, wait_until

PBX = "main"


@dataclass
class Collector:
    """Every event stored in ML_EVENTS, in stream order (JetStream dedup applied: what the recorder would file)."""

    events: list[Event] = field(default_factory=list)

    def of(self, type_name: str) -> list[Event]:
        return [e for e in self.events if e.type == type_name]

    def types(self, pbx_callid: int | None = None) -> list[str]:
        return [e.type for e in self.events
                if pbx_callid is None or e.pbx_call_id == pbx_callid]  # fmt: skip


@contextlib.asynccontextmanager
async def collecting(nc: Client) -> AsyncIterator[Collector]:
    collector = Collector()

    async def on_msg(msg: Any) -> None:
        collector.events.append(parse_event(msg.data))
        await msg.ack()

    sub = await nc.jetstream().subscribe("ml.evt.>", cb=on_msg, ordered_consumer=True)
    try:
        yield collector
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


@dataclass
class IngestRig:
    sim: SimHandle
    nc: Client
    adapter: PbxAdapter
    stream: Collector
    pbx: PbxConfig
    outages: list[Outage] = field(default_factory=list)

    async def settled(self, timeout: float = 10.0, *, check_stream: bool = True) -> None:
        """Nothing left to read or publish, and no call waiting for its end grace."""
        outbox = self.adapter.outbox

        async def idle() -> bool:
            return (
                self.adapter.synced.is_set()
                and self.adapter.stats.frames >= self.sim.sim.frames_sent
                and self.adapter.idle
                and self.adapter.tracker.next_deadline() is None
                and outbox is not None
                and len(outbox) == 0
                and (not check_stream or len(self.stream.events) >= outbox.published - outbox.duplicates)
            )

        await wait_until(idle, timeout=timeout, what="ingest to settle")

    async def caught_up(self, timeout: float = 10.0) -> None:
        """Every frame the simulator sent is read and turned into events (published or still in the outbox)."""

        def done() -> bool:
            tracker = self.adapter.tracker
            return (self.adapter.stats.frames >= self.sim.sim.frames_sent and self.adapter.idle
                    and tracker.next_deadline() is None)  # fmt: skip

        await eventually(done, timeout=timeout, what="ingest to read every frame")

    async def wait(self, condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        await eventually(condition, timeout=timeout, what=what)

    async def drop_link(self) -> int:
        """Drop the websocket; returns the journal index where the outage starts."""
        start = len(self.sim.journal.entries)
        await self.sim.sim.drop_websockets()
        return start

    def resync_index(self, after: int) -> int:
        """The journal index of the hub's re-read (GET /callcontrol) after ``after``."""
        for entry in self.sim.journal.entries[after:]:
            if entry.kind == "request" and entry.detail.get("path") == "/callcontrol":
                return entry.index
        raise AssertionError("no re-read after the outage")


async def stream_events(nc: Client) -> list[Event]:
    """Every event stored in ML_EVENTS, read with a fresh consumer (survives nothing: call it at the end)."""
    js = nc.jetstream()
    total = (await js.stream_info("ML_EVENTS")).state.messages
    psub = await js.pull_subscribe("ml.evt.>", stream="ML_EVENTS")
    out: list[Event] = []
    try:
        while len(out) < total:
            for msg in await psub.fetch(min(500, total - len(out)), timeout=5):
                out.append(parse_event(msg.data))
                await msg.ack()
    finally:
        await psub.unsubscribe()
    return out


def adapter_for(
    nc: Client, sim: SimHandle, http: httpx.AsyncClient, config: IngestConfig | None, *, sim_clock: bool = False
) -> PbxAdapter:
    """``sim_clock``: the adapter reads the simulator's clock (an accelerated run: call ends, pauses and
    reconciliation windows in the PBX's time)."""
    pbx = PbxConfig(id=PBX, base_url=sim.base_url, client_id=sim.config.client_id,
                    client_secret=sim.config.client_secret)  # fmt: skip
    tokens = TokenProvider(http, pbx.client_id, pbx.secret())
    return PbxAdapter(nc, pbx, CallControlClient(http, tokens), tokens, xapi=XapiClient(http, tokens),
                      config=config or IngestConfig(call_end_grace_s=0.2),
                      clock=sim.sim.clock if sim_clock else time.time)  # fmt: skip


@contextlib.asynccontextmanager
async def ingest_rig(
    nats_url: str, sim_config: SimConfig | None = None, config: IngestConfig | None = None, *, sim_clock: bool = False
) -> AsyncIterator[IngestRig]:
    nc = await connect(nats_url, name="test-ingest")
    await fresh_bus(nc.jetstream())
    async with (
        running_simulator(sim_config or SimConfig()) as sim,
        httpx.AsyncClient(base_url=sim.base_url) as http,
        collecting(nc) as stream,
    ):
        adapter = adapter_for(nc, sim, http, config, sim_clock=sim_clock)
        stopping = asyncio.Event()
        task = asyncio.create_task(adapter.run(stopping))
        try:
            with anyio.fail_after(10):
                await adapter.synced.wait()
            yield IngestRig(sim=sim, nc=nc, adapter=adapter, stream=stream, pbx=adapter.pbx)
        finally:
            stopping.set()
            with anyio.fail_after(15):
                await task
    await nc.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
