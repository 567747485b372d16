"""Fixtures: a running simulator and plain clients (httpx, websockets) that share no code with the hub's adapter."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from hub.simulator import SimConfig, SimHandle, running_simulator


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig()


@pytest.fixture
async def sim(sim_config: SimConfig) -> AsyncIterator[SimHandle]:
    async with running_simulator(sim_config) as handle:
        yield handle


async def fetch_token(handle: SimHandle, *, multipart: bool = False) -> str:
    fields = {"client_id": handle.config.client_id, "client_secret": handle.config.client_secret,
              "grant_type": "client_credentials"}  # fmt: skip
    async with httpx.AsyncClient(base_url=handle.base_url) as client:
        if multipart:
            r = await client.post("/connect/token", files={k: (None, v) for k, v in fields.items()})
        else:
            r = await client.post("/connect/token", data=fields)
    r.raise_for_status()
    token: str = r.json()["access_token"]
    return token


@pytest.fixture
async def api(sim: SimHandle) -> AsyncIterator[httpx.AsyncClient]:
    token = await fetch_token(sim)
    async with httpx.AsyncClient(base_url=sim.base_url, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


class Frames:
    """A websocket client collecting frames."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        import anyio

        with anyio.fail_after(timeout):
            frame: dict[str, Any] = json.loads(await self.ws.recv())
        return frame


async def open_ws(sim: SimHandle, token: str) -> Any:
    return await websockets.connect(sim.ws_url, additional_headers={"Authorization": f"Bearer {token}"})
