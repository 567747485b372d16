"""An agent's lifespan: what it holds for the whole run is open before its first event and closed after its last
spawned task, and it gets the runtime's bus connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client

from hub.sdk import Agent, AgentRuntime, CallAnswered, Context
from tests.agents.support import CallScript, publish, running
from tests.helpers import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


async def test_the_lifespan_wraps_every_handler_and_spawned_task(nc: Client) -> None:
    log: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(runtime: AgentRuntime) -> AsyncIterator[None]:
        assert runtime.nc is nc
        log.append("open")
        try:
            yield
        finally:
            log.append("close")

    agent = Agent("holder", lifespan=lifespan)

    @agent.on(CallAnswered)
    async def answered(event: CallAnswered, ctx: Context) -> None:
        log.append("handled")

        async def long_work() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                log.append("task cancelled")

        ctx.spawn(long_work())

    async with running(agent, nc):
        call = CallScript()
        await publish(nc, call.answered())
        await eventually(lambda: "handled" in log, what="the handler")
    assert log == ["open", "handled", "task cancelled", "close"]
