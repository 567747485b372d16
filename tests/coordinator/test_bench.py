"""The coordination benchmarks run (quick sizes) and report their figures next to a raw NATS hop."""

from __future__ import annotations

import math

import pytest

from hub.bench.registry import BenchOptions, all_benchmarks
from hub.coordinator.bench import agent_latency, coord_claim

pytestmark = [pytest.mark.nats, pytest.mark.anyio]


async def test_claim_and_agent_latency_are_measured_next_to_raw_nats(nats_server: str) -> None:
    assert {"coord.claim", "agent.latency"} <= set(all_benchmarks())
    claim = await coord_claim(BenchOptions(quick=True, nats_url=nats_server))
    latency = await agent_latency(BenchOptions(quick=True, nats_url=nats_server))
    for result, needed in (
        (claim, {"claim p99", "raw req/reply p99", "raw KV create p99"}),
        (latency, {"agent p99", "raw NATS p99", "JetStream hop p99"}),
    ):
        figures = result.figures + result.baseline
        assert needed <= {f.name for f in figures}
        assert all(f.value > 0 and not math.isnan(f.value) for f in figures if "added" not in f.name)
        assert result.ratio is not None
