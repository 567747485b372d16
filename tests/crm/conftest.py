"""Each test gets a bus emptied of every stream and bucket, and a migrated database of its own (SQLite; for the
store and outbox suites, Postgres too)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from hub.eventlog.migrate import upgrade, upgrade_async
from tests.agents.support import fresh_connection


@pytest.fixture
async def nc(nats_server: str) -> AsyncIterator[Client]:
    async with fresh_connection(nats_server, "test-crm") as client:
        yield client


@pytest.fixture
async def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    await upgrade_async(url)
    return url


_migrated: set[str] = set()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same CRM suite on SQLite (the embedded default) and Postgres (production), migrated."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    if url not in _migrated:
        upgrade(url)
        _migrated.add(url)
    return url
