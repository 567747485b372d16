"""The bench harness: a registry of benchmarks, each measured next to its raw baseline in the same run.

A benchmark is an ``async def`` taking :class:`BenchOptions` and returning a :class:`BenchResult`. It measures the
hub's figure *and* a raw baseline (plain NATS, plain COPY, plain HTTP...) in the same process and run, so the ratio
means something on whatever machine runs it. ``masterlinc bench`` runs them and prints a table or JSON.
"""

from hub.bench.registry import (
    BenchFn,
    BenchOptions,
    BenchResult,
    Figure,
    all_benchmarks,
    benchmark,
    percentile,
    run_benchmarks,
)

__all__ = [
    "BenchFn",
    "BenchOptions",
    "BenchResult",
    "Figure",
    "all_benchmarks",
    "benchmark",
    "percentile",
    "run_benchmarks",
]
