"""``masterlinc sim``: run the simulator as a standalone PBX for the hub (or any 3CX client) to talk to."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import yaml

from hub.simulator.config import SimConfig
from hub.simulator.server import running_simulator


def load_config(path: Path | None, **overrides: Any) -> SimConfig:
    """A YAML or JSON file (keys of :class:`SimConfig`), then command-line overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        text = path.read_text()
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: the simulator config must be a mapping of SimConfig fields")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return SimConfig.model_validate(data)


async def serve(config: SimConfig, host: str, port: int, *, announce: bool = True) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_simulator(config, host=host, port=port) as sim:
        if announce:
            print(f"3CX simulator at {sim.base_url} (websocket {sim.ws_url})", flush=True)
            print(f"client id (route point DN): {config.client_id}; extensions: "
                  f"{', '.join(e.dn for e in config.extensions)}", flush=True)  # fmt: skip
        await stop.wait()
