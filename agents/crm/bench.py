"""``crm.lag``: from a call's ``call.ended`` to its CRM record committed, while the simulator runs 500 calls a minute.

Every piece runs in its own process, as in production: the simulator playing a load scenario (calls to the route
point at 500/min, each held a few seconds, 3CX's repeated upserts on), ``masterlinc ingest``, and ``masterlinc agent
run crm`` writing to the built-in table (SQLite by default, or the given database), with an embedded nats-server.
This process only listens: a call's lag is when its ``crm.record_written`` (database target, published right after
the record's commit) arrives minus when its ``call.ended`` arrived, both on core subscriptions of one connection. The
baselines, measured in the same run: a raw core NATS hop, and a raw single-row INSERT + COMMIT on the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from hub import natsd
from hub.bench.bus_bench import bench_nats, raw_latencies
from hub.bench.procs import spawn
from hub.bench.registry import BenchOptions, BenchResult, Figure, benchmark, percentile
from hub.bus import connect
from hub.eventlog.migrate import upgrade_async

PBX = "bench"
CALLS_PER_MIN = 500.0


def _cli(args: list[str], env: dict[str, str]) -> contextlib.AbstractContextManager[subprocess.Popen[str]]:
    return spawn(["-m", "hub.cli", *args], env)


async def _ready(port: int, within_s: float = 60.0) -> None:
    async with asyncio.timeout(within_s), httpx.AsyncClient() as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)


async def _scenario_done(proc: subprocess.Popen[str], within_s: float) -> dict[str, Any]:
    """The simulator prints the scenario's description (JSON) when it has run, loads included."""
    assert proc.stdout is not None
    async with asyncio.timeout(within_s):
        while True:
            line = await asyncio.to_thread(proc.stdout.readline)
            if not line:
                raise RuntimeError("the simulator exited before its scenario ended")
            if line.startswith("{"):
                described: dict[str, Any] = json.loads(line)
                return described


async def _raw_commits(db_url: str, count: int) -> list[float]:
    engine = create_async_engine(db_url)
    table = sa.Table("bench_commit", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("payload", sa.Text))  # fmt: skip
    out: list[float] = []
    try:
        async with engine.begin() as conn:
            await conn.run_sync(table.create, checkfirst=True)
        for i in range(count):
            t0 = time.perf_counter()
            async with engine.begin() as conn:
                await conn.execute(table.insert().values(id=i, payload="x" * 1500))
            out.append((time.perf_counter() - t0) * 1e3)
        async with engine.begin() as conn:
            await conn.run_sync(table.drop)
    finally:
        await engine.dispose()
    return out


@contextlib.asynccontextmanager
async def _database(options: BenchOptions) -> AsyncIterator[str]:
    if options.database_url:
        yield options.database_url
        return
    with tempfile.TemporaryDirectory(prefix="ml-crm-bench-") as tmp:
        yield f"sqlite+aiosqlite:///{Path(tmp) / 'hub.db'}"


async def _lags(nats_url: str, db_url: str, seconds: float, hold_s: float, warmup_s: float) -> dict[str, Any]:
    sim_port, ingest_port, crm_port = natsd.free_port(), natsd.free_port(), natsd.free_port()
    rate = CALLS_PER_MIN / 60
    concurrent = int(rate * hold_s * 2) + 10
    with tempfile.TemporaryDirectory(prefix="ml-crm-bench-") as tmp:
        scenario = Path(tmp) / "load.yaml"
        scenario.write_text(
            "name: crm lag\nconfig: {repeat_upserts_s: 0.75}\nsteps:\n"
            f"  - load: {{calls: {concurrent}, rate: {rate:.4f}, hold: {hold_s}, duration: {seconds + warmup_s}}}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ML_") and k not in ("NATS_URL", "DATABASE_URL")}
        env.update({
            "NATS_URL": nats_url, "DATABASE_URL": db_url, "ML_DATA_DIR": tmp, "ML_LOG_LEVEL": "WARNING",
            "ML_LOG_FORMAT": "json", "ML_PBXS__0__ID": PBX, "ML_PBXS__0__BASE_URL": f"http://127.0.0.1:{sim_port}",
            "ML_PBXS__0__CLIENT_ID": "800", "ML_PBXS__0__CLIENT_SECRET": "sim-secret",
        })  # fmt: skip
        nc = await connect(nats_url, name="bench-crm-listener")
        ended: dict[str, float] = {}
        written: dict[str, float] = {}

        async def on_ended(msg: Any) -> None:
            ended.setdefault(msg.subject.split(".")[4], time.time())

        async def on_written(msg: Any) -> None:
            if b'"target":"database"' in msg.data:
                written.setdefault(msg.subject.split(".")[4], time.time())

        await nc.subscribe(f"ml.evt.{PBX}.call.*.ended", cb=on_ended)
        await nc.subscribe(f"ml.evt.{PBX}.crm.*.record_written", cb=on_written)
        await nc.flush()
        try:
            with (
                _cli(["sim", "--port", str(sim_port), "--scenario", str(scenario)], env) as sim,
                _cli(["agent", "run", "crm"], {**env, "ML_HTTP__PORT": str(crm_port)}),
            ):
                await _ready(crm_port)
                with _cli(["ingest"], {**env, "ML_HTTP__PORT": str(ingest_port)}):
                    await _ready(ingest_port)
                    started = time.time()
                    described = await _scenario_done(sim, seconds + warmup_s + hold_s + 120)
                    async with asyncio.timeout(60):  # the last calls end hold_s after the load stops placing
                        # waived lint: the condition is a quiet period over two callbacks' counts, not one event
                        while len(written) < len(ended) or time.time() - max(ended.values(), default=0) < 2.0:  # noqa: ASYNC110
                            await asyncio.sleep(0.2)
        finally:
            await nc.close()
    counted = {c: t for c, t in ended.items() if t - started >= warmup_s}
    lags = [1000 * (written[c] - t) for c, t in counted.items() if c in written]
    placed = sum(int(load.get("placed", 0)) for load in described.get("load", []))
    return {"lags": lags, "ended": len(ended), "written": len(written), "counted": len(counted), "placed": placed}


@benchmark("crm.lag", description="call.ended -> CRM record committed p99 at 500 calls/min, vs a raw NATS hop")
async def crm_lag(options: BenchOptions) -> BenchResult:
    seconds = 6.0 if options.quick else 60.0
    hold_s, warmup_s = (2.0, 2.0) if options.quick else (3.0, 5.0)
    async with bench_nats(options) as url, _database(options) as db_url:
        await upgrade_async(db_url)
        raw = await raw_latencies(url, 100.0, options.scale(2000, 200), b"x" * 700)
        commits = await _raw_commits(db_url, options.scale(500, 50))
        run = await _lags(url, db_url, seconds, hold_s, warmup_s)
    lags = run["lags"]
    p50, p99 = percentile(lags, 50), percentile(lags, 99)
    complete = run["written"] == run["ended"] and run["ended"] > 0
    return BenchResult(
        name="crm.lag",
        figures=[
            Figure(name="lag p50", value=p50, unit="ms"),
            Figure(name="lag p99", value=p99, unit="ms"),
            Figure(name="lag max", value=max(lags) if lags else float("nan"), unit="ms"),
            Figure(name="records written / calls ended", value=run["written"] / max(1, run["ended"]), unit="ratio"),
        ],
        baseline=[
            Figure(name="raw NATS p99", value=percentile(raw, 99), unit="ms"),
            Figure(name="raw INSERT+COMMIT p50", value=percentile(commits, 50), unit="ms"),
            Figure(name="raw INSERT+COMMIT p99", value=percentile(commits, 99), unit="ms"),
        ],
        headline="lag p99 / raw NATS p99",
        ratio=p99 / percentile(raw, 99) if raw and percentile(raw, 99) > 0 else None,
        better="lower",
        target="lag p99 < 1 s at 500 calls/min, every ended call recorded",
        met=None if options.quick else (p99 < 1000 and complete),
        notes=f"{run['placed']} calls placed at {CALLS_PER_MIN:.0f}/min for {seconds + warmup_s:.0f} s, each held "
        f"{hold_s:.0f} s (repeated upserts every 0.75 s); {run['ended']} ended, {run['written']} records; lag over "
        f"the {run['counted']} that ended after a {warmup_s:.0f} s warm-up; database {db_url.split(':', 1)[0]}; "
        "simulator, ingest, the CRM agent and nats-server each in their own process",
    )
