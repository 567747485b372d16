"""The whole path for Basma, as tests/coordinator/test_with_ingest.py runs it, plus audio: the simulator (a caller
speaking with the piper voice, a real-time playout buffer), ingest (events, and the PBX token served on the bus),
the coordinator (assigns route-point calls to basma), Basma run by the agent SDK (its audio over the participant
streams), the worker (commands, lease guard) and the recorder (the event log, SQLite)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
from nats.aio.client import Client

from agents.basma.brain import Brain
from agents.basma.caller import PiperCaller, trim_silence
from agents.basma.config import VoiceStack
from agents.basma.policy import Policy, PolicyBrain
from agents.basma.service import Basma
from agents.basma.session import SessionResult, VoiceSession
from agents.basma.settings import VoiceConfig
from agents.basma.stt import WhisperStt
from agents.basma.tts import PiperTts
from hub.config import PbxConfig, RecorderConfig
from hub.coordinator import Coordinator
from hub.eventlog import EventStore
from hub.eventlog.migrate import upgrade_async
from hub.recorder import Recorder
from hub.runner import Health
from hub.sdk import AgentRuntime
from hub.simulator import Call, Leg, Playout, SimHandle, Utterance, running_simulator
from schemas.codec import parse_event
from schemas.events import EventBase
from tests.agents.support import FAST, PBX, ROUTE_POINT, ingest_and_worker, running, running_coordinator
from tests.helpers import eventually, wait_until

RULES = "rules:\n  - {name: everyone, match: {}, action: {assign: basma}}\n"


@dataclass
class LiveCall:
    """One simulated caller on the route point, and Basma's session for it."""

    rig: LiveRig
    call: Call
    leg: Leg
    session: VoiceSession

    @property
    def playout(self) -> Playout:
        return self.rig.sim.playout(self.leg.id)

    @property
    def call_id(self) -> str:
        return self.session.call.call_id

    async def say(self, text: str) -> Utterance:
        return await self.rig.sim.say(self.leg.id, text)

    def agent_turns(self) -> int:
        return sum(1 for t in self.session.dialogue if t.role == "agent")

    async def wait_turns(self, count: int, what: str, timeout: float = 20.0) -> None:
        await eventually(lambda: self.agent_turns() >= count, timeout=timeout, what=what)

    def loud_ms(self) -> float:
        """How much of the reply audio the simulator has received is loud (speech), in ms."""
        return sum(r.last_loud_played_at - r.first_loud_played_at for r in self.playout.replies) * 1000

    def received_since(self, offset: int) -> bytes:
        """What the simulator received from Basma since byte ``offset`` of its playout, without the silence around."""
        return trim_silence(bytes(self.playout.pcm[offset:]))

    def hang_up(self) -> None:
        self.rig.sim.engine.hangup(self.call.callid)

    async def result(self, timeout: float = 20.0) -> SessionResult:
        """The session's result once it has finished (and published its transcript)."""
        await eventually(lambda: self.call_id in self.rig.basma.finished, timeout=timeout, what="the session's end")
        return self.rig.basma.finished[self.call_id]

    def requests(self) -> list[str]:
        """The call-control actions the simulator received for this leg, in order (audio streams left out)."""
        prefix = f"/callcontrol/{self.leg.dn}/participants/{self.leg.id}/"
        return [
            str(e.detail["path"]).removeprefix(prefix)
            for e in self.rig.sim.journal.of("request")
            if str(e.detail["path"]).startswith(prefix) and e.detail["method"] == "POST"
            and not str(e.detail["path"]).endswith("/stream")
        ]  # fmt: skip


@dataclass
class LiveRig:
    nc: Client
    sim: SimHandle
    basma: Basma
    runtime: AgentRuntime
    store: EventStore
    whisper: WhisperStt

    async def call(self, caller: str = "+15550100") -> LiveCall:
        """A call to the route point; returns once Basma's session for it exists."""
        call = self.sim.engine.place_call(caller, ROUTE_POINT, did="+15550199")
        leg = self.sim.route_point_leg(call.callid)
        await eventually(lambda: self._session_of(leg) is not None, what="basma to take the call")
        session = self._session_of(leg)
        assert session is not None
        return LiveCall(self, call, leg, session)

    def _session_of(self, leg: Leg) -> VoiceSession | None:
        return next((c.session for c in self.basma.calls.values() if c.leg.participant_id == leg.id), None)

    async def transcribe(self, pcm: bytes) -> str:
        return await self.whisper.transcribe(pcm)

    async def logged(self, call_id: str, count: Callable[[list[EventBase]], bool], what: str) -> list[EventBase]:
        """The call's events in the event log once ``count`` holds for them."""
        found: list[EventBase] = []

        async def ready() -> bool:
            nonlocal found
            found = [parse_event(e.payload) for e in await self.store.call_timeline(call_id)]
            return count(found)

        await wait_until(ready, timeout=15, what=what)
        return found


@dataclass
class HubRig:
    """Everything but Basma."""

    nc: Client
    sim: SimHandle
    store: EventStore
    coordinator: Coordinator


@contextlib.asynccontextmanager
async def hub_rig(nc: Client, tmp_path: Path, piper: PiperTts) -> AsyncIterator[HubRig]:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
    await upgrade_async(db_url)
    async with (
        running_simulator(synthesizer=PiperCaller(piper)) as sim,
        httpx.AsyncClient(base_url=sim.base_url) as http,
        await EventStore.open(db_url) as store,
    ):
        adapter, worker = ingest_and_worker(nc, http, sim.base_url)
        recorder = Recorder(nc.jetstream(), store, RecorderConfig(fetch_timeout_s=0.1), Health())
        stopping = asyncio.Event()
        tasks = [asyncio.create_task(s.run(stopping)) for s in (adapter, worker, recorder)]
        try:
            with anyio.fail_after(10):
                await adapter.synced.wait()
                await worker.ready.wait()
            async with running_coordinator(nc, RULES) as coordinator:
                yield HubRig(nc=nc, sim=sim, store=store, coordinator=coordinator)
        finally:
            stopping.set()
            with anyio.fail_after(15):
                await asyncio.gather(*tasks)


@contextlib.asynccontextmanager
async def live_rig(
    nc: Client,
    tmp_path: Path,
    *,
    whisper: WhisperStt,
    piper: PiperTts,
    policy: Policy,
    config: VoiceConfig | None = None,
    new_brain: Callable[[], Brain] | None = None,
) -> AsyncIterator[LiveRig]:
    """``new_brain`` replaces the scripted policy brain (e.g. the Anthropic brain against a fake Messages API)."""
    stack = VoiceStack(stt=whisper, tts=piper, policy=policy, new_brain=new_brain or (lambda: PolicyBrain(policy)))
    async with hub_rig(nc, tmp_path, piper) as hub:
        pbx = PbxConfig(id=PBX, base_url=hub.sim.base_url, client_id=ROUTE_POINT)
        basma = Basma(config or VoiceConfig(stream_connect_timeout_s=5.0), [pbx], stack=stack)
        async with running(basma.agent, nc, FAST) as runtime:
            await eventually(lambda: hub.coordinator.is_up("basma"), what="the coordinator to see basma")
            yield LiveRig(nc=nc, sim=hub.sim, basma=basma, runtime=runtime, store=hub.store, whisper=whisper)
