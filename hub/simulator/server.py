"""Running the simulator: in this event loop for tests (``running_simulator``) or as ``masterlinc sim``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from hub.simulator.app import Simulator
from hub.simulator.clock import SimClock
from hub.simulator.config import SimConfig
from hub.simulator.directory import Directory, User
from hub.simulator.engine import CallEngine, Leg, SimError
from hub.simulator.faults import Faults
from hub.simulator.journal import Journal
from hub.simulator.media import Media, Playout, Utterance
from hub.simulator.runner import ScenarioRun, run_scenario
from hub.simulator.scenario import Scenario, load_scenario
from hub.simulator.sound import Synthesizer


@dataclass
class SimHandle:
    """A running simulator: its URLs, the engine to drive calls, the ground-truth journal, caller speech and the
    playout buffers, presence and chat (the XAPI directory)."""

    sim: Simulator
    host: str
    port: int
    tls: bool = False

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}/callcontrol/ws"

    @property
    def engine(self) -> CallEngine:
        return self.sim.engine

    @property
    def journal(self) -> Journal:
        return self.sim.engine.journal

    @property
    def config(self) -> SimConfig:
        return self.sim.config

    @property
    def xapi_url(self) -> str:
        return f"{self.base_url}/xapi/v1"

    @property
    def clock(self) -> SimClock:
        return self.sim.clock

    @property
    def media(self) -> Media:
        return self.sim.media

    @property
    def directory(self) -> Directory:
        return self.sim.directory

    @property
    def faults(self) -> Faults:
        """Inject faults: ``drop_websockets()``, ``refuse_websockets(status=, seconds=|count=)``,
        ``rest_errors(status=, count=|seconds=, retry_after=, paths=)``, ``latency(delay_s=, ...)``,
        ``revoke_tokens()``, ``duplicate_events(count=)``, ``reorder_events(count=, window=)``, ``clear()``."""
        return self.sim.faults

    # ------------------------------------------------------------------ conveniences for tests

    def route_point_leg(self, callid: int) -> Leg:
        """The call's leg on the application's route point (the leg the hub controls and streams)."""
        leg = next((leg for leg in self.engine.legs_of(callid) if leg.dn == self.config.client_id), None)
        if leg is None:
            raise SimError(404, f"call {callid} has no leg on the route point {self.config.client_id}")
        return leg

    async def say(
        self, participant_id: int, text: str | None = None, *, pcm: bytes | None = None, wav: Path | None = None,
        label: str = "",
    ) -> Utterance:  # fmt: skip
        """The remote party of a Connected leg speaks: ``text`` through the synthesizer, raw s16le 8 kHz ``pcm``,
        or a ``wav`` file. Returns the utterance with its ground-truth start and end (also in the journal)."""
        return await self.sim.say(participant_id, text, pcm=pcm, wav=wav, label=label)

    async def run_scenario(self, scenario: Scenario | Path) -> ScenarioRun:
        """Run a scenario (or a scenario file, validated first) on this simulator, on its clock."""
        if isinstance(scenario, Path):
            scenario = load_scenario(scenario)
        return await run_scenario(self.sim, scenario)

    def playout(self, participant_id: int) -> Playout:
        """What the application played to the leg's remote party (POST /stream): pcm, replies, underruns."""
        return self.media.playout(participant_id)

    def set_presence(self, number: str, **changes: Any) -> User:
        """``profile=``, ``queue_status=`` ("LoggedIn"/"LoggedOut"), ``registered=``: journalled as presence."""
        return self.directory.set_presence(number, **changes)

    def add_chat_message(self, from_no: str, message: str, **fields: Any) -> dict[str, Any]:
        """A chat/SMS message arrives (ChatHistoryView row, journalled as chat); see Directory.add_chat_message."""
        return self.directory.add_chat_message(from_no, message, **fields)

    def set_synthesizer(self, synthesizer: Synthesizer) -> None:
        self.sim.synthesizer = synthesizer


class _QuietServer(uvicorn.Server):
    """No signal handlers of its own: the test or the CLI owns the process's signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def running_simulator(
    config: SimConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: SimClock | None = None,
    synthesizer: Synthesizer | None = None,
    tls: tuple[Path, Path] | None = None,
) -> AsyncIterator[SimHandle]:
    """The simulator on host:port (0 picks one) until the block ends; ``tls`` = (certificate chain, key) serves
    https/wss, as a real PBX does."""
    config = config or SimConfig()
    engine = CallEngine(config, clock=clock or SimClock(config.clock_speed))
    sim = Simulator(engine) if synthesizer is None else Simulator(engine, synthesizer=synthesizer)
    server = _QuietServer(
        uvicorn.Config(
            sim.asgi,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            ws="websockets-sansio",
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
        )
    )
    serving = asyncio.create_task(server.serve())
    repeater = asyncio.create_task(sim.repeater())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.002)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield SimHandle(sim=sim, host=host, port=bound, tls=tls is not None)
    finally:
        repeater.cancel()
        await sim.drop_websockets()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await repeater
        await serving
