"""Each test gets a connection to a bus emptied of every stream and bucket (the agent feed included)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client

from hub.bus import connect
from tests.agents.support import fresh_connection


@pytest.fixture
async def nc(nats_server: str) -> AsyncIterator[Client]:
    async with fresh_connection(nats_server, "test-agents") as client:
        yield client


@pytest.fixture
async def nc2(nats_server: str, nc: Client) -> AsyncIterator[Client]:
    """A second connection (another process's view: a replica, another agent)."""
    client = await connect(nats_server, name="test-agents-2")
    yield client
    await client.close()
