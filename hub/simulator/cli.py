"""``masterlinc sim``: run the simulator as a standalone PBX for the hub (or any 3CX client) to talk to, optionally
playing a scenario (``--scenario FILE``) once a client is connected."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from hub.simulator.clock import SimClock
from hub.simulator.config import SimConfig
from hub.simulator.runner import describe
from hub.simulator.scenario import Scenario, ScenarioError
from hub.simulator.server import running_simulator


def load_config(path: Path | None, scenario: Scenario | None = None, **overrides: Any) -> SimConfig:
    """A YAML or JSON file (keys of :class:`SimConfig`), then the scenario's ``config``, then command-line flags."""
    data: dict[str, Any] = {}
    if path is not None:
        text = path.read_text()
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: the simulator config must be a mapping of SimConfig fields")
        data.update(loaded)
    if scenario is not None:
        data.update(scenario.config)
        if scenario.speed is not None:
            data["clock_speed"] = scenario.speed
    data.update({k: v for k, v in overrides.items() if v is not None})
    return SimConfig.model_validate(data)


async def serve(
    config: SimConfig,
    host: str,
    port: int,
    *,
    announce: bool = True,
    scenario: Scenario | None = None,
    wait_for_client: bool = True,
    exit_after: bool = False,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_simulator(config, host=host, port=port, clock=SimClock(config.clock_speed)) as sim:
        if announce:
            print(f"3CX simulator at {sim.base_url} (websocket {sim.ws_url})", flush=True)
            extensions = ", ".join(e.dn for e in config.extensions)
            print(f"client id (route point DN): {config.client_id}; extensions: {extensions}", flush=True)
            print(f"driving API (faults, calls, presence, chat, journal): {sim.base_url}/_sim", flush=True)
        if scenario is not None:
            if wait_for_client:
                print("waiting for a websocket client before running the scenario ...", flush=True)
                waiting = asyncio.create_task(sim.sim.client_connected.wait())
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                stopping.cancel()
            if not stop.is_set():
                running = asyncio.create_task(sim.run_scenario(scenario))
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not running.done():
                    running.cancel()
                    return 0
                try:
                    print(json.dumps(describe(running.result())), flush=True)
                except ScenarioError as exc:
                    print(f"error: {exc}", file=sys.stderr, flush=True)
                    return 1
                if exit_after:
                    return 0
        await stop.wait()
    return 0
