"""The CI soak: two minutes of load-driver traffic on the whole hub as processes, a rotating fault every 15 s
(NATS, then each service), judged by the invariants and the lag (memory is the 30-minute run's concern)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.soak.metrics import agents_of
from hub.soak.run import soak

pytestmark = [pytest.mark.anyio, pytest.mark.nats, pytest.mark.postgres]


@pytest.mark.timeout(240)  # ~140 s alone on 2 cores; the margin is for a loaded machine
async def test_a_two_minute_soak_with_rotating_faults_keeps_every_invariant_and_the_lag_bounded(
    tmp_path: Path, own_postgres_url: str
) -> None:
    report = await soak(tmp_path, own_postgres_url, minutes=2, rate=100, fault_every_s=15, sample_every_s=2,
                        check_memory=False, settle_within_s=60)  # fmt: skip
    print(report.text())
    assert report.ok, "\n".join(v.line() for v in report.verdicts if not v.ok)
    assert {name for name, _ in report.faults_at} >= {"nats", "recorder", "ingest", "worker", "coordinator"}
    names = {v.name for v in report.verdicts}
    assert "every observed transition once in the log" in names and "no command executed twice" in names
    assert "lag back under the bound after each fault" in names and "memory flat" not in names
    assert report.logged > 100 * 60  # the traffic really ran
    assert set(agents_of(report.samples)) >= {"coordinator", "routing", "crm"}  # each agent's backlog is reported
    assert "agent routing behind its feed" in report.text()
    assert any(s.held is not None for s in report.samples) and "ingest held" in report.text()
