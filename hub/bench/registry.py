"""Benchmark registry and result types (see the package docstring)."""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Modules that register benchmarks on import. Kept here so `masterlinc bench` finds them without
# importing the whole hub at CLI start-up.
BENCH_MODULES: tuple[str, ...] = (
    "hub.bench.bus_bench",
    "hub.eventlog.bench",
    "hub.simulator.bench",
    "hub.ingest.bench",
    "hub.worker.bench",
    "hub.mcp.bench",
    "hub.coordinator.bench",
    "agents.basma.bench",
    "agents.routing.bench",
    "agents.crm.bench",
    "agents.crm.catchup_bench",
)


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """Knobs every benchmark understands; `quick` shrinks sizes so CI can smoke-test the harness."""

    quick: bool = False
    nats_url: str | None = None
    database_url: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass(frozen=True, kw_only=True)
class Figure:
    """One measured number, e.g. ``Figure(name="throughput", value=31000, unit="events/s")``."""

    name: str
    value: float
    unit: str


@dataclass(kw_only=True)
class BenchResult:
    """What a benchmark measured, with its baseline measured in the same run.

    ``ratio`` is hub / baseline for the headline figure (higher is better for throughput; for latency the
    benchmark says which way is better in ``better``). ``target`` states the issue's target in words and
    ``met`` whether this run met it (None when the run was too small to say, e.g. ``--quick``).
    """

    name: str
    figures: list[Figure]
    baseline: list[Figure]
    headline: str
    ratio: float | None
    better: str = "higher"
    target: str = ""
    met: bool | None = None
    notes: str = ""
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


BenchFn = Callable[[BenchOptions], Awaitable[BenchResult]]


@dataclass(frozen=True)
class _Entry:
    name: str
    description: str
    fn: BenchFn


_REGISTRY: dict[str, _Entry] = {}


def benchmark(name: str, *, description: str) -> Callable[[BenchFn], BenchFn]:
    """Register ``fn`` under ``name`` (dotted, e.g. ``recorder.drain``)."""

    def register(fn: BenchFn) -> BenchFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"benchmark {name!r} is registered twice")
        _REGISTRY[name] = _Entry(name, description, fn)
        return fn

    return register


def _load_modules() -> None:
    for module in BENCH_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if not (module == missing or module.startswith(missing + ".")):  # a missing dependency inside: say so
                raise


def all_benchmarks() -> dict[str, str]:
    """Name -> description of every registered benchmark."""
    _load_modules()
    return {name: entry.description for name, entry in sorted(_REGISTRY.items())}


async def run_benchmarks(names: Sequence[str], options: BenchOptions) -> list[BenchResult]:
    """Run the named benchmarks (all when ``names`` is empty), or those whose name starts with a given prefix."""
    _load_modules()
    selected: list[_Entry] = []
    for wanted in names or sorted(_REGISTRY):
        matches = [e for n, e in sorted(_REGISTRY.items()) if n == wanted or n.startswith(wanted + ".")]
        if not matches:
            known = ", ".join(sorted(_REGISTRY)) or "none"
            raise KeyError(f"no benchmark named {wanted!r}; known: {known}")
        selected.extend(m for m in matches if m not in selected)
    results: list[BenchResult] = []
    for entry in selected:
        started = time.perf_counter()
        result = await entry.fn(options)
        result.seconds = round(time.perf_counter() - started, 3)
        results.append(result)
    return results


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100); NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]
