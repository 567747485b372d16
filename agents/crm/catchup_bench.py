"""``crm.catchup``: how fast one CRM replica works through a backlog (the rate at which it recovers from being
behind: after a restart, an outage of its database, or a burst).

Typical calls (13 events each: route point, routing, two transfers, end) are published while the CRM is stopped
(its consumers exist, so the events wait for it), then one replica starts at the default 32 partitions and this
process times it until every call's record is in the built-in table (its ``crm.record_written``, published after
the commit, has arrived). The CRM runs in this process, so the CPU
figure is the CRM's own (the nats-server and the database are other processes). Baseline, measured in the same
run: single-row INSERT + COMMIT on one connection, the ceiling of a transaction per event.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from agents.crm import CrmAgent, CrmConfig
from agents.crm.bench import _database, _raw_commits
from hub.bench.bus_bench import bench_nats
from hub.bench.registry import BenchOptions, BenchResult, Figure, benchmark, percentile
from hub.bus import EventPublisher, connect, ensure_streams
from hub.config import BusConfig
from hub.eventlog.migrate import upgrade_async
from hub.sdk import AgentRuntime, RuntimeOptions, Tracker
from schemas import events as ev
from schemas.common import CallSeq, Direction, LegRef, Participant
from schemas.identity import leg_event_id, new_call_id

PBX = "catchup"
ROUTE_POINT = "800"
TARGET_EVENTS_S = 400.0  # twice the soak's 200 events/s: a CRM behind by a minute catches up within a minute


def typical_call(start: datetime) -> list[ev.EventBase]:
    """Caller -> route point (answers at once) -> routed to 101 -> answers -> transferred to 102 -> ends."""
    call_id = new_call_id()
    counter = itertools.count(1)
    ordinals: dict[tuple[str, str], int] = {}
    out: list[ev.EventBase] = []

    def add(cls: type[ev.EventBase], leg: LegRef | None, transition: str, at: float, data: Any, **extra: Any) -> None:
        key = (leg.key if leg is not None else "", transition)
        ordinal = ordinals[key] = ordinals.get(key, -1) + 1
        out.append(cls.model_validate({
            "event_id": leg_event_id(PBX, call_id, key[0], transition, ordinal), "pbx_id": PBX, "call_id": call_id,
            "pbx_call_id": 5, "leg": leg, "seq": CallSeq(epoch=1, counter=next(counter)),
            "occurred_at": start + timedelta(seconds=at), "data": data, **extra,
        }))  # fmt: skip

    def party(leg: LegRef, status: str) -> ev.LegData:
        return ev.LegData(participant=Participant(
            dn=leg.dn, participant_id=leg.participant_id, legid=leg.legid, status=status,
            party_caller_id="+15550100", party_did="+15550199", party_dn_type="Wexternalline",
        ))  # fmt: skip

    def moved(to: LegRef, from_dn: str) -> ev.TransferData:
        return ev.TransferData(to=to.dn, from_dn=from_dn, participant=party(to, "Ringing").participant)

    def removed(leg: LegRef) -> ev.LegRemovedData:
        return ev.LegRemovedData(participant=party(leg, "Connected").participant)

    rp, alice, bob = (
        LegRef(dn=dn, participant_id=pid, legid=1) for dn, pid in ((ROUTE_POINT, 7), ("101", 8), ("102", 9))
    )
    created = ev.CallCreatedData(direction=Direction.INBOUND, from_number="+15550100", from_name="Ann",
                                 to_number=ROUTE_POINT, did="+15550199")  # fmt: skip
    add(ev.CallCreated, None, "created", 0.0, created)
    add(ev.CallAnswered, rp, "answered", 0.05, party(rp, "Connected"))
    add(ev.RoutingDecided, None, "routed", 0.2, ev.RoutingDecidedData(rule="vip", action="transfer", destination="101"),
        issued_by="agent:routing")  # fmt: skip
    add(ev.CallTransferred, alice, "transferred", 0.3, moved(alice, ROUTE_POINT))
    add(ev.CallRinging, alice, "ringing", 0.3, party(alice, "Ringing"))
    add(ev.CallLegRemoved, rp, "removed", 0.3, removed(rp))
    add(ev.CallAnswered, alice, "answered", 4.3, party(alice, "Connected"))
    add(ev.CallTransferred, bob, "transferred", 30.3, moved(bob, "101"))
    add(ev.CallRinging, bob, "ringing", 30.3, party(bob, "Ringing"))
    add(ev.CallLegRemoved, alice, "removed", 30.3, removed(alice))
    add(ev.CallAnswered, bob, "answered", 33.3, party(bob, "Connected"))
    add(ev.CallLegRemoved, bob, "removed", 93.3, removed(bob))
    add(ev.CallEnded, None, "ended", 93.8, ev.CallEndedData(cause=ev.EndCause.COMPLETED, answered=True))
    return out


async def _replica(nc: Client, db_url: str) -> tuple[AgentRuntime, asyncio.Event, asyncio.Task[None], Tracker]:
    crm = CrmAgent(CrmConfig(route_points=(ROUTE_POINT,), poll_s=0.2))
    tracker = await Tracker.open(db_url, crm.agent.name, crm.agent.database)
    runtime = AgentRuntime(crm.agent, nc, RuntimeOptions(pbx_ids=(PBX,)), tracker=tracker)
    stopping = asyncio.Event()
    task = asyncio.create_task(runtime.run(stopping), name="crm-catchup")
    async with asyncio.timeout(30):
        while not runtime.ready.is_set():
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    return runtime, stopping, task, tracker


async def _stop(stopping: asyncio.Event, task: asyncio.Task[None], tracker: Tracker) -> None:
    stopping.set()
    try:
        await task
    finally:
        await tracker.close()


async def _catch_up(nats_url: str, db_url: str, calls: int) -> dict[str, float]:
    nc = await connect(nats_url, name="bench-crm-catchup")
    try:
        await ensure_streams(nc.jetstream(), BusConfig())
        await _stop(*(await _replica(nc, db_url))[1:])  # its durable consumers now wait for the backlog
        written: set[str] = set()
        done = asyncio.Event()

        async def on_written(msg: Msg) -> None:
            if b'"target":"database"' in msg.data:
                written.add(msg.subject)
                if len(written) >= calls:
                    done.set()

        await nc.subscribe(f"ml.evt.{PBX}.crm.*.record_written", cb=on_written)
        await nc.flush()
        start = datetime.now(UTC) - timedelta(hours=1)
        events = [e for i in range(calls) for e in typical_call(start + timedelta(seconds=i))]
        publisher = EventPublisher(nc.jetstream())
        for event in events:
            await publisher.publish(event)
        await publisher.flush()
        wall, cpu = time.perf_counter(), time.process_time()
        runtime, stopping, task, tracker = await _replica(nc, db_url)
        try:
            async with asyncio.timeout(600):
                await done.wait()  # each record's crm.record_written follows its commit
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            group = runtime.group
            per_group = group.events / group.groups if group is not None and group.groups else 1.0
        finally:
            await _stop(stopping, task, tracker)
    finally:
        await nc.close()
    return {"events": len(events), "seconds": wall, "cpu_ms": 1000 * cpu / len(events), "per_group": per_group}


@benchmark("crm.catchup", description="one CRM replica working through a backlog of calls, vs a raw commit per event")
async def crm_catchup(options: BenchOptions) -> BenchResult:
    calls = options.scale(500, 40)
    async with bench_nats(options) as url, _database(options) as db_url:
        await upgrade_async(db_url)
        commits = await _raw_commits(db_url, options.scale(500, 50))
        run = await _catch_up(url, db_url, calls)
    rate = run["events"] / run["seconds"]
    raw_rate = 1000 / percentile(commits, 50)
    return BenchResult(
        name="crm.catchup",
        figures=[
            Figure(name="backlog drained", value=rate, unit="events/s"),
            Figure(name="CRM CPU", value=run["cpu_ms"], unit="ms/event"),
            Figure(name="events a transaction", value=run["per_group"], unit="events"),
        ],
        baseline=[Figure(name="raw INSERT+COMMIT, one connection", value=raw_rate, unit="commits/s")],
        headline="events/s / raw commits/s",
        ratio=rate / raw_rate,
        better="higher",
        target=f"a backlog drains at {TARGET_EVENTS_S:.0f} events/s or more (twice the soak's rate)",
        met=None if options.quick else rate >= TARGET_EVENTS_S,
        notes=f"{calls} typical calls ({run['events']} events) published while the CRM was stopped, then one replica "
        f"at 32 partitions until every record was written ({run['seconds']:.2f} s); database "
        f"{db_url.split(':', 1)[0]}; the CRM in this process, nats-server and the database in their own",
    )
