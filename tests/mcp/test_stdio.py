"""A real ``python -m hub.mcp serve --transport stdio`` subprocess, both eras, working the worker through the bus."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from nats.aio.client import Client as Nats

from tests.mcp.support import RecordingGateway, new_pbx, running_worker

pytestmark = [pytest.mark.nats, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_stdio_server_places_a_call_through_the_worker(
    nc: Nats, nats_server: str, tmp_path: Path, mode: str
) -> None:
    pbx = new_pbx()
    gateway = RecordingGateway()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "NATS_URL": nats_server,
        "ML_DATA_DIR": str(tmp_path),
        "ML_LOG_LEVEL": "WARNING",
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "hub.mcp", "serve", "--transport", "stdio", "--pbx", pbx], env=env
    )
    async with running_worker(nc, pbx, gateway), Client(params, raise_exceptions=True, mode=mode) as client:
        with anyio.fail_after(20):
            names = {t.name for t in (await client.list_tools()).tools}
            result = await client.call_tool("make_call", {"from_extension": "201", "to": "+14155550100"})
    assert "transfer_call" in names
    assert result.structured_content is not None and result.structured_content["ok"]
    assert [cmd.issued_by for cmd in gateway.calls] == ["mcp:local"]
