"""Coordination benchmarks (issue 11), each next to a raw NATS hop measured in the same run.

- ``coord.claim``: how long ``ctx.claim()`` takes (an atomic KV create plus the pipelined ``agent.claimed`` event),
  against a raw NATS request/reply round trip and a raw KV create.
- ``agent.latency``: event published to ML_EVENTS -> the agent's handler called, through the agent feed (the server's
  partitioned copy) and a partition consumer, at a steady rate over many calls; against a raw core NATS hop and the
  plain JetStream publish -> pull-consumer hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError

from hub.bench.bus_bench import (
    READY_WITHIN_S,
    bench_nats,
    bus_latencies,
    connected,
    latency_vs_raw,
    paced,
    raw_latencies,
)
from hub.bench.registry import BenchOptions, BenchResult, Figure, benchmark, percentile
from hub.bus import EventPublisher, connect, ensure_streams
from hub.bus.kv import ALL_BUCKETS, CALL_LEASES, open_bucket
from hub.config import BusConfig
from hub.sdk.agent import Agent
from hub.sdk.context import Context
from hub.sdk.keeper import LeaseKeeper
from hub.sdk.leases import LeaseStore
from hub.sdk.runtime import AgentRuntime, RuntimeOptions
from schemas import events as ev
from schemas import subjects
from schemas.common import LegRef, Participant, utcnow
from schemas.identity import leg_event_id, new_call_id

PBX = "bench"


async def _fresh(url: str) -> None:
    nc = await connect(url, name="bench-reset")
    js = nc.jetstream()
    for name in (subjects.EVENTS_STREAM, subjects.COMMANDS_STREAM, subjects.FEED_STREAM):
        with contextlib.suppress(Exception):
            await js.delete_stream(name)
    for bucket in ALL_BUCKETS:
        with contextlib.suppress(Exception):
            await js.delete_key_value(bucket.name)
    await ensure_streams(js, BusConfig())
    await nc.close()


async def _request_reply(url: str, count: int) -> list[float]:
    async def respond(msg: Msg) -> None:
        await msg.respond(b"ok")

    out: list[float] = []
    async with connected(url, "bench-responder", "bench-requester") as (server, client):
        await server.subscribe("bench.rr", cb=respond)
        await server.flush()
        await _until_answered(client, "bench.rr")
        for _ in range(count):
            t0 = time.perf_counter()
            await client.request("bench.rr", b"x" * 200, timeout=5)
            out.append((time.perf_counter() - t0) * 1e3)
    return out


async def _until_answered(client: NatsClient, subject: str) -> None:
    """Request ``subject`` until the responder answers once (see ``until_delivered`` for why), bounded."""
    deadline = time.monotonic() + READY_WITHIN_S
    while True:
        try:
            await client.request(subject, b"probe", timeout=0.5)
            return
        except (NoRespondersError, TimeoutError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no responder on {subject} answered within {READY_WITHIN_S:.0f} s") from None


@benchmark("coord.claim", description="ctx.claim() (atomic KV create + agent.claimed) vs raw NATS request/reply")
async def coord_claim(options: BenchOptions) -> BenchResult:
    count = options.scale(3000, 200)
    async with bench_nats(options) as url:
        await _fresh(url)
        raw = await _request_reply(url, count)
        nc = await connect(url, name="bench-claims")
        js = nc.jetstream()
        kv = await open_bucket(js, CALL_LEASES)
        kv_create: list[float] = []
        for i in range(count):
            t0 = time.perf_counter()
            await kv.create(f"raw.{i}", b"{}")
            kv_create.append((time.perf_counter() - t0) * 1e3)
        publisher = EventPublisher(js)
        keeper = LeaseKeeper(LeaseStore(kv), publisher, agent="bench", replica="r1", lease_s=30)
        leg = LegRef(dn="800", participant_id=1, legid=1)
        claims: list[float] = []
        for _ in range(count):
            call_id = new_call_id()
            t0 = time.perf_counter()
            won = await keeper.claim(PBX, call_id, leg=leg, trigger=uuid.uuid4())
            claims.append((time.perf_counter() - t0) * 1e3)
            assert won
            if len(claims) % 100 == 0:  # the runtime's renew loop awaits the pipelined acks every few seconds
                await publisher.flush()
        await publisher.flush()
        await nc.close()
    p50, p99 = percentile(claims, 50), percentile(claims, 99)
    raw99 = percentile(raw, 99)
    return BenchResult(
        name="coord.claim",
        figures=[Figure(name="claim p50", value=p50, unit="ms"), Figure(name="claim p99", value=p99, unit="ms")],
        baseline=[
            Figure(name="raw req/reply p50", value=percentile(raw, 50), unit="ms"),
            Figure(name="raw req/reply p99", value=raw99, unit="ms"),
            Figure(name="raw KV create p99", value=percentile(kv_create, 99), unit="ms"),
        ],
        headline="claim p99 / raw req/reply p99",
        ratio=p99 / raw99 if raw99 > 0 else None,
        better="lower",
        target="report (issue 11)",
        notes=f"{count} sequential claims of distinct calls; the agent.claimed event is pipelined as in ctx.claim() "
        "(its acks awaited every 100 claims, untimed, as the runtime's renew loop does)",
    )


def _updates(count: int, calls: int) -> list[ev.ParticipantUpdated]:
    ids = [new_call_id() for _ in range(calls)]
    out = []
    for i in range(count):
        call_id = ids[i % calls]
        leg = LegRef(dn="800", participant_id=i % calls, legid=1)
        participant = Participant(dn="800", participant_id=leg.participant_id, legid=1, status="Connected")
        out.append(
            ev.ParticipantUpdated(
                event_id=leg_event_id(PBX, call_id, leg.key, "updated", i),
                pbx_id=PBX,
                call_id=call_id,
                leg=leg,
                occurred_at=utcnow(),
                data=ev.ParticipantUpdatedData(participant=participant, changed=[str(i)]),
            )
        )
    return out


async def _agent_latencies(url: str, rate: float, count: int) -> list[float]:
    await _fresh(url)
    sent: dict[uuid.UUID, int] = {}
    latencies: list[float] = []
    done = asyncio.Event()
    agent = Agent("bench")

    warm: set[uuid.UUID] = set()
    warmed = asyncio.Event()

    @agent.on(ev.ParticipantUpdated)
    async def seen(event: ev.ParticipantUpdated, ctx: Context) -> None:
        if event.event_id in warm:
            warm.discard(event.event_id)
            if not warm:
                warmed.set()
            return
        latencies.append((time.perf_counter_ns() - sent[event.event_id]) / 1e6)
        if len(latencies) >= count:
            done.set()

    agent_nc = await connect(url, name="bench-agent")
    pub_nc = await connect(url, name="bench-agent-pub")
    runtime = AgentRuntime(agent, agent_nc, RuntimeOptions(partitions=16, pbx_ids=()))
    stopping = asyncio.Event()
    task = asyncio.create_task(runtime.run(stopping))
    await asyncio.wait_for(runtime.ready.wait(), 10)
    publisher = EventPublisher(pub_nc.jetstream())
    # the server sets up a new feed's source consumer in the first ~100-200 ms: warm up until events flow
    warm_up = _updates(32, calls=32)
    warm.update(e.event_id for e in warm_up)
    await publisher.publish_many(warm_up)
    await publisher.flush()
    await asyncio.wait_for(warmed.wait(), 10)
    events = _updates(count, calls=200)
    async for i in paced(rate, count):
        event = events[i]
        sent[event.event_id] = time.perf_counter_ns()
        await publisher.publish(event)
    await publisher.flush()
    await asyncio.wait_for(done.wait(), 60)
    stopping.set()
    await task
    await agent_nc.close()
    await pub_nc.close()
    return latencies


@benchmark("agent.latency", description="event -> agent handler through the partitioned feed vs a raw NATS hop")
async def agent_latency(options: BenchOptions) -> BenchResult:
    rate = 500.0
    count = options.scale(5000, 300)
    async with bench_nats(options) as url:
        raw = await raw_latencies(url, rate, count, b"x" * 700)
        jetstream = await bus_latencies(url, rate, count)
        agent = await _agent_latencies(url, rate, count)
    return latency_vs_raw(
        "agent.latency",
        "agent",
        agent,
        raw,
        jetstream,
        target="report (issue 11)",
        met=None,
        notes=f"{count} events over 200 calls at {rate:.0f}/s; 16 partitions, one replica; publish -> handler entry, "
        "after a warm-up (a new feed's source consumer starts within ~0.2 s; events meanwhile wait, none is lost)",
    )
