"""Each test gets a bus emptied of every stream and bucket, and a migrated SQLite database of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from hub.eventlog.migrate import upgrade_async
from tests.agents.support import fresh_connection


@pytest.fixture
async def nc(nats_server: str) -> AsyncIterator[Client]:
    async with fresh_connection(nats_server, "test-routing") as client:
        yield client


@pytest.fixture
async def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    await upgrade_async(url)
    return url
