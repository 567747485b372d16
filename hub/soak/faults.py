"""The faults: each one breaks a part of the running hub, waits until the break is visible, restores the part as a
supervisor would (compose ``restart: always``, systemd), and measures the recovery (D§11): from the fault to the
next event committed to the log, and, for a killed service, to that service being ready again.

- ``nats``: nats-server SIGKILLed once ingest holds events in its outbox, then started on the same port and store;
- ``postgres``: the database stopped (``immediate``: no checkpoint, like a crash) while the recorder writes, then
  started again (only with a restartable database, see :class:`Database`);
- ``recorder``, ``ingest``, ``worker``, ``coordinator``, ``agent-*``: the process group SIGKILLed and started again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from hub.logs import get_logger
from hub.soak.invariants import Recovery
from hub.soak.rig import HubRig

log = get_logger(__name__)

RECOVER_WITHIN_S = 30.0


class Database(Protocol):
    """A database the faults may crash and start again (a private cluster, never a shared server)."""

    def stop(self, mode: str = "fast") -> None: ...
    def start(self) -> None: ...


@dataclass(frozen=True)
class Injected:
    recovery: Recovery
    ready_s: float | None  # the killed service (or server) back
    commit_s: float | None  # the next event committed


async def _until(condition: Callable[[], Awaitable[bool]], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.05)
    return False


async def _recover(rig: HubRig, name: str, started: float, after_seq: int, services: list[str]) -> Injected:
    ready_s: float | None = None
    if await _until(lambda: _all_ready(rig, services), RECOVER_WITHIN_S):
        ready_s = time.monotonic() - started
    left = max(RECOVER_WITHIN_S - (time.monotonic() - started), 0.1)
    waited = await rig.next_commit(after_seq, left)
    commit_s = None if waited is None else time.monotonic() - started
    total = None if ready_s is None or commit_s is None else max(ready_s, commit_s)
    log.info("fault recovered", fault=name, ready_s=ready_s, commit_s=commit_s)
    return Injected(Recovery(name, total), ready_s, commit_s)


async def _all_ready(rig: HubRig, services: list[str]) -> bool:
    return all([await rig.ready(s) for s in services])


async def kill_service(rig: HubRig, name: str) -> Injected:
    started = time.monotonic()
    await rig.kill(name)
    after = await rig.last_seq() or 0
    rig.start(name)
    return await _recover(rig, name, started, after, [name])


async def kill_nats(rig: HubRig) -> Injected:
    started = time.monotonic()
    rig.kill_nats()

    async def holding() -> bool:  # ingest noticed: events wait in its outbox
        return (await rig.metric("ingest", "ml_ingest_outbox_events") or 0) > 0

    await _until(holding, 5.0)
    after = await rig.last_seq() or 0  # the recorder's batch in flight is committed by now
    rig.start_nats()
    return await _recover(rig, "nats", started, after, rig.names)


async def crash_database(rig: HubRig, database: Database) -> Injected:
    after = await rig.last_seq() or 0
    started = time.monotonic()
    await asyncio.to_thread(database.stop, "immediate")

    async def noticed() -> bool:  # the recorder reports its store not ready
        return not await rig.ready("recorder")

    await _until(noticed, 5.0)
    await asyncio.to_thread(database.start)
    return await _recover(rig, "postgres", started, after, ["recorder"])


def rotation(rig: HubRig, database: Database | None = None) -> list[tuple[str, Callable[[], Awaitable[Injected]]]]:
    """The faults a soak run cycles through, in order."""
    faults: list[tuple[str, Callable[[], Awaitable[Injected]]]] = [("nats", lambda: kill_nats(rig))]
    if database is not None:
        faults.append(("postgres", lambda: crash_database(rig, database)))
    for name in rig.names:
        faults.append((name, lambda name=name: kill_service(rig, name)))  # type: ignore[misc]
    return faults
