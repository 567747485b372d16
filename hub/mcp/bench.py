"""MCP round trip (issue 10): make_call + drop_call through an MCP client, next to the worker's own round trip.

Measured in one run against one NATS server and one in-process worker whose gateway answers at once (the PBX is not
part of this figure; the simulator's own bench measures it):

- raw: NATS request/reply (the floor of any bus round trip);
- worker: ``hub.sdk.CommandClient.send`` -> ML_COMMANDS -> worker -> reply (what every MCP tool call includes);
- mcp in-process: ``mcp.Client(server)`` -> tool -> the worker path;
- mcp http: ``mcp.Client`` over streamable HTTP on loopback with a bearer token -> the same, in both protocol eras.

Headline: mcp-http (2025-11-25) p50 over worker p50 (lower is better): what the facade and its transport add.
The 2026-07-28 path once cost ~45 ms more per tool call: the SDK answers it with separate header and body writes,
and on a listening socket created without ``IPPROTO_TCP`` the loop left Nagle on, so the body waited for the
client's delayed ACK (see ``hub.mcp.app.listening_socket``).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from nats.aio.client import Client as Nats

from hub.bench.bus_bench import bench_nats
from hub.bench.registry import BenchOptions, BenchResult, Figure, benchmark, percentile
from hub.bus import connect, ensure_streams
from hub.config import BusConfig
from hub.mcp.app import http_app, run_http
from hub.mcp.backend import Backend
from hub.mcp.http import StoreTokenVerifier, default_origins
from hub.mcp.server import FacadeConfig, build_server
from hub.mcp.tokens import TokenStore
from hub.sdk import CommandClient
from hub.worker.service import Worker, WorkerConfig
from schemas.commands import CommandBase, Drop, MakeCall, QueryBase
from schemas.common import LegRef
from schemas.identity import new_call_id


class _InstantGateway:
    async def execute(self, command: CommandBase) -> dict[str, Any]:
        return {"done": command.NAME}

    async def reconcile(self, command: CommandBase) -> dict[str, Any] | None:
        return None

    async def query(self, query: QueryBase) -> tuple[list[dict[str, Any]], int | None]:
        return [], 0


async def _timed(count: int, fn: Callable[[int], Awaitable[None]]) -> list[float]:
    """Milliseconds per call of ``fn(i)``, after a short warm-up."""
    for i in range(min(10, count)):
        await fn(-1 - i)
    out = []
    for i in range(count):
        start = time.perf_counter()
        await fn(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _figures(prefix: str, samples: list[float]) -> list[Figure]:
    return [
        Figure(name=f"{prefix} p50", value=round(percentile(samples, 50), 3), unit="ms"),
        Figure(name=f"{prefix} p99", value=round(percentile(samples, 99), 3), unit="ms"),
    ]


@contextlib.asynccontextmanager
async def _worker(nc: Nats, pbx: str) -> AsyncIterator[None]:
    worker = Worker(
        nc, _InstantGateway(), config=WorkerConfig(name="bench", durable="ml-bench", rate_per_second=100_000)
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping, pbx_id=pbx))
    try:
        await asyncio.wait_for(worker.ready.wait(), 10)
        yield
    finally:
        stopping.set()
        await task


def _pair_args(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        {"from_extension": "201", "to": "+14155550100", "idempotency_key": f"mk-{uuid.uuid4()}-{i}"},
        {"call_id": new_call_id(), "leg": {"dn": "800", "participant_id": 4}},
    )


@benchmark("mcp.roundtrip", description="make_call + drop_call through MCP (in-process, HTTP) vs the worker's own")
async def mcp_roundtrip(options: BenchOptions) -> BenchResult:
    count = options.scale(300, 20)
    pbx = f"bench{uuid.uuid4().hex[:8]}"
    async with bench_nats(options) as url:
        nc = await connect(url, name="bench-mcp")
        try:
            await ensure_streams(nc.jetstream(), BusConfig())
            figures, baseline = await _measure(nc, pbx, count)
        finally:
            await nc.close()
    by_name = {f.name: f.value for f in figures + baseline}
    ratio = by_name["mcp http 2025-11-25 make_call+drop p50"] / by_name["worker make_call+drop p50"]
    return BenchResult(
        name="mcp.roundtrip",
        figures=figures,
        baseline=baseline,
        headline="mcp http 2025-11-25 make_call+drop p50",
        ratio=round(ratio, 2),
        better="lower",
        target="the facade adds little to the worker's own round trip",
        met=None,
        notes=f"{count} pairs per path; the gateway answers at once (no PBX, no simulator)",
    )


async def _measure(nc: Nats, pbx: str, count: int) -> tuple[list[Figure], list[Figure]]:
    async def raw_echo(msg: Any) -> None:
        await msg.respond(msg.data)

    echo = await nc.subscribe(f"bench.echo.{pbx}", cb=raw_echo)
    raw = await _timed(count, lambda i: _raw(nc, pbx))
    await echo.unsubscribe()

    client = CommandClient(nc)

    async def worker_pair(i: int) -> None:
        make = MakeCall.model_validate(
            {"pbx_id": pbx, "issued_by": "mcp:bench", "args": {"from": "201", "to": "+14155550100"}}
        )
        drop = Drop(pbx_id=pbx, issued_by="mcp:bench", call_id=new_call_id(), leg=LegRef(dn="800", participant_id=4))
        assert (await client.send(make)).ok
        assert (await client.send(drop)).ok

    with tempfile.TemporaryDirectory() as tmp:
        store = TokenStore(Path(tmp) / "tokens.json")
        token = store.create(scopes=["control"]).token
        async with _worker(nc, pbx), Backend(pbx_id=pbx, nc=nc) as backend:
            worker = await _timed(count, worker_pair)
            facade = build_server(backend, FacadeConfig(pbx_id=pbx))
            async with Client(facade.server, raise_exceptions=True) as mcp_client:
                inproc = await _timed(count, lambda i: _mcp_pair(mcp_client, i))
            http_facade = build_server(
                backend, FacadeConfig(pbx_id=pbx, default_principal=None), token_verifier=StoreTokenVerifier(store)
            )
            app = http_app(http_facade, store, host="127.0.0.1", port=0, origins=default_origins("127.0.0.1", 0))
            http_2025, http_2026 = await _http_samples(app, token, count)
    figures = [
        *_figures("mcp in-process make_call+drop", inproc),
        *_figures("mcp http 2025-11-25 make_call+drop", http_2025),
        *_figures("mcp http 2026-07-28 make_call+drop", http_2026),
    ]
    baseline = [*_figures("worker make_call+drop", worker), *_figures("raw nats request/reply", raw)]
    return figures, baseline


async def _raw(nc: Nats, pbx: str) -> None:
    await nc.request(f"bench.echo.{pbx}", b"x" * 256, timeout=5)


async def _mcp_pair(client: Client, i: int) -> None:
    make, drop = _pair_args(i)
    first = await client.call_tool("make_call", make)
    second = await client.call_tool("drop_call", drop)
    if first.is_error or second.is_error:
        raise RuntimeError(f"bench call failed: {first.content} {second.content}")


async def _http_samples(app: Any, token: str, count: int) -> tuple[list[float], list[float]]:
    """(2025-11-25 samples, 2026-07-28 samples) against one HTTP server."""
    stopping = anyio.Event()
    bound: list[str] = []
    ready = anyio.Event()

    def on_bound(url: str) -> None:
        bound.append(url)
        ready.set()

    samples: dict[str, list[float]] = {}
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_http(app, "127.0.0.1", 0, on_bound=on_bound, stopping=stopping))
        with anyio.fail_after(10):
            await ready.wait()
        for mode in ("legacy", "auto"):
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
                transport = streamable_http_client(bound[0], http_client=http)
                async with Client(transport, raise_exceptions=True, mode=mode) as client:
                    samples[mode] = await _timed(count, lambda i: _mcp_pair(client, i))
        stopping.set()
    return samples["legacy"], samples["auto"]
