"""The service runner: health endpoints, readiness per component, and clean shutdown on signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import anyio
import httpx
import pytest

from hub.runner import Health, HealthServer


@pytest.mark.anyio
async def test_readyz_is_503_until_every_component_is_ready() -> None:
    health = Health()
    async with HealthServer(health) as server, httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/healthz")).status_code == 200
        r = await client.get("/readyz")
        assert r.status_code == 503  # no component has reported yet
        health.set("nats", True)
        health.set("database", False, "connection refused")
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["components"]["database"] == {"ready": False, "detail": "connection refused"}
        health.set("database", True)
        r = await client.get("/readyz")
        assert r.status_code == 200
        assert r.json()["ready"] is True
        health.alive = False
        assert (await client.get("/healthz")).status_code == 503


@pytest.mark.anyio
async def test_metrics_are_prometheus_text_and_unknown_paths_404() -> None:
    from prometheus_client import Counter

    Counter("ml_test_runner_total", "a counter that only this test creates").inc()
    async with HealthServer(Health()) as server, httpx.AsyncClient(base_url=server.url) as client:
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "ml_test_runner_total 1.0" in metrics.text
        assert (await client.get("/nope")).status_code == 404


SERVICE = textwrap.dedent(
    """
    import asyncio, sys
    from hub.runner import run_service

    async def main(ctx):
        ctx.health.set("work", True)
        await ctx.stopping.wait()
        print("cleaned up", flush=True)

    sys.exit(asyncio.run(run_service("demo", main, on_ready_url=lambda u: print(u, flush=True), grace=5)))
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_service_stops_cleanly_on_a_signal(sig: signal.Signals) -> None:
    with subprocess.Popen([sys.executable, "-c", SERVICE], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        deadline = time.monotonic() + 10
        while httpx.get(url + "/readyz").status_code != 200:
            assert time.monotonic() < deadline, "service never became ready"
        proc.send_signal(sig)
        assert proc.wait(10) == 0
        assert proc.stdout.read().strip() == "cleaned up"


@pytest.mark.anyio
async def test_a_service_that_ignores_stop_is_cancelled_after_the_grace_period() -> None:
    from hub.runner import ServiceContext, run_service

    cancelled = anyio.Event()
    started = anyio.Event()
    contexts: list[ServiceContext] = []

    async def stubborn(ctx: ServiceContext) -> None:
        contexts.append(ctx)
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            result: list[int] = []

            async def run() -> None:
                result.append(await run_service("stubborn", stubborn, grace=0.2))

            tg.start_soon(run)
            await started.wait()
            contexts[0].stopping.set()
        await cancelled.wait()
    assert result == [0]


@pytest.mark.anyio
async def test_a_failing_service_exits_non_zero() -> None:
    from hub.runner import ServiceContext, run_service

    async def broken(ctx: ServiceContext) -> None:
        raise RuntimeError("boom")

    with anyio.fail_after(10):
        assert await run_service("broken", broken) == 1
