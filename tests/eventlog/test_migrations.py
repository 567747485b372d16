"""Migrations run up, down and up again on Postgres and SQLite, and the tables match the models."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from hub.eventlog.migrate import current, downgrade_async, script_location, upgrade_async

pytestmark = pytest.mark.anyio


def _head() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(script_location())).get_current_head()
    assert head is not None
    return head


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_up_down_up(log_url: str) -> None:
    assert await current(log_url) == _head()
    assert {"events", "dead_letters", "consumer_positions", "crm_records", "crm_outbox"} <= await _tables(log_url)
    await downgrade_async(log_url, "base")
    assert await current(log_url) is None
    assert not ({"events", "dead_letters", "consumer_positions", "crm_records", "crm_outbox"} & await _tables(log_url))
    await upgrade_async(log_url)
    assert await current(log_url) == _head()
    assert {"events", "dead_letters", "consumer_positions"} <= await _tables(log_url)


async def test_the_migration_matches_the_models(log_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from agents.crm.tables import metadata as crm_metadata
    from hub.eventlog.tables import metadata

    models = sa.MetaData()
    for table in (*metadata.tables.values(), *crm_metadata.tables.values()):
        table.to_metadata(models)
    engine = create_async_engine(log_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), models)
            )
    finally:
        await engine.dispose()
    assert [d for d in diff if d[0] != "remove_table" or d[1].name != "alembic_version"] == []
