"""The CRM lag benchmark runs (quick size: simulator, ingest and the CRM agent as processes) and reports its figures
next to a raw NATS hop and a raw commit."""

from __future__ import annotations

import math

import pytest

from agents.crm.bench import crm_lag
from hub.bench.registry import BenchOptions, all_benchmarks

pytestmark = [pytest.mark.nats, pytest.mark.anyio, pytest.mark.slow]  # ~20 s: four processes under load


async def test_the_crm_lag_is_measured_under_load_with_every_call_recorded(nats_server: str) -> None:
    assert "crm.lag" in all_benchmarks()
    result = await crm_lag(BenchOptions(quick=True, nats_url=nats_server))
    figures = {f.name: f.value for f in result.figures + result.baseline}
    assert {"lag p99", "raw NATS p99", "raw INSERT+COMMIT p99"} <= set(figures)
    assert figures["records written / calls ended"] == 1.0
    assert all(v > 0 and not math.isnan(v) for v in figures.values())
    assert result.ratio is not None
