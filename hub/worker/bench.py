"""Worker benchmarks (D§11): commands through ``hub.sdk`` -> ML_COMMANDS -> worker -> simulator -> reply.

The simulator runs in its own process; the worker(s) too for the throughput figure (two ``masterlinc worker``
processes sharing the work queue, rate limit lifted, token from a token owner in this process, as ingest's leader
would serve it). Baselines are measured in the same run against the same simulator:

- ``worker.roundtrip``: one drop at a time, p50/p99, next to a raw NATS request/reply and a raw HTTP POST of the
  same action to the simulator (target p99 <= max(3x (raw NATS p99 + raw HTTP p99), 10 ms));
- ``worker.throughput``: drops, and answers of ringing route-point legs, with many commands in flight, next to the
  simulator's own action rate (raw HTTP, 8 keep-alive connections; target >= 50% of it; says whether 1,000
  commands/s is reached). Each command is two PBX requests: the leg-ownership read (D§5) and the action.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from hub import natsd
from hub.bench.procs import spawn
from hub.bench.registry import BenchOptions, BenchResult, Figure, benchmark, percentile
from hub.bus import connect, ensure_streams
from hub.bus.kv import CALL_IDS, open_bucket
from hub.config import BusConfig, PbxConfig
from hub.pbx import CallControlClient, CallControlGateway, TokenProvider
from hub.pbx.broker import TokenOwner
from hub.pbx.session import RestSession
from hub.sdk import CommandClient
from hub.worker.legs import LegOwnership
from hub.worker.service import Worker, WorkerConfig
from schemas import commands as c
from schemas.common import LegRef
from schemas.identity import new_call_id

PBX = "bench"
_SIM = r"""
import asyncio, sys
from hub.simulator.config import SimConfig
from hub.simulator.server import running_simulator
async def main():
    config = SimConfig(route_point_inbound_connected=sys.argv[2] == "connected", new_token_revokes_old=True)
    async with running_simulator(config, port=int(sys.argv[1])):
        print("ready", flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def _simulator(route_point: str) -> AsyncIterator[str]:
    port = natsd.free_port()
    with spawn(["-c", _SIM, str(port), route_point]) as proc:
        assert proc.stdout is not None
        if (await asyncio.to_thread(proc.stdout.readline)).strip() != "ready":
            raise RuntimeError("the simulator did not start")
        yield f"http://127.0.0.1:{port}"


async def _place(http: httpx.AsyncClient, n: int) -> list[LegRef]:
    """n outside calls to the route point (driving API); their route-point legs."""
    legs: list[LegRef] = []
    for i in range(n):
        body = (await http.post("/_sim/calls", json={"from": f"+1559{i:07d}", "to": "800"})).json()
        leg = next(p for p in body["legs"] if p["dn"] == "800")
        legs.append(LegRef(dn="800", participant_id=leg["id"], legid=leg["legid"]))
    return legs


def _pbx(base_url: str) -> PbxConfig:
    return PbxConfig(id=PBX, base_url=base_url, client_id="800", client_secret="sim-secret")  # noqa: S106 - the simulator's


# --------------------------------------------------------------------------- round trip


async def _raw_http_ms(http: httpx.AsyncClient, tokens: TokenProvider, legs: list[LegRef]) -> list[float]:
    out = []
    for leg in legs:
        token = await tokens.token()
        started = time.perf_counter()
        response = await http.post(f"/callcontrol/800/participants/{leg.participant_id}/drop", json={},
                                   headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        out.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return out


async def _raw_nats_ms(nc: Any, n: int) -> list[float]:
    async def echo(msg: Any) -> None:
        await msg.respond(msg.data)

    sub = await nc.subscribe("bench.worker.echo", cb=echo)
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await nc.request("bench.worker.echo", b"x" * 600, timeout=5)
        out.append((time.perf_counter() - started) * 1000)
    await sub.unsubscribe()
    return out


@benchmark("worker.roundtrip", description="Command round trip SDK -> worker -> simulator -> reply vs raw NATS+HTTP")
async def worker_roundtrip(options: BenchOptions) -> BenchResult:
    n = options.scale(400, 60)
    with natsd.running() as server:
        nc = await connect(options.nats_url or server.url, name="bench-worker")
        await ensure_streams(nc.jetstream(), BusConfig())
        async with (
            _simulator("connected") as base,
            httpx.AsyncClient(base_url=base) as http,
            RestSession(base) as session,  # as `masterlinc worker` sends Call Control requests
        ):
            tokens = TokenProvider(http, "800", "sim-secret")
            rest = CallControlClient(session, tokens)
            legs_check = LegOwnership(rest, await open_bucket(nc.jetstream(), CALL_IDS))
            worker = Worker(nc, CallControlGateway(rest, _pbx(base)), leg_check=legs_check.check,
                            config=WorkerConfig(name="bench", durable="ml-bench-rt", rate_per_second=0))  # fmt: skip
            stopping = asyncio.Event()
            task = asyncio.create_task(worker.run(stopping, pbx_id=PBX))
            await asyncio.wait_for(worker.ready.wait(), 10)
            client = CommandClient(nc)
            raw_http = await _raw_http_ms(http, tokens, await _place(http, n))
            raw_nats = await _raw_nats_ms(nc, n)
            hub: list[float] = []
            for leg in await _place(http, n):
                command = c.Drop(pbx_id=PBX, issued_by="agent:bench", call_id=new_call_id(), leg=leg)
                started = time.perf_counter()
                result = await client.send(command)
                hub.append((time.perf_counter() - started) * 1000)
                if not result.ok:
                    raise RuntimeError(f"drop failed: {result.error}")
            stopping.set()
            await task
        await nc.close()
    baseline_p99 = percentile(raw_nats, 99) + percentile(raw_http, 99)
    target = max(3 * baseline_p99, 10.0)
    p99 = percentile(hub, 99)
    return BenchResult(
        name="worker.roundtrip",
        figures=[
            Figure(name="drop p50", value=percentile(hub, 50), unit="ms"),
            Figure(name="drop p99", value=p99, unit="ms"),
        ],
        baseline=[
            Figure(name="raw NATS req/reply p50", value=percentile(raw_nats, 50), unit="ms"),
            Figure(name="raw NATS req/reply p99", value=percentile(raw_nats, 99), unit="ms"),
            Figure(name="raw HTTP drop p50", value=percentile(raw_http, 50), unit="ms"),
            Figure(name="raw HTTP drop p99", value=percentile(raw_http, 99), unit="ms"),
        ],
        headline="drop p99 / (raw NATS p99 + raw HTTP p99)",
        ratio=p99 / baseline_p99 if baseline_p99 else None,
        better="lower",
        target=f"p99 <= max(3x baseline, 10 ms) = {target:.1f} ms",
        met=None if options.quick else p99 <= target,
        notes=f"{n} drops one at a time; each is a JetStream publish, the worker's idempotency claim, the leg "
        "check (a participant GET), the drop POST, three command events and the reply",
    )


# --------------------------------------------------------------------------- throughput


async def _raw_rate(base: str, tokens: TokenProvider, legs: list[LegRef], action: str, connections: int = 8) -> float:
    token = await tokens.token()
    queue = list(legs)
    async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=connections)) as http:

        async def one() -> None:
            while queue:
                leg = queue.pop()
                await http.post(f"/callcontrol/800/participants/{leg.participant_id}/{action}", json={},
                                headers={"Authorization": f"Bearer {token}"})  # fmt: skip

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(connections)))
    return len(legs) / (time.perf_counter() - started)


async def _hub_rate(client: CommandClient, legs: list[LegRef], cls: type[c.CommandBase], in_flight: int) -> float:
    queue = list(legs)
    failures: list[str] = []

    async def one() -> None:
        while queue:
            leg = queue.pop()
            result = await client.send(cls(pbx_id=PBX, issued_by="agent:bench", call_id=new_call_id(), leg=leg))
            if not result.ok:
                failures.append(str(result.error))

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(in_flight)))
    rate = len(legs) / (time.perf_counter() - started)
    if failures:
        raise RuntimeError(f"{len(failures)} commands failed, first: {failures[0]}")
    return rate


@contextlib.contextmanager
def _workers(nats_url: str, base: str, count: int, verify: bool = True) -> Iterator[list[subprocess.Popen[str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_")}
    env.update({
        "NATS_URL": nats_url, "ML_PBXS__0__ID": PBX, "ML_PBXS__0__BASE_URL": base, "ML_PBXS__0__CLIENT_ID": "800",
        "ML_PBXS__0__CLIENT_SECRET": "sim-secret", "ML_WORKER__RATE_PER_SECOND": "0", "ML_LOG_LEVEL": "WARNING",
        "ML_WORKER__TOKEN_SOURCE": "owner", "ML_WORKER__VERIFY_LEGS": "true" if verify else "false",
    })  # fmt: skip
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(spawn(["-m", "hub.cli", "worker"], env)) for _ in range(count)]


async def _one_throughput(
    nats_url: str, route_point: str, cls: type[c.CommandBase], n: int, *, verify: bool = True
) -> tuple[float, float]:
    nc = await connect(nats_url, name="bench-throughput")
    try:
        async with _simulator(route_point) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
            tokens = TokenProvider(http, "800", "sim-secret")
            owner = TokenOwner(nc, PBX, tokens)
            await owner.start()
            action = "drop" if cls is c.Drop else "answer"
            raw = await _raw_rate(base, tokens, await _place(http, n), action)
            legs = await _place(http, n)
            client = CommandClient(nc)
            with _workers(nats_url, base, 2, verify):
                warm = await _place(http, 4)
                for leg in warm:  # both workers up and connected
                    await client.send(cls(pbx_id=PBX, issued_by="agent:bench", call_id=new_call_id(), leg=leg),
                                      wait=30)  # fmt: skip
                hub = await _hub_rate(client, legs, cls, in_flight=128)
            await owner.stop()
    finally:
        await nc.close()
    return hub, raw


@benchmark("worker.throughput", description="Drop and answer commands/s with two workers vs the simulator's own rate")
async def worker_throughput(options: BenchOptions) -> BenchResult:
    n = options.scale(2000, 200)
    with natsd.running() as server:
        url = options.nats_url or server.url
        nc = await connect(url, name="bench-setup")
        await ensure_streams(nc.jetstream(), BusConfig())
        await nc.close()
        drop_hub, drop_raw = await _one_throughput(url, "connected", c.Drop, n)
        answer_hub, answer_raw = await _one_throughput(url, "ringing", c.Answer, n)
        unverified, unverified_raw = await _one_throughput(url, "connected", c.Drop, n, verify=False)
    worst = min(drop_hub / drop_raw, answer_hub / answer_raw)
    return BenchResult(
        name="worker.throughput",
        figures=[
            Figure(name="drop commands/s", value=drop_hub, unit="cmd/s"),
            Figure(name="answer commands/s", value=answer_hub, unit="cmd/s"),
            Figure(name="drop commands/s, leg check off", value=unverified, unit="cmd/s"),
        ],
        baseline=[
            Figure(name="simulator drop actions/s (raw HTTP)", value=drop_raw, unit="req/s"),
            Figure(name="simulator answer actions/s (raw HTTP)", value=answer_raw, unit="req/s"),
            Figure(name="simulator drop actions/s, third run", value=unverified_raw, unit="req/s"),
        ],
        headline="the lower of drop and answer: hub commands/s / simulator actions/s",
        ratio=worst,
        target=">= 50% of the simulator's own action rate; 1,000 commands/s "
        + ("reached" if min(drop_hub, answer_hub) >= 1000 else "not reached"),
        met=None if options.quick else worst >= 0.5,
        notes=f"{n} commands of each kind, 128 in flight, two worker processes, rate limit off; every command "
        "also reads its leg first (D§5 ownership check). "
        + json.dumps({"drop": round(drop_hub), "answer": round(answer_hub), "drop_unverified": round(unverified)}),
    )
