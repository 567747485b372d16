"""The same event log suite runs on SQLite (embedded default) and Postgres (production)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from hub.eventlog import EventStore
from hub.eventlog.migrate import upgrade
from hub.eventlog.tables import consumer_positions, dead_letters, events

_migrated: set[str] = set()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    if url not in _migrated:
        upgrade(url)
        _migrated.add(url)
    return url


@pytest.fixture
async def store(log_url: str) -> AsyncIterator[EventStore]:
    store = await EventStore.open(log_url)
    async with store.begin() as conn:
        for table in (events, dead_letters, consumer_positions):
            await conn.execute(sa.delete(table))
    yield store
    await store.close()
