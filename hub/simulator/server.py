"""Running the simulator: in this event loop for tests (``running_simulator``) or as ``masterlinc sim``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import uvicorn

from hub.simulator.app import Simulator
from hub.simulator.config import SimConfig
from hub.simulator.engine import CallEngine
from hub.simulator.journal import Journal


@dataclass
class SimHandle:
    """A running simulator: its URLs, the engine to drive calls, the ground-truth journal."""

    sim: Simulator
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/callcontrol/ws"

    @property
    def engine(self) -> CallEngine:
        return self.sim.engine

    @property
    def journal(self) -> Journal:
        return self.sim.engine.journal

    @property
    def config(self) -> SimConfig:
        return self.sim.config


class _QuietServer(uvicorn.Server):
    """No signal handlers of its own: the test or the CLI owns the process's signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def running_simulator(
    config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[SimHandle]:
    sim = Simulator(CallEngine(config or SimConfig()))
    server = _QuietServer(
        uvicorn.Config(sim.app, host=host, port=port, log_level="warning", lifespan="off", ws="websockets-sansio")
    )
    serving = asyncio.create_task(server.serve())
    repeater = asyncio.create_task(sim.repeater())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.002)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield SimHandle(sim=sim, host=host, port=bound)
    finally:
        repeater.cancel()
        await sim.drop_websockets()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await repeater
        await serving
