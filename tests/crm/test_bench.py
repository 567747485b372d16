"""The CRM benchmarks run (quick sizes) and report their figures next to their raw baselines: the lag (simulator,
ingest and the CRM agent as processes) and the catch-up (a backlog drained by one replica)."""

from __future__ import annotations

import math

import pytest

from agents.crm.bench import crm_lag
from agents.crm.catchup_bench import crm_catchup
from hub.bench.registry import BenchOptions, all_benchmarks

pytestmark = [pytest.mark.nats, pytest.mark.anyio]


@pytest.mark.slow  # ~20 s: four processes under load
async def test_the_crm_lag_is_measured_under_load_with_every_call_recorded(nats_server: str) -> None:
    assert "crm.lag" in all_benchmarks()
    result = await crm_lag(BenchOptions(quick=True, nats_url=nats_server))
    figures = {f.name: f.value for f in result.figures + result.baseline}
    assert {"lag p99", "raw NATS p99", "raw INSERT+COMMIT p99"} <= set(figures)
    assert figures["records written / calls ended"] == 1.0
    assert all(v > 0 and not math.isnan(v) for v in figures.values())
    assert result.ratio is not None


async def test_the_crm_catchup_drains_a_backlog_and_reports_its_rate_next_to_a_raw_commit(nats_server: str) -> None:
    assert "crm.catchup" in all_benchmarks()
    result = await crm_catchup(BenchOptions(quick=True, nats_url=nats_server))
    figures = {f.name: f.value for f in result.figures + result.baseline}
    assert figures["backlog drained"] > 0
    assert figures["raw INSERT+COMMIT, one connection"] > 0
    assert figures["events a transaction"] >= 1.0
    assert result.ratio == pytest.approx(figures["backlog drained"] / figures["raw INSERT+COMMIT, one connection"])
    assert "40 typical calls (520 events)" in result.notes
