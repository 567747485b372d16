from __future__ import annotations

import math

import pytest

from hub.bench.registry import BenchOptions, all_benchmarks
from hub.mcp.bench import mcp_roundtrip

pytestmark = [pytest.mark.nats, pytest.mark.anyio]


async def test_the_round_trip_bench_measures_every_path_next_to_the_worker(nats_server: str) -> None:
    assert "mcp.roundtrip" in all_benchmarks()
    result = await mcp_roundtrip(BenchOptions(quick=True, nats_url=nats_server))
    names = {f.name for f in result.figures + result.baseline}
    assert {"mcp in-process make_call+drop p50", "worker make_call+drop p50", "raw nats request/reply p99"} <= names
    assert all(f.value > 0 and not math.isnan(f.value) for f in result.figures + result.baseline)
    assert result.ratio is not None and result.ratio > 1  # MCP includes the worker's round trip
