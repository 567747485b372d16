"""Shared pieces of the MCP facade tests: a worker with a recording gateway, the facade around it, call events."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from nats.aio.client import Client

from hub.bus import EventPublisher, ensure_streams
from hub.config import BusConfig
from hub.mcp.backend import Backend
from hub.mcp.server import Facade, FacadeConfig, build_server
from hub.mcp.tokens import LOCAL_PRINCIPAL, Principal
from hub.worker.gateway import CommandFailure
from hub.worker.service import Worker, WorkerConfig
from schemas import events as e
from schemas.commands import CommandBase, QueryBase
from schemas.common import ErrorCode, LegRef, Participant, utcnow
from schemas.identity import new_call_id

QUERY_ITEMS: dict[str, list[dict[str, Any]]] = {
    "active_calls": [{"call_id": "01JACTIVE", "legs": [{"dn": "800", "participant_id": 4, "status": "Connected"}]}],
    "call_history": [{"call_id": "01JOLD", "from": "+15550100", "to": "101", "answered": True}],
    "extensions": [{"number": "101", "name": "Ada"}, {"number": "102", "name": "Grace"}],
    "presence": [{"extension": "101", "profile": "Available", "registered": True}],
    "recordings": [],
    "chat_history": [{"message_id": "m1", "from": "+15550100", "text": "hello"}],
}


@dataclass
class RecordingGateway:
    """The PBX side of the worker, recording what it was asked; ``fail`` maps a command name to a failure."""

    calls: list[CommandBase] = field(default_factory=list)
    queries: list[QueryBase] = field(default_factory=list)
    fail: dict[str, CommandFailure] = field(default_factory=dict)
    executed: asyncio.Event = field(default_factory=asyncio.Event)

    async def execute(self, command: CommandBase) -> dict[str, Any]:
        self.calls.append(command)
        self.executed.set()
        if command.NAME in self.fail:
            raise self.fail[command.NAME]
        return {"done": command.NAME}

    async def reconcile(self, command: CommandBase) -> dict[str, Any] | None:
        return None

    async def query(self, query: QueryBase) -> tuple[list[dict[str, Any]], int | None]:
        self.queries.append(query)
        items = QUERY_ITEMS[query.NAME]
        if query.NAME == "presence":
            wanted = query.args.extension  # type: ignore[attr-defined]
            if wanted is not None and wanted not in {"101"}:
                raise CommandFailure(ErrorCode.NOT_FOUND, f"no extension {wanted}")
        return items, len(items)


def new_pbx() -> str:
    """A PBX id per test: its own worker consumer and its own subjects."""
    return f"t{uuid.uuid4().hex[:10]}"


async def prepare_bus(nc: Client) -> None:
    await ensure_streams(nc.jetstream(), BusConfig())


@contextlib.asynccontextmanager
async def running_worker(nc: Client, pbx: str, gateway: RecordingGateway) -> AsyncIterator[Worker]:
    worker = Worker(nc, gateway, config=WorkerConfig(name=f"w-{pbx}", durable="ml-mcp-test", rate_per_second=1000))
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping, pbx_id=pbx))
    try:
        with anyio.fail_after(10):
            await worker.ready.wait()
        yield worker
    finally:
        stopping.set()
        await task


@contextlib.asynccontextmanager
async def running_facade(
    nc: Client,
    pbx: str,
    *,
    profile: str = "full",
    principal: Principal | None = LOCAL_PRINCIPAL,
    **server_kw: Any,
) -> AsyncIterator[Facade]:
    async with Backend(pbx_id=pbx, nc=nc, command_wait_s=10) as backend, anyio.create_task_group() as tg:
        facade = build_server(
            backend,
            FacadeConfig(pbx_id=pbx, profile=profile, default_principal=principal),  # type: ignore[arg-type]
            **server_kw,
        )
        tg.start_soon(facade.legacy.run)
        try:
            yield facade
        finally:
            tg.cancel_scope.cancel()


def participant(dn: str, pid: int, status: str) -> Participant:
    return Participant(dn=dn, participant_id=pid, legid=pid + 100, status=status)


async def publish_leg(nc: Client, pbx: str, call_id: str, dn: str, pid: int, status: str) -> None:
    """What the adapter would publish when a leg rings or connects."""
    cls: type[e.EventBase] = e.CallRinging if status in ("Ringing", "Dialing") else e.CallAnswered
    event = cls.model_validate(
        {
            "event_id": uuid.uuid4(),
            "pbx_id": pbx,
            "call_id": call_id,
            "leg": LegRef(dn=dn, participant_id=pid, legid=pid + 100),
            "occurred_at": utcnow(),
            "data": {"participant": participant(dn, pid, status)},
        }
    )
    publisher = EventPublisher(nc.jetstream())
    await publisher.publish(event)
    await publisher.flush()


async def publish_event(nc: Client, event: e.EventBase) -> None:
    publisher = EventPublisher(nc.jetstream())
    await publisher.publish(event)
    await publisher.flush()


async def wait_for_leg(facade: Facade, call_id: str, dn: str, pid: int, status: str) -> None:
    with anyio.fail_after(5):
        while True:
            call = facade.backend.calls.get(call_id)
            leg = call.legs.get((dn, pid)) if call is not None else None
            if leg is not None and leg.status == status:
                return
            await facade.backend.calls.changed.wait()


__all__ = ["new_call_id"]
