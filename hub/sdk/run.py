"""``masterlinc agent run NAME``: one agent replica as a service (start as many as you like; they split calls)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from hub.bus import BusUnavailableError, connect, ensure_streams
from hub.config import Settings
from hub.runner import ServiceContext, run_service, until_ready
from hub.sdk.agent import Agent
from hub.sdk.runtime import AgentRuntime, RuntimeOptions
from hub.sdk.tracking import Tracker, TrackingUnavailable


def runtime_options(settings: Settings, *, backfill: bool = False) -> RuntimeOptions:
    a = settings.agents
    return RuntimeOptions(
        partitions=a.partitions,
        lease_s=a.lease_s,
        heartbeat_s=a.heartbeat_s,
        down_after_beats=a.down_after_beats,
        ack_wait_s=a.ack_wait_s,
        handler_attempts=a.handler_attempts,
        feed_max_age_s=a.feed_max_age_s,
        backfill=backfill,
        pbx_ids=tuple(p.id for p in settings.pbxs),
    )


@contextlib.asynccontextmanager
async def reporting_ready(ctx: ServiceContext, component: str, ready: asyncio.Event) -> AsyncIterator[None]:
    """/readyz reports ``component`` not ready until ``ready`` is set."""
    ctx.health.set(component, False, "starting")

    async def report() -> None:
        await ready.wait()
        ctx.health.set(component, True)

    task = asyncio.create_task(report())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def agent_main(ctx: ServiceContext, settings: Settings, agent: Agent, backfill: bool) -> None:
    ctx.health.set("nats", False, "connecting")
    url = settings.effective_nats_url()
    nc = await until_ready(
        "nats",
        lambda: connect(url, name=f"masterlinc-agent-{agent.name}", **settings.bus.security.options()),
        BusUnavailableError,
        ctx.health,
        ctx.stopping,
    )
    if nc is None:
        return
    tracker: Tracker | None = None
    try:
        await ensure_streams(nc.jetstream(), settings.bus)
        if agent.database is not None:
            db_url = settings.effective_database_url()
            tracker = await until_ready(
                "database",
                lambda: Tracker.open(db_url, agent.name, agent.database),
                TrackingUnavailable,
                ctx.health,
                ctx.stopping,
            )
            if tracker is None:
                return
        runtime = AgentRuntime(agent, nc, runtime_options(settings, backfill=backfill), tracker=tracker)
        async with reporting_ready(ctx, f"agent {agent.name}", runtime.ready):
            await runtime.run(ctx.stopping)
    finally:
        if tracker is not None:
            await tracker.close()
        await nc.close()


async def run_agent_service(settings: Settings, agent: Agent, *, backfill: bool = False) -> int:
    return await run_service(
        f"agent-{agent.name}",
        lambda ctx: agent_main(ctx, settings, agent, backfill),
        host=settings.http.host,
        port=settings.http.port,
    )
