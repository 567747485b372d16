from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client

from hub.bus import connect
from hub.logs import setup_logging
from tests.mcp.support import prepare_bus


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    # MCPServer configures root logging itself unless logging is configured first (STACK.md).
    setup_logging("WARNING", "console")


@pytest.fixture
async def nc(nats_server: str) -> AsyncIterator[Client]:
    client = await connect(nats_server, name="test-mcp")
    await prepare_bus(client)
    yield client
    await client.close()
