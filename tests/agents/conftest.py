"""Each test gets a connection to a bus emptied of every stream and bucket (the agent feed included).

The coordinator, routing and CRM suites use the same fixtures (their conftests import them from here).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from hub.bus import connect
from hub.eventlog.migrate import upgrade_async
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


@pytest.fixture
async def db_url(tmp_path: Path) -> str:
    """A migrated SQLite database of the test's own."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    await upgrade_async(url)
    return url
