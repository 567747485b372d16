"""Test helpers: waiting on conditions (never fixed sleeps), private service processes."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from hub import natsd


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "",
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds saying what was awaited."""
    try:
        with anyio.fail_after(timeout):
            while not await condition():  # noqa: ASYNC110 - the condition is in another process or a database
                await anyio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}") from None


async def eventually(
    condition: Callable[[], bool], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> None:
    """:func:`wait_until` for a plain (synchronous) condition on in-process state."""

    async def check() -> bool:
        return condition()

    await wait_until(check, timeout=timeout, interval=interval, what=what)


@dataclass
class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port (Debian's binaries, run as the postgres user)."""

    bindir: Path
    datadir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args]),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", opts, "-l", str(self.datadir / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def private_postgres(port: int) -> PrivatePostgres | None:
    """A new cluster, or None when Debian's PostgreSQL binaries are not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        return None
    bindir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="ml-pg-"))
    datadir = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    subprocess.run(
        _as_postgres([str(bindir / "initdb"), "-U", "postgres", "-A", "trust", "--no-sync", "-D", str(datadir)]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    return PrivatePostgres(bindir=bindir, datadir=datadir, port=port)


async def fresh_bus(js: Any) -> None:
    """Every stream and bucket of the hub deleted and the streams created again: each test starts from nothing."""
    from nats.js.errors import BucketNotFoundError, NotFoundError

    from hub.bus import ensure_streams
    from hub.bus.kv import ALL_BUCKETS
    from hub.config import BusConfig
    from schemas import subjects

    for name in (subjects.EVENTS_STREAM, subjects.COMMANDS_STREAM, subjects.DLQ_STREAM, subjects.FEED_STREAM):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)
    for bucket in ALL_BUCKETS:
        with contextlib.suppress(NotFoundError, BucketNotFoundError):
            await js.delete_key_value(bucket.name)
    await ensure_streams(js, BusConfig())


class RestartableNats:
    """A private nats-server on a fixed port and store, killed and started again by the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.server = natsd.start(store_dir=tmp_path / "js")
        self.url = self.server.url

    def kill(self) -> None:
        self.server.kill()

    def restart(self) -> None:
        self.server = natsd.start(store_dir=self.server.store_dir, port=self.server.port)


@contextlib.contextmanager
def private_nats(tmp_path: Path) -> Iterator[RestartableNats]:
    nats = RestartableNats(tmp_path)
    try:
        yield nats
    finally:
        nats.server.stop()
