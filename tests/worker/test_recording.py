"""Hub-side recording end to end: a command through the worker, the simulator's participant stream in, the hub's own
playback mixed in from its audio tap, a WAV in the recordings store, recording.started / stopped events."""

from __future__ import annotations

import array
import asyncio
import math
import sys
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from nats.aio.client import Client

from hub.audio.participant import play_to_participant
from hub.audio.tap import AudioTap
from hub.audio.writer import PacedWriter
from hub.bus import EventPublisher, connect
from hub.bus.kv import RECORDINGS, open_bucket
from hub.config import PbxConfig
from hub.pbx import CallControlClient, CallControlGateway, TokenProvider
from hub.sdk import CommandClient
from hub.simulator import SimConfig, SimHandle, running_simulator, tone
from hub.worker.recording import HubRecorder
from hub.worker.service import Worker, WorkerConfig
from schemas import commands as c
from schemas.common import ErrorCode, LegRef
from schemas.events import EventBase
from schemas.identity import new_call_id
from tests.helpers import eventually, fresh_bus
from tests.ingest.conftest import stream_events

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


def power_at(samples: array.array[int], hz: float, rate: int = 8000) -> float:
    """Goertzel: the power of one frequency in the samples, normalised by their number."""
    k = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - k * s1 * s2) / max(1, len(samples)) ** 2


def read_wav(path: Path) -> array.array[int]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        samples = array.array("h", wav.readframes(wav.getnframes()))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


@dataclass
class Rig:
    sim: SimHandle
    nc: Client
    client: CommandClient
    http: httpx.AsyncClient
    tokens: TokenProvider
    recorder: HubRecorder


@pytest.fixture
async def rig(nats_server: str, tmp_path: Path) -> AsyncIterator[Rig]:
    nc = await connect(nats_server, name="test-recording")
    await fresh_bus(nc.jetstream())
    js = nc.jetstream()
    publisher = EventPublisher(js)

    async def publish(event: EventBase) -> None:
        await publisher.publish(event)
        await publisher.flush()

    async with running_simulator(SimConfig()) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        pbx = PbxConfig(id="main", base_url=sim.base_url, client_id="800", client_secret="sim-secret")
        tokens = TokenProvider(http, pbx.client_id, pbx.secret())
        recorder = HubRecorder(nc, http, tokens, tmp_path / "rec", await open_bucket(js, RECORDINGS), publish,
                               holder="test")  # fmt: skip
        gateway = CallControlGateway(CallControlClient(http, tokens), pbx, recorder=recorder)
        worker = Worker(nc, gateway, config=WorkerConfig(rate_per_second=0))
        stopping = asyncio.Event()
        task = asyncio.create_task(worker.run(stopping))
        with anyio.fail_after(10):
            await worker.ready.wait()
        try:
            yield Rig(sim, nc, CommandClient(nc), http, tokens, recorder)
        finally:
            await recorder.close()
            stopping.set()
            await task
    await nc.close()


def _cmd(cls: type[c.CommandBase], call_id: str, leg: LegRef) -> Any:
    return cls(pbx_id="main", issued_by="agent:test", call_id=call_id, leg=leg)


async def test_a_recording_contains_the_callers_tone_and_the_hubs_own_voice(rig: Rig) -> None:
    call = rig.sim.engine.place_call("+15550100", "800")
    leg = rig.sim.route_point_leg(call.callid)
    target = LegRef(dn="800", participant_id=leg.id, legid=leg.legid)
    call_id = new_call_id()
    started = await rig.client.send(_cmd(c.StartRecording, call_id, target))
    assert started.ok, started.error
    location = started.result["location"]
    assert location.startswith("file://") and location.endswith(".wav")
    await rig.sim.say(leg.id, pcm=tone(440, 1500))  # the caller's side
    writer = PacedWriter(tap=AudioTap(rig.nc, "main", call_id, leg.id), idle_silence=False)
    writer.write(tone(1000, 1000))  # the hub's side, played to the leg and tapped for the recorder
    writer.flush()
    posting = asyncio.create_task(play_to_participant(rig.http, rig.tokens, "800", leg.id, writer.frames()))
    await eventually(lambda: writer.drained.is_set() and not rig.recorder.active[started.result["recording_id"]]
                     ._ahead, timeout=10, what="the hub's tone to be played and mixed")  # fmt: skip
    await eventually(lambda: rig.recorder.active[started.result["recording_id"]].seconds >= 1.6, timeout=10,
                     what="1.6 s recorded")  # fmt: skip
    stopped = await rig.client.send(_cmd(c.StopRecording, call_id, target))
    assert stopped.ok, stopped.error
    writer.cancel()
    await posting
    samples = read_wav(Path(location.removeprefix("file://")))
    assert len(samples) >= 8000
    hz440, hz1000, hz2200 = power_at(samples, 440), power_at(samples, 1000), power_at(samples, 2200)
    assert hz440 > 100 * hz2200, (hz440, hz2200)  # the caller's tone is in the file
    assert hz1000 > 100 * hz2200, (hz1000, hz2200)  # and the hub's own voice is mixed in
    events = await stream_events(rig.nc)
    types = [e.type for e in events if e.type.startswith("recording.")]
    assert types == ["recording.started", "recording.stopped"]
    [done] = [e for e in events if e.type == "recording.stopped"]
    assert done.data.location == location and done.data.seconds >= 1.6 and done.data.bytes > 16_000


async def test_a_recording_ends_with_the_call(rig: Rig) -> None:
    call = rig.sim.engine.place_call("+15550100", "800")
    leg = rig.sim.route_point_leg(call.callid)
    started = await rig.client.send(_cmd(c.StartRecording, new_call_id(), LegRef(dn="800", participant_id=leg.id)))
    assert started.ok, started.error
    await rig.sim.say(leg.id, pcm=tone(440, 300))
    rig.sim.engine.hangup(call.callid)

    async def stopped() -> bool:
        return any(e.type == "recording.stopped" for e in await stream_events(rig.nc))

    from tests.helpers import wait_until

    await wait_until(stopped, what="recording.stopped after the hang-up")
    assert rig.recorder.active == {}


async def test_recording_is_honest_about_what_3cx_allows(rig: Rig) -> None:
    rig.sim.engine.place_call("+15550100", "101")
    [ringing] = rig.sim.engine.participants("101")
    other_dn = await rig.client.send(_cmd(c.StartRecording, new_call_id(), LegRef(dn="101", participant_id=ringing.id)))
    assert other_dn.error is not None and other_dn.error.code is ErrorCode.NOT_SUPPORTED
    assert "own DN (800" in other_dn.error.message
    nothing = await rig.client.send(_cmd(c.StopRecording, new_call_id(), LegRef(dn="800", participant_id=99)))
    assert nothing.error is not None and nothing.error.code is ErrorCode.INVALID_STATE
