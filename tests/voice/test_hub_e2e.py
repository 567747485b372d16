"""Basma with the hub: a call at the route point (the simulator), commands through the bus and the worker, events
published to JetStream. The audio is in-memory until the simulator's participant streams exist."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from agents.basma.events import transcript_event
from agents.basma.hubcontrol import HubCallControl
from agents.basma.loopback import LoopbackAudio
from agents.basma.policy import Policy, PolicyBrain
from agents.basma.ports import CallInfo
from agents.basma.session import VoiceSession
from agents.basma.stt import WhisperStt
from agents.basma.tts import PiperTts
from hub.bus import EventPublisher, connect
from hub.bus.pull import BatchPuller
from hub.config import PbxConfig
from hub.pbx import CallControlClient, CallControlGateway, TokenProvider
from hub.sdk import CommandClient
from hub.simulator import SimHandle, running_simulator
from hub.worker.service import Worker, WorkerConfig
from schemas import subjects
from schemas.codec import parse_event
from schemas.common import LegRef
from schemas.events import EventBase, VoiceTranscript, VoiceTurn
from schemas.identity import deterministic_event_id, new_call_id
from tests.helpers import fresh_bus
from tests.voice.conftest import caller_speech
from tests.voice.support import agent_turns, until

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


@pytest.fixture
async def hub(nats_server: str) -> AsyncIterator[tuple[Client, SimHandle]]:
    nc: Client = await connect(nats_server, name="test-voice")
    await fresh_bus(nc.jetstream())
    async with running_simulator() as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        pbx = PbxConfig(id="main", base_url=sim.base_url, client_id="800", client_secret="sim-secret")
        rest = CallControlClient(http, TokenProvider(http, pbx.client_id, pbx.secret()))
        worker = Worker(nc, CallControlGateway(rest, pbx), config=WorkerConfig(rate_per_second=0))
        stopping = asyncio.Event()
        task = asyncio.create_task(worker.run(stopping))
        with anyio.fail_after(10):
            await worker.ready.wait()
        try:
            yield nc, sim
        finally:
            stopping.set()
            await task
    await nc.close()


async def voice_events(nc: Client, call_id: str, count: int) -> list[EventBase]:
    js = nc.jetstream()
    await js.add_consumer(subjects.EVENTS_STREAM, ConsumerConfig(
        durable_name="voice-test", ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
        filter_subject=subjects.call_filter(call_id),
    ))  # fmt: skip
    puller = await BatchPuller(nc, subjects.EVENTS_STREAM, "voice-test").start()
    seen: list[EventBase] = []
    try:
        with anyio.fail_after(10):
            while len([e for e in seen if e.type_name().startswith("voice.")]) < count:
                seen += [parse_event(m.data) for m in await puller.fetch(50, expires=1.0)]
    finally:
        await puller.stop()
    return [e for e in seen if e.type_name().startswith("voice.")]


async def test_basma_confirms_then_warm_transfers_through_the_worker_and_publishes_its_turns(
    hub: tuple[Client, SimHandle], whisper: WhisperStt, piper: PiperTts, policy: Policy
) -> None:
    nc, sim = hub
    sim.engine.place_call("+15550100", "800")  # the route point: the leg arrives Connected
    [leg] = sim.engine.participants("800")
    call = CallInfo(
        pbx_id="main",
        call_id=new_call_id(),
        leg=LegRef(dn="800", participant_id=leg.id, legid=leg.legid),
        caller_number="+15550100",
    )
    audio = LoopbackAudio()
    publisher = EventPublisher(nc.jetstream())
    session = VoiceSession(
        call,
        audio,
        stt=whisper,
        tts=piper,
        brain=PolicyBrain(policy),
        control=HubCallControl(CommandClient(nc), call),
        destinations=policy.destinations(),
        events=publisher,
    )
    task = asyncio.create_task(session.run())
    await until(lambda: len(agent_turns(session.dialogue)) == 1, "the greeting")
    audio.say(caller_speech("My internet is broken, I need technical help."), trailing_silence_ms=600)
    await until(lambda: len(agent_turns(session.dialogue)) == 2, "the confirmation")
    audio.say(caller_speech("Yes, please."), trailing_silence_ms=600)
    result = await asyncio.wait_for(task, 30)

    assert result.outcome == "transferred"
    assert agent_turns(result.dialogue)[-1].text == "Putting you through to support now."
    [ringing] = sim.engine.participants("102")
    attached = sim.engine.calls[ringing.callid].attached
    assert attached["summary"].startswith("Caller asked for support.")
    assert "broken" in attached["summary"]

    events = await voice_events(nc, call.call_id, len(result.dialogue) + 1)
    turns = [e for e in events if isinstance(e, VoiceTurn)]
    assert [t.data.role for t in turns] == [t.role for t in result.dialogue]
    assert [t.data.text for t in turns] == [t.text for t in result.dialogue]
    assert turns[0].event_id == deterministic_event_id("voice.turn", "main", call.call_id, "basma", 0)
    assert all(t.data.latency_ms is not None for t in turns[1:])
    [transcript] = [e for e in events if isinstance(e, VoiceTranscript)]
    assert transcript.event_id == transcript_event(call, result.dialogue, "").event_id
    assert "Outcome: transferred" in transcript.data.summary
    assert transcript.issued_by == "agent:basma"
