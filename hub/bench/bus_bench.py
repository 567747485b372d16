"""Bus benchmarks (issue 3): the added latency of the JetStream path over raw NATS at a steady rate."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from hub import natsd
from hub.bench.registry import BenchOptions, BenchResult, Figure, benchmark, percentile
from hub.bus import EventPublisher, connect, ensure_streams
from hub.bus.pull import BatchPuller
from hub.config import BusConfig
from hub.demo import synthetic_stream
from schemas import subjects

T_HEADER = "Ml-Bench-T"
PROBE_HEADER = "Ml-Bench-Probe"
READY_WITHIN_S = 10.0


@contextlib.asynccontextmanager
async def connected(url: str, *names: str) -> AsyncIterator[list[NatsClient]]:
    """One connection per name, all closed on the way out whatever happened (a failed measurement must not leave
    them to the garbage collector, whose warnings then fail an unrelated test)."""
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for name in names:
            client = await connect(url, name=name)
            stack.push_async_callback(client.close)
            clients.append(client)
        yield clients


async def until_delivered(pub: NatsClient, subject: str, seen: asyncio.Event) -> None:
    """Publish probes on ``subject`` until the subscriber sets ``seen``.

    A subscription flushed on one connection should be visible to the next publish from another at once; on a loaded
    CI box a measurement once lost its first messages anyway, so the timed loop starts only after a probe got through.
    """
    deadline = time.monotonic() + READY_WITHIN_S
    while not seen.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no probe on {subject} reached the subscriber within {READY_WITHIN_S:.0f} s")
        await pub.publish(subject, b"", headers={PROBE_HEADER: "1"})
        await pub.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seen.wait(), 0.2)


@contextlib.asynccontextmanager
async def bench_nats(options: BenchOptions) -> AsyncIterator[str]:
    """The NATS URL to measure against: the given one, else a fresh embedded server for this run."""
    if options.nats_url:
        yield options.nats_url
        return
    server = natsd.start()
    try:
        yield server.url
    finally:
        server.stop()


async def paced(rate: float, count: int) -> AsyncIterator[int]:
    start = time.perf_counter()
    for i in range(count):
        ahead = i / rate - (time.perf_counter() - start)
        if ahead > 0:
            await asyncio.sleep(ahead)
        yield i


async def raw_latencies(url: str, rate: float, count: int, payload: bytes) -> list[float]:
    latencies: list[float] = []
    done = asyncio.Event()
    probed = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        headers = msg.headers or {}
        if PROBE_HEADER in headers:
            probed.set()
            return
        latencies.append(time.perf_counter_ns() - int(headers[T_HEADER]))
        if len(latencies) >= count:
            done.set()

    async with connected(url, "bench-raw-pub", "bench-raw-sub") as (pub, sub_nc):
        await sub_nc.subscribe("bench.raw", cb=on_msg)
        await sub_nc.flush()
        await until_delivered(pub, "bench.raw", probed)
        async for _ in paced(rate, count):
            await pub.publish("bench.raw", payload, headers={T_HEADER: str(time.perf_counter_ns())})
            await pub.flush()
        await asyncio.wait_for(done.wait(), 30)
    return [ns / 1e6 for ns in latencies]


async def bus_latencies(url: str, rate: float, count: int) -> list[float]:
    pub_nc = await connect(url, name="bench-bus-pub")
    sub_nc = await connect(url, name="bench-bus-sub")
    js = pub_nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_stream(subjects.EVENTS_STREAM)
    await ensure_streams(js, BusConfig())
    publisher = EventPublisher(js)
    await sub_nc.jetstream().add_consumer(
        subjects.EVENTS_STREAM, ConsumerConfig(durable_name="bench-latency", ack_policy=AckPolicy.EXPLICIT)
    )
    puller = await BatchPuller(sub_nc, subjects.EVENTS_STREAM, "bench-latency").start()
    latencies: list[float] = []

    async def consume() -> None:
        while len(latencies) < count:
            msgs = await puller.fetch(100, expires=1.0, idle=0)
            now = time.perf_counter_ns()
            for msg in msgs:
                latencies.append(now - int((msg.headers or {})[T_HEADER]))
                await msg.ack()

    consumer = asyncio.create_task(consume())
    events = synthetic_stream("bench", seed=1)
    async for _ in paced(rate, count):
        event = next(events)
        await publisher.publish_raw(
            subjects.event_subject(event),
            event.model_dump_json().encode(),
            str(event.event_id),
            headers={T_HEADER: str(time.perf_counter_ns())},
        )
    await publisher.flush()
    await asyncio.wait_for(consumer, 30)
    await pub_nc.close()
    await sub_nc.close()
    return [ns / 1e6 for ns in latencies]


def latency_vs_raw(
    name: str,
    label: str,
    measured: list[float],
    raw: list[float],
    jetstream: list[float],
    *,
    target: str,
    met: bool | None,
    notes: str,
) -> BenchResult:
    """A latency result next to the raw NATS hop and the JetStream hop measured in the same run (ms)."""
    raw99 = percentile(raw, 99)
    p99 = percentile(measured, 99)
    return BenchResult(
        name=name,
        figures=[
            Figure(name=f"{label} p50", value=percentile(measured, 50), unit="ms"),
            Figure(name=f"{label} p99", value=p99, unit="ms"),
            Figure(name="added p99 over raw", value=p99 - raw99, unit="ms"),
        ],
        baseline=[
            Figure(name="raw NATS p50", value=percentile(raw, 50), unit="ms"),
            Figure(name="raw NATS p99", value=raw99, unit="ms"),
            Figure(name="JetStream hop p99", value=percentile(jetstream, 99), unit="ms"),
        ],
        headline=f"{label} p99 / raw NATS p99",
        ratio=p99 / raw99 if raw99 > 0 else None,
        better="lower",
        target=target,
        met=met,
        notes=notes,
    )


@benchmark("bus.latency", description="JetStream publish -> pull consumer latency at 1,000 events/s vs raw NATS")
async def bus_latency(options: BenchOptions) -> BenchResult:
    rate = 1000.0
    count = options.scale(10_000, 500)
    payload = b"x" * 1024
    async with bench_nats(options) as url:
        raw = await raw_latencies(url, rate, count, payload)
        bus = await bus_latencies(url, rate, count)
    raw_p50, raw_p99 = percentile(raw, 50), percentile(raw, 99)
    bus_p50, bus_p99 = percentile(bus, 50), percentile(bus, 99)
    added = bus_p99 - raw_p99
    return BenchResult(
        name="bus.latency",
        figures=[
            Figure(name="bus p50", value=bus_p50, unit="ms"),
            Figure(name="bus p99", value=bus_p99, unit="ms"),
            Figure(name="added p99", value=added, unit="ms"),
        ],
        baseline=[Figure(name="raw p50", value=raw_p50, unit="ms"), Figure(name="raw p99", value=raw_p99, unit="ms")],
        headline="bus p99 / raw p99",
        ratio=bus_p99 / raw_p99 if raw_p99 > 0 else None,
        better="lower",
        target="added p99 <= 2 ms",
        met=None if options.quick else added <= 2.0,
        notes=f"{count} events of ~0.7-1 KiB at {rate:.0f}/s; the hub's batch puller (up to 100), explicit acks",
    )
