"""The participant stream client against the simulator: a session left early stops at once, leaving nothing."""

from __future__ import annotations

import asyncio
import logging

import anyio
import httpx
import pytest

from hub.audio.stream import ParticipantStream
from hub.pbx.token import TokenProvider
from hub.simulator import SimConfig, running_simulator
from tests.helpers import eventually

pytestmark = pytest.mark.anyio


def _waiting_on_events() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if "Event.wait" in repr(t.get_coro())]


async def test_a_session_left_before_the_leg_connects_stops_its_outgoing_stream_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The soak's routing agent left menus of calls that were gone before their leg connected: each left-behind
    poster waited out the 2 s exit bound ("did not end in time") and its waiter tasks were destroyed pending."""
    caplog.set_level(logging.WARNING)
    async with running_simulator(SimConfig()) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        tokens = TokenProvider(http, sim.config.client_id, sim.config.client_secret)
        call = sim.engine.place_call("+15550100", "800")
        leg = sim.route_point_leg(call.callid).id
        sim.engine.hangup(call.callid)  # gone before the agent got to it: every GET answers 404
        stream = ParticipantStream(http, tokens, dn="800", participant_id=leg)
        before = set(_waiting_on_events())
        with anyio.fail_after(10):
            async with stream.session() as session:
                await eventually(lambda: session.get_attempts >= 1, what="the first GET (404)")
        assert not stream.connected.is_set() and stream.post_attempts == 0
        await eventually(lambda: set(_waiting_on_events()) <= before, what="the stream's waiters to be gone")
    assert [r.getMessage() for r in caplog.records if "did not end in time" in r.getMessage()] == []


async def test_a_leg_gone_before_its_stream_connects_is_a_warning_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The soak's routing agent logged 500 errors for callers who hung up before their menu's stream opened."""
    caplog.set_level(logging.WARNING)
    async with running_simulator(SimConfig()) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        tokens = TokenProvider(http, sim.config.client_id, sim.config.client_secret)
        call = sim.engine.place_call("+15550100", "800")
        leg = sim.route_point_leg(call.callid).id
        sim.engine.hangup(call.callid)  # every GET answers 404
        stream = ParticipantStream(http, tokens, dn="800", participant_id=leg, connect_timeout_s=0.3)
        with anyio.fail_after(10):
            async with stream.session():
                await stream.ended.wait()
    assert stream.error is not None and stream.error.status == 404
    records = [r for r in caplog.records if r.name == "hub.audio.stream" and "did not connect" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.WARNING]
