"""Faults against the whole hub running as processes, under traffic from the load driver; each run is judged by
the invariants of D§4 against the simulator's ground truth, and the recovery times are printed (D§11)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from hub import natsd
from hub.bus import connect
from hub.bus.kv import CALL_IDS, INGEST_STATE, open_bucket
from hub.ingest.calls import CallRegistry
from hub.ingest.outbox import Outbox
from hub.soak.faults import crash_database, kill_nats, kill_service
from hub.soak.traffic import load
from hub.supervise import Supervisor
from tests.agents.support import PBX, CallScript
from tests.faults.conftest import RATE, assert_holds, hub, judge
from tests.helpers import PrivatePostgres, eventually, fresh_bus

pytestmark = [pytest.mark.anyio, pytest.mark.nats, pytest.mark.postgres]


async def test_nats_killed_five_times_mid_stream_recovers_each_time_and_loses_nothing(
    tmp_path: Path, own_postgres_url: str
) -> None:
    async with hub(tmp_path, own_postgres_url) as rig:
        async with load(rig.sim, events_per_s=RATE, seconds=6) as traffic:
            injected = []
            for n in range(5):  # a long run once stalled ingest after the 4th restart
                await traffic.placed(3 + 6 * n)
                injected.append(await kill_nats(rig))
        assert_holds(await judge(rig, injected))
        assert rig.nats.alive() and len(injected) == 5


async def test_postgres_crashed_mid_batch_recovers_and_loses_nothing(
    tmp_path: Path, private_cluster: PrivatePostgres
) -> None:
    async with hub(tmp_path, private_cluster.url) as rig:
        async with load(rig.sim, events_per_s=RATE, seconds=4) as traffic:
            await traffic.placed(3)
            injected = [await crash_database(rig, private_cluster)]
        assert_holds(await judge(rig, injected))


async def test_recorder_worker_coordinator_and_an_agent_killed_recover_and_nothing_runs_twice(
    tmp_path: Path, own_postgres_url: str
) -> None:
    async with hub(tmp_path, own_postgres_url) as rig:
        victims = ["recorder", "worker", "coordinator", "agent-routing"]
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
    assert service.log_path is not None
    assert _open_handles(service.log_path) == 0
    assert "Usage" in service.tail(40)


async def test_a_call_id_lookup_gives_up_within_about_a_second_when_nats_stops_answering(tmp_path: Path) -> None:
    server = natsd.start(store_dir=tmp_path / "js")
    nc = await connect(server.url, name="test-frozen-nats")
    try:
        js = nc.jetstream()
        registry = CallRegistry("main", await open_bucket(js, CALL_IDS), await open_bucket(js, INGEST_STATE))
        os.kill(server.process.pid, signal.SIGSTOP)  # frozen: the connection looks up, nothing answers
        started = time.monotonic()
        record, how = await registry.open(42, time.time())
        took = time.monotonic() - started
        assert how == "new" and record.callid == 42  # a new id; its events wait in the outbox with it
        assert took < 3.0, f"the create and the lookup took {took:.1f} s"  # ~1 s each, not JetStream's 5 s
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        await nc.close()
        server.stop()


async def test_the_outbox_republishes_at_once_when_nats_died_with_a_batch_unacknowledged(tmp_path: Path) -> None:
    server = natsd.start(store_dir=tmp_path / "js")
    nc = await connect(server.url, name="test-outbox")
    stopping = asyncio.Event()
    try:
        await fresh_bus(nc.jetstream())
        outbox = Outbox(nc, PBX, ack_wait_s=30.0)  # a long ack wait: only a reconnect can end the wait early
        drainer = asyncio.create_task(outbox.run(stopping))
        os.kill(server.process.pid, signal.SIGSTOP)  # the batch goes out; its acks never come
        for _ in range(10):
            outbox.put(CallScript().created())
        await eventually(lambda: len(nc._pending) == 0 and nc.stats["out_msgs"] >= 10, what="the batch sent")
        server.kill()
        server = natsd.start(store_dir=server.store_dir, port=server.port)
        restarted = time.monotonic()
        assert await outbox.wait_acked(outbox.position, within_s=10.0), "the batch was never acknowledged"
        took = time.monotonic() - restarted
        assert took < 5.0, f"acknowledged {took:.1f} s after the restart"
        assert outbox.retries >= 1 and len(outbox) == 0
        stopping.set()
        await drainer
    finally:
        stopping.set()
        await nc.close()
        server.stop()
