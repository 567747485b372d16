"""Each test gets a bus emptied of every stream and bucket, and a migrated database of its own (SQLite; for the
store and outbox suites, Postgres too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.eventlog.migrate import upgrade
from tests.agents.conftest import db_url, nc

__all__ = ["db_url", "nc", "store_url"]


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
