"""Faults against the whole hub running as processes, under traffic from the load driver; each run is judged by
the invariants of D§4 against the simulator's ground truth, and the recovery times are printed (D§11)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hub.soak.faults import crash_database, kill_nats, kill_service
from hub.soak.traffic import load
from hub.supervise import Supervisor
from tests.faults.conftest import RATE, assert_holds, hub, judge
from tests.helpers import PrivatePostgres

pytestmark = [pytest.mark.anyio, pytest.mark.nats, pytest.mark.postgres]


async def test_nats_killed_mid_stream_recovers_and_loses_nothing(tmp_path: Path, postgres_url: str) -> None:
    async with hub(tmp_path, postgres_url) as rig:
        async with load(rig.sim, events_per_s=RATE, seconds=4) as traffic:
            await traffic.placed(3)
            injected = [await kill_nats(rig)]
        assert_holds(await judge(rig, injected))
        assert rig.nats.alive()


async def test_postgres_crashed_mid_batch_recovers_and_loses_nothing(
    tmp_path: Path, private_cluster: PrivatePostgres
) -> None:
    async with hub(tmp_path, private_cluster.url) as rig:
        async with load(rig.sim, events_per_s=RATE, seconds=4) as traffic:
            await traffic.placed(3)
            injected = [await crash_database(rig, private_cluster)]
        assert_holds(await judge(rig, injected))


async def test_recorder_worker_coordinator_and_agents_killed_recover_and_nothing_runs_twice(
    tmp_path: Path, postgres_url: str
) -> None:
    async with hub(tmp_path, postgres_url) as rig:
        victims = ["recorder", "worker", "coordinator", "agent-routing", "agent-crm"]
        async with load(rig.sim, events_per_s=RATE, seconds=6) as traffic:
            await traffic.placed(3)
            injected = [await kill_service(rig, name) for name in victims]
        assert_holds(await judge(rig, injected))
        assert all(rig.service(name).running for name in victims)


def _open_handles(path: Path) -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if fd.exists() and fd.resolve() == path)


async def test_a_service_started_again_after_a_crash_keeps_one_log_handle(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs", {})
    service = sup.add("short", ["--help"], health=False)
    for _ in range(4):  # it exits at once each time, as a crashed service would; up/the rig start it again
        sup.start(service)
        assert service.process is not None
        await asyncio.to_thread(service.process.wait)
        assert service.log_path is not None
        assert _open_handles(service.log_path) == 1
    await sup.stop_all()
    assert _open_handles(service.log_path) == 0
    assert "Usage" in service.tail(40)
