"""The fault suite's rig: the whole hub as processes (hub.soak.rig) on a private nats-server, the event log in a
fresh Postgres database, traffic from the simulator's load driver, and the invariants judged at the end."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hub.natsd import free_port
from hub.soak.evidence import call_evidence
from hub.soak.faults import Injected
from hub.soak.invariants import Verdict, failed
from hub.soak.rig import HubRig, running_hub
from hub.soak.run import ground_truth_verdicts
from tests.helpers import PrivatePostgres, private_postgres

RATE = 60.0  # events/s from the load driver while a fault hits


@contextlib.asynccontextmanager
async def hub(tmp_path: Path, db_url: str) -> AsyncIterator[HubRig]:
    async with running_hub(tmp_path / "hub", db_url) as rig:
        yield rig


async def judge(rig: HubRig, injected: list[Injected]) -> list[Verdict]:
    """Wait until the hub settled, then every invariant; the recovery times are printed (pytest -s shows them)."""
    await rig.wait_settled(within_s=45)
    events = await rig.log_events()
    verdicts = ground_truth_verdicts(rig, events, injected, within_s=30)
    named = [call for verdict in failed(verdicts) for call in verdict.calls]
    print(call_evidence(rig.sim.journal.entries, events, named, rig.cuts), end="")
    for i in injected:
        print(f"recovery {i.recovery.fault}: {i.recovery.seconds} s (ready {i.ready_s}, next commit {i.commit_s})")
    for v in verdicts:
        print(v.line())
    return verdicts


def assert_holds(verdicts: list[Verdict]) -> None:
    bad = failed(verdicts)
    assert not bad, "\n".join(v.line() for v in bad)


@pytest.fixture
def private_cluster() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL cluster the test may crash (never the shared server)."""
    cluster = private_postgres(free_port())
    if cluster is None:
        pytest.skip("Debian's PostgreSQL binaries are not installed")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()
