"""The worker's safety rules through a real nats-server; the PBX is replaced by a gateway that records calls
(end-to-end against the simulator lives with the adapter's tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import anyio
import nats.errors
import pytest
from nats.aio.client import Client

from hub.bus import connect
from hub.sdk import CommandClient
from hub.worker.gateway import CommandFailure
from hub.worker.service import Worker, WorkerConfig
from schemas.commands import CommandBase, Drop, Extensions, MakeCall, MakeCallArgs, QueryBase
from schemas.common import ErrorCode, LegRef, utcnow
from schemas.identity import new_call_id
from tests.helpers import fresh_bus

pytestmark = [pytest.mark.nats, pytest.mark.anyio]


class RecordingGateway:
    def __init__(self) -> None:
        self.calls: list[CommandBase] = []
        self.fail_with: CommandFailure | None = None

    async def execute(self, command: CommandBase) -> dict[str, Any]:
        self.calls.append(command)
        if self.fail_with is not None:
            raise self.fail_with
        return {"done": command.NAME}

    async def reconcile(self, command: CommandBase) -> dict[str, Any] | None:
        return None

    async def query(self, query: QueryBase) -> tuple[list[dict[str, Any]], int | None]:
        return [{"number": "101"}, {"number": "102"}], 2


@pytest.fixture
async def nc(nats_server: str) -> AsyncIterator[Client]:
    client = await connect(nats_server, name="test-worker")
    await fresh_bus(client.jetstream())
    yield client
    await client.close()


@contextlib.asynccontextmanager
async def running(nc: Client, gateway: RecordingGateway, **config: Any) -> AsyncIterator[Worker]:
    worker = Worker(nc, gateway, config=WorkerConfig(**config))
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    try:
        with anyio.fail_after(10):
            await worker.ready.wait()
        yield worker
    finally:
        stopping.set()
        await task


def drop(**kw: Any) -> Drop:
    return Drop(
        pbx_id="main", issued_by="agent:test", call_id=new_call_id(), leg=LegRef(dn="800", participant_id=4), **kw
    )


async def test_a_command_is_executed_once_and_its_result_returned(nc: Client) -> None:
    gateway = RecordingGateway()
    async with running(nc, gateway):
        with anyio.fail_after(10):
            result = await CommandClient(nc).send(drop())
    assert result.ok
    assert result.result == {"done": "drop"}
    assert len(gateway.calls) == 1


async def test_the_same_idempotency_key_twice_calls_the_pbx_once(nc: Client) -> None:
    gateway = RecordingGateway()
    first = drop(idempotency_key="once")
    second = first.model_copy(update={"command_id": "01JSECONDCOMMANDID00000000"})
    async with running(nc, gateway):
        with anyio.fail_after(10):
            a = await CommandClient(nc).send(first)
            b = await CommandClient(nc).send(second)
    assert a.ok
    assert b.ok
    assert b.duplicate
    assert len(gateway.calls) == 1


async def test_the_same_key_with_another_payload_is_a_conflict(nc: Client) -> None:
    gateway = RecordingGateway()
    first = drop(idempotency_key="k")
    other = drop(idempotency_key="k")  # another call id: a different command
    async with running(nc, gateway):
        with anyio.fail_after(10):
            await CommandClient(nc).send(first)
            result = await CommandClient(nc).send(other)
    assert result.error is not None
    assert result.error.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert len(gateway.calls) == 1


async def test_an_expired_deadline_is_refused_without_a_pbx_call(nc: Client) -> None:
    gateway = RecordingGateway()
    late = drop(deadline=utcnow() - timedelta(seconds=1))
    async with running(nc, gateway):
        with anyio.fail_after(10):
            result = await CommandClient(nc).send(late, wait=5)
    assert result.error is not None
    assert result.error.code is ErrorCode.DEADLINE_EXCEEDED
    assert gateway.calls == []


async def test_assistants_may_not_dial_emergency_numbers(nc: Client) -> None:
    gateway = RecordingGateway()
    call = MakeCall(pbx_id="main", issued_by="mcp:tok1", args=MakeCallArgs.model_validate({"from": "101", "to": "911"}))
    async with running(nc, gateway):
        with anyio.fail_after(10):
            result = await CommandClient(nc).send(call)
    assert result.error is not None
    assert result.error.code is ErrorCode.POLICY_DENIED
    assert "emergency" in result.error.message
    assert gateway.calls == []


async def test_pbx_failures_come_back_typed_with_the_pbx_reason(nc: Client) -> None:
    gateway = RecordingGateway()
    gateway.fail_with = CommandFailure(ErrorCode.INVALID_STATE, "the leg is not ringing", pbx_reason="Invalid state")
    async with running(nc, gateway):
        with anyio.fail_after(10):
            result = await CommandClient(nc).send(drop())
    assert result.error is not None
    assert result.error.code is ErrorCode.INVALID_STATE
    assert result.error.pbx_reason == "Invalid state"


async def test_the_rate_limit_holds_across_two_workers(nc: Client) -> None:
    gateway = RecordingGateway()
    commands = [drop(deadline=utcnow() + timedelta(seconds=0.6)) for _ in range(12)]
    async with running(nc, gateway, name="w1", rate_per_second=3), running(nc, gateway, name="w2", rate_per_second=3):
        client = CommandClient(nc)
        with anyio.fail_after(15):
            results = await asyncio.gather(*(client.send(c, wait=5) for c in commands))
    limited = [r for r in results if r.error is not None and r.error.code is ErrorCode.RATE_LIMITED]
    # 0.6 s of deadline spans at most two one-second windows of 3 slots each
    assert len(gateway.calls) <= 6
    assert len(limited) == 12 - len(gateway.calls)
    assert len(limited) >= 6


async def test_queries_are_answered_by_a_worker(nc: Client) -> None:
    async with running(nc, RecordingGateway()):
        with anyio.fail_after(10):
            result = await CommandClient(nc).query(Extensions(pbx_id="main"))
    assert result.ok
    assert result.total == 2


async def test_a_query_with_no_worker_says_so(nc: Client) -> None:
    result = await CommandClient(nc).query(Extensions(pbx_id="main"), wait=1)
    assert result.error is not None
    assert result.error.code is ErrorCode.PBX_UNAVAILABLE


def _failing_once(method: Callable[..., Awaitable[Any]]) -> tuple[Callable[..., Awaitable[Any]], list[int]]:
    """``method``, raising a NATS timeout (as during a server restart) on its first call."""
    calls: list[int] = []

    async def wrapped(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise nats.errors.TimeoutError
        return await method(*args)

    return wrapped, calls


async def test_a_result_store_that_times_out_is_retried_and_the_command_answered(nc: Client) -> None:
    """Seen in the soak: the result's KV put timed out during a NATS restart and the worker exited."""
    gateway = RecordingGateway()
    first = drop(idempotency_key="stored")
    async with running(nc, gateway) as worker:
        assert worker._idem is not None
        worker._idem.complete, attempts = _failing_once(worker._idem.complete)  # type: ignore[method-assign,assignment]
        with anyio.fail_after(15):
            result = await CommandClient(nc).send(first)
            again = await CommandClient(nc).send(first.model_copy(update={"command_id": "01JSECONDCOMMANDID00000000"}))
    assert result.ok
    assert len(attempts) == 2
    assert again.duplicate  # the result was stored
    assert len(gateway.calls) == 1


async def test_a_bus_failure_mid_command_leaves_it_for_redelivery_and_the_worker_goes_on(nc: Client) -> None:
    gateway = RecordingGateway()
    async with running(nc, gateway) as worker:
        assert worker._idem is not None
        worker._idem.claim, claims = _failing_once(worker._idem.claim)  # type: ignore[method-assign,assignment]
        with anyio.fail_after(15):
            result = await CommandClient(nc).send(drop())
            later = await CommandClient(nc).send(drop())
    assert result.ok
    assert later.ok
    assert len(claims) == 3  # the failed claim, its redelivery's, the next command's
    assert len(gateway.calls) == 2


async def test_an_outcome_event_the_bus_did_not_take_is_published_again_on_the_redelivery(nc: Client) -> None:
    """Seen in a soak: during a NATS restart the worker's flush raised (an event unacknowledged) and the worker
    exited. Now the delivery is left for redelivery, the PBX is not called again, and the stored result's outcome
    event is published again (same id), so the log gets it."""
    gateway = RecordingGateway()
    js = nc.jetstream()
    succeeded = await js.pull_subscribe("ml.evt.main.command.*.succeeded", durable=None)
    async with running(nc, gateway) as worker:
        publisher = worker._publisher
        publish = publisher.publish
        lost: list[Any] = []

        async def losing_the_first_outcome(event: Any) -> Any:
            if event.type == "command.succeeded" and not lost:
                lost.append(event.event_id)  # sent where no stream takes it: its ack fails, as in an outage
                return await publisher.publish_raw("nothing.captures.this", b"{}", str(event.event_id))
            return await publish(event)

        publisher.publish = losing_the_first_outcome  # type: ignore[method-assign]
        with anyio.fail_after(15):
            result = await CommandClient(nc).send(drop())
            after = await CommandClient(nc).send(drop())  # the worker is still there
    assert result.ok and after.ok
    assert len(gateway.calls) == 2  # the redelivery did not call the PBX again
    assert len(lost) == 1
    with anyio.fail_after(5):
        msgs = await succeeded.fetch(10, timeout=2)
    ids = [(m.headers or {}).get("Nats-Msg-Id") for m in msgs]
    assert str(lost[0]) in ids and len(ids) == 2  # the lost one, published again, and the next command's
