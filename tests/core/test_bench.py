"""The bench harness: registry, selection by prefix, ratio and JSON output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hub.bench import BenchOptions, BenchResult, Figure, benchmark, percentile, run_benchmarks


@benchmark("test.fake", description="a benchmark registered by the tests")
async def _fake(options: BenchOptions) -> BenchResult:
    return BenchResult(
        name="test.fake",
        figures=[Figure(name="rate", value=200.0, unit="/s")],
        baseline=[Figure(name="raw", value=400.0, unit="/s")],
        headline="rate / raw",
        ratio=0.5,
        met=not options.quick,
    )


@pytest.mark.anyio
async def test_benchmarks_are_selected_by_name_or_prefix() -> None:
    [result] = await run_benchmarks(["test"], BenchOptions(quick=True))
    assert result.name == "test.fake"
    assert result.ratio == 0.5
    assert result.met is False
    assert result.seconds >= 0


@pytest.mark.anyio
async def test_an_unknown_benchmark_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="bus.latency"):
        await run_benchmarks(["nope"], BenchOptions())


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([7], 99) == 7


@pytest.mark.nats
def test_cli_runs_a_real_benchmark_and_prints_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hub.cli", "bench", "bus.latency", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    [result] = json.loads(out.stdout)
    assert result["name"] == "bus.latency"
    names = {f["name"] for f in result["figures"]}
    assert {"bus p99", "added p99"} <= names
    assert {f["name"] for f in result["baseline"]} == {"raw p50", "raw p99"}
    assert result["ratio"] > 0
