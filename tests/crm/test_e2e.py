"""The whole path with the simulator: calls routed by rules (business hours, a VIP list, a DTMF menu) through
ingest, the coordinator, the routing agent and the worker, answered, transferred by a person, ended; the CRM agent
writes exactly one record per call, also when it is SIGKILLed mid-call (a real process) and its events come again."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import create_async_engine

from hub.eventlog.tables import agent_tracking
from hub.sdk import CallAnswered
from hub.sdk.feed import consumer_name
from schemas import subjects
from tests.agents.support import (
    CLI,
    FAST,
    PBX,
    ROUTE_POINT,
    agent_up,
    cli_env,
    events_of,
    running,
    running_coordinator,
)
from tests.crm.support import crm_config, outbox, records, running_crm
from tests.helpers import eventually, wait_until
from tests.routing.support import COORDINATOR_RULES, Hub, hub_with_simulator, routing_agent, rules

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


async def answer(hub: Hub, dn: str) -> None:
    """The person at ``dn`` picks up once their phone rings; returns when ingest has published it (people take a
    moment: a transfer within the same instant would never be seen by anyone, 3CX included)."""
    await eventually(lambda: bool(hub.sim.engine.participants(dn)), what=f"{dn} to ring")
    [leg] = hub.sim.engine.participants(dn)
    hub.sim.engine.answer(leg.id)
    await wait_until(lambda: _answered(hub, dn, leg.id), what=f"ingest to see {dn} answer")


async def person_transfers(hub: Hub, from_dn: str, to: str) -> None:
    """The person at ``from_dn`` (Connected) transfers the caller to ``to`` from their phone."""
    await eventually(lambda: _connected(hub, from_dn), what=f"{from_dn} to be connected")
    [leg] = hub.sim.engine.participants(from_dn)
    hub.sim.engine.transfer(leg.id, to)


async def vip_call(hub: Hub, seen: Callable[[str], Awaitable[None]]) -> int:
    """A VIP in business hours: routed to 101, who answers and hands the caller to 102; then they hang up."""
    call = hub.sim.engine.place_call("+15550101", ROUTE_POINT, did="+15550199")
    await answer(hub, "101")
    await seen("101 answered")
    await person_transfers(hub, "101", "102")
    await answer(hub, "102")
    await seen("102 answered")
    hub.sim.engine.hangup(call.callid)
    return call.callid


async def menu_call(hub: Hub) -> int:
    """Anyone else: the menu; they press 2 (102), 102 answers and hands them to 101; then they hang up."""
    call = hub.sim.engine.place_call("+15557770000", ROUTE_POINT, did="+15550199")
    leg = hub.sim.route_point_leg(call.callid)
    await eventually(lambda: _played(hub, leg.id), what="the menu prompt")
    hub.sim.engine.send_dtmf(call.callid, "2")
    await answer(hub, "102")
    await person_transfers(hub, "102", "101")
    await answer(hub, "101")
    await eventually(lambda: _connected(hub, "101"), what="101 to be connected")
    hub.sim.engine.hangup(call.callid)
    return call.callid


async def test_calls_routed_by_rules_answered_transferred_and_ended_give_one_record_each(
    nc: Client, db_url: str, tmp_path: Path
) -> None:
    async with hub_with_simulator(nc) as hub:
        router = routing_agent(hub, rules(open_now=True), tmp_path)
        async with (
            running_coordinator(nc, COORDINATOR_RULES),
            running(router.agent, nc),
            running_crm(nc, db_url, crm_config()),
        ):
            await vip_call(hub, _nothing)
            await menu_call(hub)
            await wait_until(lambda: _delivered(db_url, 2), timeout=15, what="two records")
    by_caller = {r["from_number"]: r for r in await records(db_url)}
    assert len(by_caller) == 2 and len(await outbox(db_url)) == 2
    vip, other = by_caller["+15550101"], by_caller["+15557770000"]
    assert (vip["outcome"], vip["answered_by"], vip["direction"]) == ("answered", "101", "inbound")
    assert [(t["from_dn"], t["to"]) for t in vip["transfers"]] == [(ROUTE_POINT, "101"), ("101", "102")]
    assert [r["rule"] for r in json.loads(vip["record"])["routing"]] == ["vip"]
    assert (other["outcome"], other["answered_by"]) == ("answered", "102")
    assert [(t["from_dn"], t["to"]) for t in other["transfers"]] == [(ROUTE_POINT, "102"), ("102", "101")]
    routing = [(r["rule"], r["action"], r["destination"]) for r in json.loads(other["record"])["routing"]]
    assert routing == [("default", "menu", "main"), ("menu main", "transfer", "102")]
    for record in (vip, other):
        assert record["talk_seconds"] > 0 and record["ring_seconds"] > 0
        assert record["started_at"] < record["answered_at"] < record["ended_at"]


async def test_one_record_when_the_crm_agent_is_killed_mid_call_and_its_events_come_again(
    nc: Client, db_url: str, nats_server: str, tmp_path: Path
) -> None:
    async with hub_with_simulator(nc) as hub:
        env = cli_env(
            nats_server,
            DATABASE_URL=db_url,
            ML_DATA_DIR=str(tmp_path),
            ML_AGENTS__PARTITIONS=str(FAST.partitions),
            ML_AGENTS__HEARTBEAT_S="0.2",
            ML_AGENTS__ACK_WAIT_S="1",  # a dead replica's event comes again after 1 s
            ML_PBXS__0__ID=PBX,
            ML_PBXS__0__BASE_URL=hub.sim.base_url,
            ML_PBXS__0__CLIENT_ID=ROUTE_POINT,
            ML_PBXS__0__CLIENT_SECRET="unused-by-the-crm-agent",
            ML_CRM__POLL_S="0.2",
        )
        # the first replica stops between committing a call.answered and acknowledging it: killed there, that
        # event is redelivered to the next replica, which must see it was already applied
        paused = {**env, "ML_CRM__FAULT_PAUSE_EVENT": "call.answered", "ML_CRM__FAULT_PAUSE_S": "60"}
        router = routing_agent(hub, rules(open_now=True), tmp_path)
        async with running_coordinator(nc, COORDINATOR_RULES), running(router.agent, nc):
            first = subprocess.Popen([*CLI, "agent", "run", "crm"], env=paused, stderr=subprocess.PIPE)  # noqa: ASYNC220
            try:
                await wait_until(lambda: agent_up(nc, "crm"), timeout=30, what="the CRM agent to start")

                held: list[int] = []

                async def killed_after_commit(what: str) -> None:
                    if first.poll() is None:
                        await wait_until(lambda: _tracked(db_url, "call.answered"), what="a committed answer")
                        held.append(await _ack_pending(nc))  # committed, not acknowledged: held by the replica
                        first.send_signal(signal.SIGKILL)
                        await anyio.to_thread.run_sync(first.wait, 10)

                await vip_call(hub, killed_after_commit)
            finally:
                if first.poll() is None:
                    first.kill()
                first.wait(10)
                if first.stderr is not None:
                    first.stderr.close()
            assert first.returncode == -signal.SIGKILL
            assert await records(db_url) == []
            with subprocess.Popen([*CLI, "agent", "run", "crm"], env=env, stderr=subprocess.PIPE) as second:  # noqa: ASYNC220
                try:
                    await wait_until(lambda: _delivered(db_url, 1), timeout=30, what="the record")
                    await wait_until(lambda: _none_pending(nc), what="every event acknowledged")
                finally:
                    second.send_signal(signal.SIGTERM)
                    code = await anyio.to_thread.run_sync(second.wait, 15)
                assert second.stderr is not None
                logs = second.stderr.read().decode()
    assert code == 0, logs[-2000:]
    # the event the killed replica held (committed, unacknowledged) was acknowledged since: it came again, to the
    # new replica, which found it applied already
    assert held == [1]
    [record] = await records(db_url)
    assert (record["from_number"], record["answered_by"], record["outcome"]) == ("+15550101", "101", "answered")
    assert [(t["from_dn"], t["to"]) for t in record["transfers"]] == [(ROUTE_POINT, "101"), ("101", "102")]
    [delivery] = await outbox(db_url)
    assert (delivery["state"], delivery["version"], delivery["attempts"]) == ("delivered", 1, 1)
    assert await _tracked_twice(db_url) == []


# ---------------------------------------------------------------------------- helpers


async def _nothing(what: str) -> None:
    return None


async def _answered(hub: Hub, dn: str, pid: int) -> bool:
    found = await events_of(hub.nc, CallAnswered)
    return any(e.leg is not None and (e.leg.dn, e.leg.participant_id) == (dn, pid) for e in found)


def _connected(hub: Hub, dn: str) -> bool:
    return any(leg.status == "Connected" for leg in hub.sim.engine.participants(dn))


def _played(hub: Hub, pid: int) -> bool:
    try:
        return bool(hub.sim.playout(pid).replies)
    except Exception:
        return False


async def _delivered(db_url: str, n: int) -> bool:
    rows = await outbox(db_url)
    return len(rows) == n and all(r["state"] == "delivered" for r in rows) and len(await records(db_url)) == n


async def _query(db_url: str, statement: Any) -> list[Any]:
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(statement))
    finally:
        await engine.dispose()


async def _tracked(db_url: str, event_type: str) -> bool:
    t = agent_tracking.c
    return bool(await _query(db_url, sa.select(t.event_id).where((t.agent == "crm") & (t.event_type == event_type))))


async def _tracked_twice(db_url: str) -> list[Any]:
    t = agent_tracking.c
    statement = sa.select(t.event_id).where(t.agent == "crm").group_by(t.event_id).having(sa.func.count() > 1)
    return await _query(db_url, statement)


async def _ack_pending(nc: Client) -> int:
    """Events the CRM agent's consumers delivered and have not had acknowledged."""
    js = nc.jetstream()
    total = 0
    for partition in range(FAST.partitions):
        info = await js.consumer_info(subjects.FEED_STREAM, consumer_name("crm", partition))
        total += info.num_ack_pending or 0
    return total


async def _none_pending(nc: Client) -> bool:
    return await _ack_pending(nc) == 0
