"""Ingest benchmarks (D§11): websocket frame -> event on the bus, against a raw websockets receive + raw httpx GET
on the same simulator, under a load of repeated upserts.

Every process is real: the simulator (``hub.ingest.loadsim``) and ``masterlinc ingest`` run in their own
processes, with an embedded nats-server; this process only subscribes and measures. A probe is an outside call
ringing extension 101; its latency is the time its ``call.ringing`` event reaches a subscriber minus the
simulator's ground-truth time of the change (its journal). The baseline does the least any client must do for the
same probe: receive the websocket frame and GET the participant, measured from the same journal time.

- ``ingest.latency``: p50/p99 at 500 and 2,000 upserts/s, reads per upsert, reads per real state change with
  repeats off;
- ``ingest.capacity``: the largest number of concurrent calls (repeats on) whose probes keep p99 <= 50 ms with a
  bounded backlog; the full run then holds the best rung for ``hold_s`` (default 300 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from hub import natsd
from hub.bench.procs import spawn
from hub.bench.registry import BenchOptions, BenchResult, Figure, benchmark, percentile
from hub.bus import connect, ensure_streams
from hub.config import BusConfig

PBX = "bench"
REPEAT_S = 0.75
PROBE_DN = "101"


@dataclass
class _Run:
    """One simulator process with its load, and what was measured against it."""

    port: int
    calls: int
    repeat_s: float
    probes_per_s: float
    seconds: float
    warmup_s: float = 3.0
    received: dict[int, float] = field(default_factory=dict)  # probe callid -> when its ringing arrived here
    answered: dict[int, float] = field(default_factory=dict)  # probe callid -> when its answer arrived here

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def journal(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            entries: list[dict[str, Any]] = (await http.get("/_sim/journal")).json()
        return entries

    async def latencies_ms(self) -> tuple[list[float], list[float]]:
        """(new legs, answers of known legs): arrival here minus the simulator's time of the change."""
        journal = await self.journal()
        probe = [e for e in journal if e["kind"] == "state" and e["dn"] == PROBE_DN]
        rang = {e["callid"]: e["at"] for e in probe if e["old_status"] is None and e["new_status"] == "Ringing"}
        answered = {
            e["callid"]: e["at"] for e in probe if e["old_status"] == "Ringing" and e["new_status"] == "Connected"
        }
        return (
            [1000 * (t - rang[c]) for c, t in self.received.items() if c in rang],
            [1000 * (t - answered[c]) for c, t in self.answered.items() if c in answered],
        )


@contextlib.asynccontextmanager
async def _simulator(run: _Run) -> AsyncIterator[subprocess.Popen[str]]:
    args = ["-m", "hub.ingest.loadsim", str(run.port), str(run.calls), str(run.repeat_s), str(run.probes_per_s),
            str(run.seconds), str(run.warmup_s)]  # fmt: skip
    with spawn(args) as proc:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        if line.strip() != "ready":
            raise RuntimeError(f"the simulator did not start: {line!r}")
        yield proc


async def _token(base_url: str) -> str:
    form = {"client_id": "800", "client_secret": "sim-secret", "grant_type": "client_credentials"}
    async with httpx.AsyncClient(base_url=base_url) as http:
        token: str = (await http.post("/connect/token", data=form)).json()["access_token"]
    return token


async def _wait_line(proc: subprocess.Popen[str], wanted: str, within_s: float) -> None:
    assert proc.stdout is not None
    async with asyncio.timeout(within_s):
        while (await asyncio.to_thread(proc.stdout.readline)).strip() != wanted:
            pass


# --------------------------------------------------------------------------- the raw baseline


async def _raw_run(run: _Run) -> tuple[list[float], list[float]]:
    """Receive frames and GET each probe participant, as the thinnest possible client would."""
    async with _simulator(run) as proc:
        token = await _token(run.base_url)
        headers = {"Authorization": f"Bearer {token}"}
        url = f"ws://127.0.0.1:{run.port}/callcontrol/ws"
        async with (
            websockets.connect(url, additional_headers=headers, max_queue=None) as ws,
            httpx.AsyncClient(base_url=run.base_url, headers=headers) as http,
        ):
            done = asyncio.create_task(_wait_line(proc, "done", run.seconds + 120))
            prefix = f"/callcontrol/{PROBE_DN}/participants/"
            pending: set[asyncio.Task[None]] = set()

            async def read(entity: str) -> None:
                response = await http.get(entity)
                if response.status_code == 200:
                    body = response.json()
                    seen = {"Ringing": run.received, "Connected": run.answered}.get(body.get("status"))
                    if seen is not None:
                        seen.setdefault(int(body["callid"]), time.time())

            while not done.done():
                try:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except TimeoutError:
                    continue
                entity = frame["event"]["entity"]
                if frame["event"]["event_type"] == 0 and entity.startswith(prefix):
                    task = asyncio.create_task(read(entity))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            await asyncio.gather(*pending, return_exceptions=True)
        return await run.latencies_ms()


# --------------------------------------------------------------------------- through the hub


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            with contextlib.suppress(ValueError):
                total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class _HubFigures:
    latencies_ms: list[float]
    answer_ms: list[float]
    frames: float
    reads: float
    backlog_max_first: float
    backlog_max_last: float
    transitions: int


async def _hub_run(run: _Run, nats_url: str) -> _HubFigures:
    health = natsd.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_")}
    env.update({
        "NATS_URL": nats_url, "ML_PBXS__0__ID": PBX, "ML_PBXS__0__BASE_URL": run.base_url,
        "ML_PBXS__0__CLIENT_ID": "800", "ML_PBXS__0__CLIENT_SECRET": "sim-secret",
        "ML_HTTP__PORT": str(health), "ML_LOG_LEVEL": "WARNING",
    })  # fmt: skip
    nc = await connect(nats_url, name="bench-ingest")
    pattern = re.compile(rb'"pbx_call_id":(\d+)')

    async def on_event(msg: Any) -> None:
        if b'"dn":"' + PROBE_DN.encode() + b'"' in msg.data:
            found = pattern.search(msg.data)
            if found:
                seen = run.received if msg.subject.endswith(".ringing") else run.answered
                seen.setdefault(int(found.group(1)), time.time())

    subs = [await nc.subscribe(f"ml.evt.{PBX}.call.*.{name}", cb=on_event) for name in ("ringing", "answered")]
    backlog: list[tuple[float, float]] = []
    try:
        async with _simulator(run) as proc, httpx.AsyncClient() as http:
            with spawn(["-m", "hub.cli", "ingest"], env=env):
                await _wait_line(proc, "loaded", 60)
                done = asyncio.create_task(_wait_line(proc, "done", run.seconds + run.warmup_s + 120))
                await asyncio.sleep(run.warmup_s)
                started = time.time()
                text = ""
                while not done.done():
                    with contextlib.suppress(httpx.HTTPError):
                        text = (await http.get(f"http://127.0.0.1:{health}/metrics")).text
                        backlog.append((time.time() - started, _metric(text, "ml_ingest_backlog")))
                    await asyncio.sleep(0.5)
                await asyncio.sleep(1.0)  # the last probes' events (bounded: 0.3 s hold + latency)
                with contextlib.suppress(httpx.HTTPError):
                    text = (await http.get(f"http://127.0.0.1:{health}/metrics")).text
                frames, reads = _metric(text, "ml_ingest_frames_total"), _metric(text, "ml_ingest_reads_total")
            journal = await run.journal()
            latencies, answers = await run.latencies_ms()
    finally:
        for sub in subs:
            await sub.unsubscribe()
        await nc.close()
    transitions = sum(1 for e in journal if e["kind"] == "state" and e["dn"] and e["participant_id"] is not None
                      and e["old_status"] != e["new_status"])  # fmt: skip
    half = run.seconds / 2
    first = [b for t, b in backlog if t < half] or [0.0]
    last = [b for t, b in backlog if t >= half] or [0.0]
    return _HubFigures(latencies, answers, frames, reads, max(first), max(last), transitions)


@contextlib.asynccontextmanager
async def _bus(options: BenchOptions) -> AsyncIterator[str]:
    if options.nats_url:
        yield options.nats_url
        return
    with natsd.running() as server:
        nc = await connect(server.url, name="bench-setup")
        await ensure_streams(nc.jetstream(), BusConfig())
        await nc.close()
        yield server.url


def _calls_for(upserts_per_s: float) -> int:
    return max(1, round(upserts_per_s * REPEAT_S))


def _p(samples: list[float], pct: float) -> float:
    return percentile(samples, pct)


def _fig(name: str, value: float, unit: str = "ms") -> Figure:
    return Figure(name=name, value=value, unit=unit)


@benchmark("ingest.latency", description="Frame -> event on the bus p50/p99 at 500 and 2,000 upserts/s; reads/upsert")
async def ingest_latency(options: BenchOptions) -> BenchResult:
    seconds = 6.0 if options.quick else 20.0
    probes = 10.0
    figures: list[Figure] = []
    baseline: list[Figure] = []
    ratio = None
    met = True
    async with _bus(options) as nats_url:
        for rate in (500, 2000):
            calls = _calls_for(rate)
            raw_new, raw_answer = await _raw_run(_Run(natsd.free_port(), calls, REPEAT_S, probes, seconds))
            hub = await _hub_run(_Run(natsd.free_port(), calls, REPEAT_S, probes, seconds), nats_url)
            figures += [
                _fig(f"new leg p50 at {rate} upserts/s", _p(hub.latencies_ms, 50)),
                _fig(f"new leg p99 at {rate} upserts/s", _p(hub.latencies_ms, 99)),
                _fig(f"answer p50 at {rate} upserts/s", _p(hub.answer_ms, 50)),
                _fig(f"answer p99 at {rate} upserts/s", _p(hub.answer_ms, 99)),
                _fig(f"reads per frame at {rate}/s", hub.reads / hub.frames if hub.frames else math.nan, "reads"),
                _fig(f"probes measured at {rate}/s", len(hub.latencies_ms), "probes"),
            ]
            baseline += [
                _fig(f"raw new leg p50 at {rate}/s", _p(raw_new, 50)),
                _fig(f"raw new leg p99 at {rate}/s", _p(raw_new, 99)),
                _fig(f"raw answer p99 at {rate}/s", _p(raw_answer, 99)),
            ]
            if rate == 2000 and _p(raw_new, 99):
                ratio = _p(hub.latencies_ms, 99) / _p(raw_new, 99)
            met = met and hub.frames > 0 and hub.reads / hub.frames <= 1.0
        quiet = await _hub_run(_Run(natsd.free_port(), 0, 0, 20.0, seconds), nats_url)
        per_change = quiet.reads / quiet.transitions if quiet.transitions else math.nan
        figures.append(_fig("reads per real state change, repeats off", per_change, "reads"))
        figures.append(_fig("new leg p50, no load", _p(quiet.latencies_ms, 50)))
    return BenchResult(
        name="ingest.latency",
        figures=figures,
        baseline=baseline,
        headline="new-leg p99 at 2,000 upserts/s / raw websocket receive + GET p99",
        ratio=ratio,
        better="lower",
        target="reads per upsert <= 1.0 with coalescing",
        met=None if options.quick else met,
        notes="simulator, ingest and nats-server each in their own process; probes: 10 outside calls/s ringing "
        f"101 (a new leg), answered 0.15 s later (a known leg), over the background repeats; {seconds:.0f} s per run",
    )


def _holds(hub: _HubFigures) -> tuple[bool, float]:
    p99 = max(_p(hub.latencies_ms, 99), _p(hub.answer_ms, 99))
    bounded = hub.backlog_max_last <= max(200.0, 2 * hub.backlog_max_first)
    return p99 <= 50 and bounded, p99


@benchmark("ingest.capacity", description="Most concurrent calls (repeats on) with probe p99 <= 50 ms, bounded backlog")
async def ingest_capacity(options: BenchOptions) -> BenchResult:
    ladder = (500, 1000) if options.quick else (1000, 2000, 3000, 4000, 6000)
    seconds = 6.0 if options.quick else 20.0
    hold_s = float(options.extra.get("hold_s", "0" if options.quick else "300"))
    best, tried = 0, []
    async with _bus(options) as nats_url:
        for calls in ladder:
            hub = await _hub_run(_Run(natsd.free_port(), calls, REPEAT_S, 10.0, seconds), nats_url)
            ok, p99 = _holds(hub)
            tried.append(f"{calls} calls: p99 {p99:.1f} ms, backlog max {hub.backlog_max_last:.0f}")
            if not ok:
                break
            best = calls
        held = ""
        if best and hold_s > 0:
            hub = await _hub_run(_Run(natsd.free_port(), best, REPEAT_S, 10.0, hold_s), nats_url)
            ok, p99 = _holds(hub)
            held = f"; held {best} calls for {hold_s:.0f} s: p99 {p99:.1f} ms, backlog bounded and p99 met: {ok}"
            if not ok:
                best = 0
        raw_new, raw_answer = await _raw_run(_Run(natsd.free_port(), best or ladder[0], REPEAT_S, 10.0, seconds))
    return BenchResult(
        name="ingest.capacity",
        figures=[
            _fig("concurrent calls holding p99 <= 50 ms", best, "calls"),
            _fig("upserts/s at that load", best / REPEAT_S, "upserts/s"),
        ],
        baseline=[_fig("raw receive + GET p99 at that load", max(_p(raw_new, 99), _p(raw_answer, 99)))],
        headline="calls sustained",
        ratio=None,
        target="p99 <= 50 ms (new legs and answers) with a bounded backlog for 5 minutes",
        met=None if options.quick or hold_s < 300 else best > 0,
        notes="; ".join(tried) + held,
    )
