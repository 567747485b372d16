"""Helpers for agent and coordinator tests: well-formed call events with deterministic ids (as ingest will publish
them), runtimes run in-process, reading what reached the bus, and the worker + simulator rig."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from hub.bus import EventPublisher
from hub.bus.kv import AGENTS, CALL_LEASES, open_bucket
from hub.bus.pull import BatchPuller
from hub.config import IngestConfig, PbxConfig
from hub.coordinator import AssignmentRules, Coordinator, CoordinatorConfig
from hub.coordinator.guard import LeaseGuard
from hub.ingest.adapter import PbxAdapter
from hub.pbx import CallControlClient, CallControlGateway, TokenProvider
from hub.pbx.broker import BrokeredTokens
from hub.sdk import Agent, AgentRuntime, RuntimeOptions, Tracker
from hub.sdk.leases import LeaseStore
from hub.sdk.registry import AgentRecord
from hub.simulator import SimHandle, running_simulator
from hub.worker.service import Worker, WorkerConfig
from schemas import events as ev
from schemas import subjects
from schemas.codec import parse_event
from schemas.common import CallSeq, Direction, LegRef, Participant, utcnow
from schemas.identity import leg_event_id, new_call_id

PBX = "main"
ROUTE_POINT = "800"

FAST = RuntimeOptions(partitions=4, lease_s=1.0, heartbeat_s=0.2, ack_wait_s=2.0, handler_attempts=2, pbx_ids=(PBX,))


@dataclass
class CallScript:
    """One call's events as ingest publishes them: deterministic ids per (leg, transition, ordinal), a per-call
    sequence, typed data."""

    call_id: str = field(default_factory=new_call_id)
    pbx_id: str = PBX
    leg: LegRef = field(default_factory=lambda: LegRef(dn=ROUTE_POINT, participant_id=7, legid=1))
    caller: str = "+15550100"
    did: str = "+15550199"
    direction: Direction = Direction.INBOUND
    party_dn_type: str = "Wexternalline"
    on_behalf_of_dn: str = ""  # the queue a leg rings for
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _ordinals: dict[str, int] = field(default_factory=dict)

    def _env(self, transition: str) -> dict[str, Any]:
        ordinal = self._ordinals.get(transition, 0)
        self._ordinals[transition] = ordinal + 1
        return {
            "event_id": leg_event_id(self.pbx_id, self.call_id, self.leg.key, transition, ordinal),
            "pbx_id": self.pbx_id,
            "call_id": self.call_id,
            "pbx_call_id": 1,
            "leg": self.leg,
            "seq": CallSeq(epoch=1, counter=next(self._counter)),
            "occurred_at": utcnow(),
        }

    def participant(self, status: str) -> Participant:
        return Participant(
            dn=self.leg.dn,
            participant_id=self.leg.participant_id,
            legid=self.leg.legid,
            status=status,
            party_caller_id=self.caller,
            party_did=self.did,
            party_dn_type=self.party_dn_type,
            on_behalf_of_dn=self.on_behalf_of_dn,
        )

    def created(self) -> ev.CallCreated:
        data = ev.CallCreatedData(direction=self.direction, from_number=self.caller, to_number=self.did, did=self.did)
        return ev.CallCreated(**self._env("created"), data=data)

    def ringing(self) -> ev.CallRinging:
        return ev.CallRinging(**self._env("ringing"), data=ev.LegData(participant=self.participant("Ringing")))

    def answered(self) -> ev.CallAnswered:
        return ev.CallAnswered(**self._env("answered"), data=ev.LegData(participant=self.participant("Connected")))

    def updated(self, marker: str) -> ev.ParticipantUpdated:
        data = ev.ParticipantUpdatedData(participant=self.participant("Connected"), changed=[marker])
        return ev.ParticipantUpdated(**self._env("updated"), data=data)

    def dtmf(self, digits: str) -> ev.DtmfReceived:
        return ev.DtmfReceived(**self._env("dtmf"), data=ev.DtmfData(digits=digits))

    def ended(self) -> ev.CallEnded:
        return ev.CallEnded(**self._env("ended"), data=ev.CallEndedData(cause=ev.EndCause.COMPLETED))


async def publish(nc: Client, *events: ev.EventBase, headers: dict[str, str] | None = None) -> None:
    publisher = EventPublisher(nc.jetstream())
    for event in events:
        if headers:
            await publisher.publish_raw(
                subjects.event_subject(event),
                event.model_dump_json().encode(),
                f"{event.event_id}:{headers.get('Ml-Replay', '')}",
                headers=headers,
            )
        else:
            await publisher.publish(event)
    await publisher.flush()


async def bus_events(nc: Client, subject: str = subjects.EVENTS_ALL) -> list[ev.EventBase]:
    """Every event on ML_EVENTS matching ``subject`` so far (an ephemeral consumer, read to the end)."""
    js = nc.jetstream()
    info = await js.add_consumer(
        subjects.EVENTS_STREAM,
        ConsumerConfig(filter_subject=subject, ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
    )
    puller = await BatchPuller(nc, subjects.EVENTS_STREAM, info.name).start()
    out: list[ev.EventBase] = []
    try:
        while len(out) < (info.num_pending or 0):
            msgs = await puller.fetch(1000, expires=1.0, idle=0.005)
            if not msgs:
                break
            out.extend(parse_event(m.data) for m in msgs)
    finally:
        await puller.stop()
        with contextlib.suppress(Exception):
            await js.delete_consumer(subjects.EVENTS_STREAM, info.name)
    return out


async def events_of(nc: Client, cls: type[ev.EventBase], call_id: str | None = None) -> list[Any]:
    return [e for e in await bus_events(nc, subjects.event_filter(event_type=cls, key=call_id)) if type(e) is cls]


@contextlib.asynccontextmanager
async def running(
    agent: Agent, nc: Client, options: RuntimeOptions = FAST, *, tracker: Tracker | None = None
) -> AsyncIterator[AgentRuntime]:
    runtime = AgentRuntime(agent, nc, options, tracker=tracker)
    stopping = asyncio.Event()
    task = asyncio.create_task(runtime.run(stopping))
    try:
        with anyio.fail_after(10):
            while not runtime.ready.is_set():
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield runtime
    finally:
        stopping.set()
        with anyio.fail_after(10):
            await task


@dataclass
class Rig:
    """The real worker (with the KV lease guard) against the simulator."""

    sim: SimHandle
    worker: Worker
    guard: LeaseGuard

    def route_point_leg(self) -> LegRef:
        [leg] = self.sim.engine.participants(ROUTE_POINT)
        return LegRef(dn=ROUTE_POINT, participant_id=leg.id, legid=leg.legid)

    def requests(self, suffix: str) -> list[Any]:
        return [e for e in self.sim.journal.of("request") if str(e.detail["path"]).endswith(suffix)]

    def script(self, leg: LegRef) -> CallScript:
        return CallScript(leg=leg)


@contextlib.asynccontextmanager
async def worker_rig(nc: Client, *, override_issuers: tuple[str, ...] = ("mcp:*",)) -> AsyncIterator[Rig]:
    async with running_simulator() as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        pbx = PbxConfig(id=PBX, base_url=sim.base_url, client_id=ROUTE_POINT, client_secret="sim-secret")
        rest = CallControlClient(http, TokenProvider(http, pbx.client_id, pbx.secret()))
        guard = LeaseGuard(nc.jetstream(), override_issuers=override_issuers)
        worker = Worker(nc, CallControlGateway(rest, pbx), config=WorkerConfig(rate_per_second=0), lease_check=guard)
        stopping = asyncio.Event()
        task = asyncio.create_task(worker.run(stopping))
        with anyio.fail_after(10):
            await worker.ready.wait()
        try:
            yield Rig(sim=sim, worker=worker, guard=guard)
        finally:
            stopping.set()
            await task


def ingest_and_worker(nc: Client, http: httpx.AsyncClient, base_url: str) -> tuple[PbxAdapter, Worker]:
    """Ingest (the token's owner) and the worker (borrowing the token over the bus) against the simulator, as the hub
    runs them; the worker checks call leases in KV."""
    pbx = PbxConfig(id=PBX, base_url=base_url, client_id=ROUTE_POINT, client_secret="sim-secret")
    tokens = TokenProvider(http, pbx.client_id, pbx.secret())
    adapter = PbxAdapter(nc, pbx, CallControlClient(http, tokens), tokens, config=IngestConfig(call_end_grace_s=0.2))
    worker = Worker(
        nc,
        CallControlGateway(CallControlClient(http, BrokeredTokens(nc, PBX)), pbx),
        config=WorkerConfig(rate_per_second=0),
        lease_check=LeaseGuard(nc.jetstream()),
    )
    return adapter, worker


def cli_env(nats_url: str, **extra: str) -> dict[str, str]:
    """An environment for a `masterlinc` subprocess: no ML_* settings of ours leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_") and k not in ("NATS_URL", "DATABASE_URL")}
    env.update({"NATS_URL": nats_url, "ML_LOG_FORMAT": "json", **extra})
    return env


CLI = [sys.executable, "-m", "hub.cli"]


@contextlib.asynccontextmanager
async def fresh_connection(nats_url: str, name: str) -> AsyncIterator[Client]:
    from hub.bus import connect
    from tests.helpers import fresh_bus

    nc = await connect(nats_url, name=name)
    await fresh_bus(nc.jetstream())
    try:
        yield nc
    finally:
        await nc.close()


SAFE_ROUTE = "100"


@contextlib.asynccontextmanager
async def running_coordinator(nc: Client, rules: str | None = None, **config: Any) -> AsyncIterator[Coordinator]:
    settings = {
        "safe_route": SAFE_ROUTE,
        "route_points": {PBX: ROUTE_POINT},
        "claim_timeout_s": 0.5,
        "lease_grace_s": 0.1,
        "scan_interval_s": 0.05,
        **config,
    }
    coordinator = Coordinator(
        nc,
        rules=AssignmentRules.parse(rules, "rules.yaml") if rules else None,
        config=CoordinatorConfig(**settings),
        runtime_options=FAST,
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(coordinator.run(stopping))
    try:
        with anyio.fail_after(10):
            while not coordinator.ready.is_set():
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield coordinator
    finally:
        stopping.set()
        with anyio.fail_after(10):
            await task


async def lease_owner(nc: Client, call_id: str) -> str | None:
    held = await LeaseStore(await open_bucket(nc.jetstream(), CALL_LEASES)).get(PBX, call_id)
    return held.lease.agent if held is not None else None


async def agent_up(nc: Client, agent: str) -> bool:
    kv = await open_bucket(nc.jetstream(), AGENTS)
    try:
        keys = await kv.keys()
    except Exception:
        return False
    for key in keys:
        if key.startswith(f"{agent}."):
            entry = await kv.get(key)
            if entry.value and AgentRecord.model_validate_json(entry.value).alive():
                return True
    return False
