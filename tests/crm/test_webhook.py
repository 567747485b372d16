"""The signed webhook target with the simulator's call through ingest: while the receiver is down the delivery waits
and is retried; once it is up the record arrives once, signed, with its idempotency key."""

from __future__ import annotations

import json

import pytest
from nats.aio.client import Client

from agents.crm import RetryPolicy
from hub.natsd import free_port
from hub.sdk import CallAnswered, CallRinging
from schemas.events import EventBase
from tests.agents.support import events_of
from tests.crm.support import crm_config, outbox, records, running_crm
from tests.crm.webhook import SECRET, Receiver, listening
from tests.helpers import eventually, wait_until
from tests.routing.support import hub_with_simulator

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


async def test_a_webhook_that_is_down_for_a_while_gets_the_record_later_once(nc: Client, db_url: str) -> None:
    port = free_port()  # nothing listens there yet: the receiver is down
    receiver = Receiver()
    config = crm_config(
        targets=("database", "webhook"),
        webhook_url=f"http://127.0.0.1:{port}/hook",
        webhook_secret=SECRET,
        retry=RetryPolicy(base_s=0.1, max_s=0.4),
    )
    async with hub_with_simulator(nc) as hub, running_crm(nc, db_url, config) as crm:
        call = hub.sim.engine.place_call("+15550100", "101", did="+15550199")
        await eventually(lambda: bool(hub.sim.engine.participants("101")), what="101 to ring")
        await wait_until(lambda: _seen(nc, CallRinging), what="ingest to see the ringing")
        hub.sim.engine.answer(hub.sim.engine.participants("101")[0].id)
        await wait_until(lambda: _seen(nc, CallAnswered), what="ingest to see the answer")
        hub.sim.engine.hangup(call.callid)
        await wait_until(lambda: _state(db_url, "webhook", "pending", attempts=3), what="three failed attempts")
        [row] = await outbox(db_url, "webhook")
        assert "unreachable" in str(row["last_error"])
        async with listening(receiver, port):
            await wait_until(lambda: _state(db_url, "webhook", "delivered"), what="the delivery")
            assert crm.deliverer is not None
            await crm.deliverer.pass_once()  # another pass finds nothing more to send
    [record] = await records(db_url)
    [delivery] = receiver.deliveries
    assert receiver.bad_signatures == 0
    assert delivery["key"] == f"{record['record_id']}:1"
    assert delivery["body"]["record"] == json.loads(record["record"])
    assert (record["answered_by"], record["outcome"], record["from_number"]) == ("101", "answered", "+15550100")
    [row] = await outbox(db_url, "webhook")
    assert (row["state"], row["external_id"]) == ("delivered", "hook-1")


async def _seen(nc: Client, cls: type[EventBase]) -> bool:
    return bool(await events_of(nc, cls))


async def _state(db_url: str, target: str, state: str, attempts: int = 0) -> bool:
    rows = await outbox(db_url, target)
    return bool(rows) and rows[0]["state"] == state and int(rows[0]["attempts"]) >= attempts
