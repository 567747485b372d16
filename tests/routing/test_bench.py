"""The routing benchmark runs (quick size) and reports its figures next to a raw NATS hop."""

from __future__ import annotations

import math

import pytest

from agents.routing.bench import routing_decision
from hub.bench.registry import BenchOptions, all_benchmarks

pytestmark = [pytest.mark.nats, pytest.mark.anyio]


async def test_a_routing_decision_is_measured_next_to_a_raw_nats_hop(nats_server: str) -> None:
    assert "routing.decision" in all_benchmarks()
    result = await routing_decision(BenchOptions(quick=True, nats_url=nats_server))
    figures = {f.name: f.value for f in result.figures + result.baseline}
    assert {"decision p99", "raw NATS p99", "JetStream hop p99"} <= set(figures)
    assert all(v > 0 and not math.isnan(v) for name, v in figures.items() if "added" not in name)
    assert "200 transfers" in result.notes  # every call's decision became its command
    assert result.ratio is not None and result.met is None
