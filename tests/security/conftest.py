from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client

from hub.bus import connect
from hub.logs import setup_logging
from tests.mcp.support import prepare_bus


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    setup_logging("WARNING", "console")  # before any MCPServer is built (STACK.md)


@pytest.fixture
async def nc(nats_server: str) -> AsyncIterator[Client]:
    client = await connect(nats_server, name="test-security")
    await prepare_bus(client)
    yield client
    await client.close()
