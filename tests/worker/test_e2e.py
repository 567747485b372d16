"""Commands end to end: SDK -> NATS -> worker -> Call Control REST -> the simulator, checked against its journal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from hub.bus import connect, ensure_streams
from hub.bus.kv import CALL_IDS, open_bucket
from hub.bus.pull import BatchPuller
from hub.config import BusConfig, PbxConfig
from hub.pbx import CallControlClient, CallControlGateway, TokenProvider
from hub.pbx.xapi import XapiClient
from hub.sdk import CommandClient
from hub.simulator import SimHandle, running_simulator
from hub.worker.legs import LegOwnership
from hub.worker.service import Worker, WorkerConfig
from schemas import commands as c
from schemas import subjects
from schemas.codec import parse_event
from schemas.common import ErrorCode, LegRef
from schemas.events import CommandAccepted, CommandSucceeded
from schemas.identity import new_call_id
from tests.helpers import fresh_bus, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


@dataclass
class Rig:
    sim: SimHandle
    client: CommandClient
    rest: CallControlClient

    def leg(self, dn: str) -> LegRef:
        [leg] = self.sim.engine.participants(dn)
        return LegRef(dn=dn, participant_id=leg.id, legid=leg.legid)

    def pbx_requests(self, suffix: str) -> int:
        return sum(1 for e in self.sim.journal.of("request") if str(e.detail["path"]).endswith(suffix))


@pytest.fixture
async def rig(nats_server: str) -> AsyncIterator[Rig]:
    nc: Client = await connect(nats_server, name="test-e2e")
    await fresh_bus(nc.jetstream())
    async with running_simulator() as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        pbx = PbxConfig(id="main", base_url=sim.base_url, client_id="800", client_secret="sim-secret")
        rest = CallControlClient(http, TokenProvider(http, pbx.client_id, pbx.secret()))
        gateway = CallControlGateway(rest, pbx, xapi=XapiClient(http, rest_tokens(rest)))
        legs = LegOwnership(rest, await open_bucket(nc.jetstream(), CALL_IDS))
        worker = Worker(nc, gateway, config=WorkerConfig(rate_per_second=0), leg_check=legs.check)
        stopping = asyncio.Event()
        task = asyncio.create_task(worker.run(stopping))
        with anyio.fail_after(10):
            await worker.ready.wait()
        try:
            yield Rig(sim=sim, client=CommandClient(nc), rest=rest)
        finally:
            stopping.set()
            await task
    await nc.close()


def rest_tokens(rest: CallControlClient) -> TokenProvider:
    """The Call Control client's token provider (one token per API client: XAPI shares it)."""
    tokens: TokenProvider = rest._tokens  # type: ignore[assignment]
    return tokens


def _cmd(cls: type[c.CommandBase], leg: LegRef | None = None, **fields: Any) -> Any:
    target = {"call_id": new_call_id(), "leg": leg} if leg is not None else {}
    return cls(pbx_id="main", issued_by="agent:test", **target, **fields)


async def test_make_call_from_an_extension_rings_its_phone_first(rig: Rig) -> None:
    result = await rig.client.send(_cmd(c.MakeCall, args=c.MakeCallArgs.model_validate({"from": "101", "to": "102"})))
    assert result.ok, result.error
    assert result.result["dn"] == "101"
    assert result.result["status"] == "Dialing"
    assert [leg.status for leg in rig.sim.engine.participants("102")] == ["Ringing"]
    assert rig.pbx_requests("/devices") == 1  # the device was looked up, then used


async def test_answer_drop_divert_transfer_and_park(rig: Rig) -> None:
    rig.sim.engine.place_call("+15550100", "100")  # 100 has a uaCSTA phone
    answered = await rig.client.send(_cmd(c.Answer, rig.leg("100")))
    assert answered.ok, answered.error
    assert rig.sim.engine.participants("100")[0].status == "Connected"

    transferred = await rig.client.send(_cmd(c.Transfer, rig.leg("100"), args=c.TransferArgs(to="101", summary="VIP")))
    assert transferred.ok, transferred.error
    assert transferred.result["warm"] is True
    ringing = rig.sim.engine.participants("101")[0]
    assert rig.sim.engine.calls[ringing.callid].attached == {"summary": "VIP"}

    diverted = await rig.client.send(_cmd(c.Divert, rig.leg("101"), args=c.DivertArgs(to="102")))
    assert diverted.ok, diverted.error
    assert rig.sim.engine.participants("101") == []
    rig.sim.engine.answer(rig.sim.engine.participants("102")[0].id)

    parked = await rig.client.send(_cmd(c.Park, rig.leg("102")))
    assert parked.ok, parked.error
    assert parked.result["orbit"] == "SP0"
    assert any(call.parked_at == "SP0" for call in rig.sim.engine.calls.values())

    resumed = await rig.client.send(_cmd(c.Resume, args=c.ResumeArgs(orbit="SP0", to="101")))
    assert resumed.ok, resumed.error
    assert [leg.status for leg in rig.sim.engine.participants("101")] == ["Connected"]

    dropped = await rig.client.send(_cmd(c.Drop, rig.leg("101")))
    assert dropped.ok
    assert dropped.result == {"already_gone": False}
    assert rig.sim.engine.calls == {}


async def test_invalid_state_comes_back_typed_with_the_pbx_reason(rig: Rig) -> None:
    rig.sim.engine.place_call("+15550100", "101")
    result = await rig.client.send(_cmd(c.Transfer, rig.leg("101"), args=c.TransferArgs(to="102")))
    assert result.error is not None
    assert result.error.code is ErrorCode.INVALID_STATE
    assert result.error.pbx_reason is not None
    assert "Connected" in result.error.pbx_reason


async def test_answer_without_a_ua_csta_device_is_refused(rig: Rig) -> None:
    rig.sim.engine.place_call("+15550100", "101")
    result = await rig.client.send(_cmd(c.Answer, rig.leg("101")))
    assert result.error is not None
    assert result.error.code is ErrorCode.INVALID_STATE
    assert "direct_control" in (result.error.pbx_reason or "")


async def test_dropping_a_leg_already_gone_is_success(rig: Rig) -> None:
    call = rig.sim.engine.place_call("+15550100", "800")
    leg = rig.leg("800")
    rig.sim.engine.hangup(call.callid)
    result = await rig.client.send(_cmd(c.Drop, leg))
    assert result.ok
    assert result.result == {"already_gone": True}


async def test_the_same_idempotency_key_twice_calls_the_pbx_once(rig: Rig) -> None:
    rig.sim.engine.place_call("+15550100", "800")
    first = _cmd(c.Drop, rig.leg("800"), idempotency_key="drop-once")
    second = first.model_copy(update={"command_id": "01JSECONDDROP0000000000000"})
    a, b = await rig.client.send(first), await rig.client.send(second)
    assert a.ok
    assert b.duplicate
    assert rig.pbx_requests("/drop") == 1


async def test_not_supported_is_honest_about_3cx(rig: Rig) -> None:
    result = await rig.client.send(_cmd(c.SendMessage, args=c.SendMessageArgs(to="+15550100", text="hi")))
    assert result.error is not None
    assert result.error.code is ErrorCode.NOT_SUPPORTED
    assert "no public send-message API" in result.error.message


async def test_queries_read_the_pbx(rig: Rig) -> None:
    rig.sim.engine.place_call("+15550100", "800")
    active = await rig.client.query(c.ActiveCalls(pbx_id="main"))
    assert active.ok
    [call] = active.items
    assert [leg["dn"] for leg in call["legs"]] == ["800"] and call["legs"][0]["party"] == "+15550100"
    assert call["call_id"] is None  # no ingest here: the hub's call id is unknown
    extensions = await rig.client.query(c.Extensions(pbx_id="main"))
    assert [e["number"] for e in extensions.items] == ["100", "101", "102", "103"]  # XAPI users, monitored or not
    assert extensions.items[1]["name"] == "Alice" and extensions.items[1]["profile"] == "Available"


async def test_presence_is_read_and_set_with_the_pbxs_own_profile_names(rig: Rig) -> None:
    changed = await rig.client.send(_cmd(c.SetPresence, args=c.SetPresenceArgs(extension="101", profile="away")))
    assert changed.ok, changed.error
    assert changed.result == {"extension": "101", "profile": "Away", "previous_profile": "Available"}
    [alice] = (await rig.client.query(c.Presence(pbx_id="main", args=c.PresenceArgs(extension="101")))).items
    assert alice["profile"] == "Away"
    wrong = await rig.client.send(_cmd(c.SetPresence, args=c.SetPresenceArgs(extension="101", profile="Napping")))
    assert wrong.error is not None and wrong.error.code is ErrorCode.INVALID_ARGUMENT
    assert "use one of: Available, Away" in wrong.error.message
    nobody = await rig.client.send(_cmd(c.SetPresence, args=c.SetPresenceArgs(extension="555", profile="Away")))
    assert nobody.error is not None and nobody.error.code is ErrorCode.NOT_FOUND


async def test_call_history_recordings_and_chat_come_from_xapi(rig: Rig) -> None:
    call = rig.sim.engine.place_call("+15550100", "101")
    rig.sim.engine.answer(rig.sim.engine.participants("101")[0].id)
    rig.sim.engine.hangup(call.callid)
    rig.sim.add_chat_message("+15550100", "hello there", from_name="Dana")
    history = await rig.client.query(c.CallHistory(pbx_id="main", args=c.CallHistoryArgs(extension="101")))
    assert history.ok, history.error
    [segment] = history.items
    assert segment["from_number"] == "+15550100" and segment["to_dn"] == "101" and segment["answered"] is True
    assert history.total == 1
    none = await rig.client.query(c.CallHistory(pbx_id="main", args=c.CallHistoryArgs(extension="102")))
    assert none.items == []
    chat = await rig.client.query(c.ChatHistory(pbx_id="main"))
    assert [(m["from_number"], m["text"]) for m in chat.items] == [("+15550100", "hello there")]
    recordings = await rig.client.query(c.Recordings(pbx_id="main"))
    assert recordings.ok and recordings.total is not None


async def test_masterlinc_worker_runs_as_a_service_against_the_simulator(nats_server: str) -> None:
    import os
    import signal
    import subprocess
    import sys

    nc = await connect(nats_server, name="test-worker-service")
    js = nc.jetstream()
    await fresh_bus(js)
    await js.delete_stream(subjects.COMMANDS_STREAM)
    unqueued = await CommandClient(nc).send(
        c.Drop(pbx_id="main", issued_by="t", call_id="x", leg=LegRef(dn="1", participant_id=1))
    )
    assert unqueued.error is not None
    assert "start a worker" in unqueued.error.message
    await ensure_streams(js, BusConfig())
    async with running_simulator() as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ML_")}
        env.update({
            "NATS_URL": nats_server, "ML_PBXS__0__ID": "main", "ML_PBXS__0__BASE_URL": sim.base_url,
            "ML_PBXS__0__CLIENT_ID": "800", "ML_PBXS__0__CLIENT_SECRET": "sim-secret",
            "ML_WORKER__TOKEN_SOURCE": "own",  # no ingest here to own the token
        })  # fmt: skip
        cmd = [sys.executable, "-m", "hub.cli", "worker"]
        with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE) as proc:  # noqa: ASYNC220 - a service under test
            try:
                sim.engine.place_call("+15550100", "800")
                [leg] = sim.engine.participants("800")
                drop = c.Drop(pbx_id="main", issued_by="agent:test", call_id=new_call_id(),
                              leg=LegRef(dn="800", participant_id=leg.id))  # fmt: skip
                with anyio.fail_after(30):
                    result = await CommandClient(nc).send(drop, wait=25)
                assert result.ok, result.error
                assert sim.engine.participants("800") == []
            finally:
                proc.send_signal(signal.SIGTERM)
                code = await anyio.to_thread.run_sync(proc.wait, 15)
            assert proc.stderr is not None
            logs = proc.stderr.read().decode()
        assert code == 0, logs[-2000:]
        assert "sim-secret" not in logs
    await nc.close()


async def _has_consumer(nc: Client, name: str) -> bool:
    try:
        await nc.jetstream().consumer_info(subjects.COMMANDS_STREAM, name)
    except NotFoundError:
        return False
    return True


async def test_a_worker_killed_after_its_pbx_call_never_causes_a_second_call(nats_server: str) -> None:
    """SIGKILL between the PBX call and the ack: the next worker sees the in-flight marker, waits out the deadline,
    reconciles from PBX state, and answers; the simulator's journal shows one drop."""
    import os
    import signal
    import subprocess
    import sys
    from datetime import timedelta

    from schemas.common import utcnow

    nc = await connect(nats_server, name="test-worker-crash")
    await fresh_bus(nc.jetstream())
    async with running_simulator() as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ML_")}
        env.update({
            "NATS_URL": nats_server, "ML_PBXS__0__ID": "main", "ML_PBXS__0__BASE_URL": sim.base_url,
            "ML_PBXS__0__CLIENT_ID": "800", "ML_PBXS__0__CLIENT_SECRET": "sim-secret",
            "ML_WORKER__ACK_WAIT_S": "1", "ML_WORKER__FAULT_PAUSE_AFTER_CALL_S": "60",
            "ML_WORKER__TOKEN_SOURCE": "own",  # no ingest here to own the token
        })  # fmt: skip
        sim.engine.place_call("+15550100", "800")
        [leg] = sim.engine.participants("800")
        target = LegRef(dn="800", participant_id=leg.id)
        client = CommandClient(nc)
        cmd = [sys.executable, "-m", "hub.cli", "worker"]
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) as doomed:  # noqa: ASYNC220
            assert doomed.stdout is not None
            try:
                await wait_until(lambda: _has_consumer(nc, "ml-worker-main"), timeout=30, what="the worker's consumer")
                # the deadline counts from a running worker (a slow start on a loaded box must not expire it)
                deadline = utcnow() + timedelta(seconds=3)
                drop = c.Drop(pbx_id="main", issued_by="agent:test", call_id=new_call_id(), leg=target,
                              deadline=deadline)  # fmt: skip
                waiting = asyncio.create_task(client.send(drop, wait=30))
                with anyio.fail_after(20):
                    line = await anyio.to_thread.run_sync(doomed.stdout.readline, abandon_on_cancel=True)
                assert line.strip() == f"called {drop.command_id}"
            finally:
                doomed.send_signal(signal.SIGKILL)  # the PBX call happened; no result stored, no ack
        assert sum(1 for e in sim.journal.of("request") if str(e.detail["path"]).endswith("/drop")) == 1

        pbx = PbxConfig(id="main", base_url=sim.base_url, client_id="800", client_secret="sim-secret")
        gateway = CallControlGateway(CallControlClient(http, TokenProvider(http, "800", "sim-secret")), pbx)
        config = WorkerConfig(name="survivor", ack_wait_s=1, takeover_grace_s=0.5, rate_per_second=0)
        survivor = Worker(nc, gateway, config=config)
        stopping = asyncio.Event()
        task = asyncio.create_task(survivor.run(stopping, "main"))
        try:
            with anyio.fail_after(30):
                result = await waiting
        finally:
            stopping.set()
            await task
    assert result.ok, result.error
    assert result.result == {"already_gone": True, "reconciled": True}
    assert sum(1 for e in sim.journal.of("request") if str(e.detail["path"]).endswith("/drop")) == 1
    await nc.close()


async def test_route_to_adds_a_route_and_the_audit_trail_carries_the_whole_command(rig: Rig, nats_server: str) -> None:
    rig.sim.engine.place_call("+15550100", "101")
    command = _cmd(c.RouteTo, rig.leg("101"), args=c.DestinationArgs(to="102"))
    result = await rig.client.send(command)
    assert result.ok, result.error
    assert [leg.status for leg in rig.sim.engine.participants("102")] == ["Ringing"]
    assert len(rig.sim.engine.participants("101")) == 1  # kept until the new route is answered

    nc = await connect(nats_server, name="test-audit")
    js = nc.jetstream()
    await js.add_consumer(subjects.EVENTS_STREAM, ConsumerConfig(
        durable_name="audit", ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
        filter_subject=subjects.call_filter(command.call_id),
    ))  # fmt: skip
    puller = await BatchPuller(nc, subjects.EVENTS_STREAM, "audit").start()
    seen: list[object] = []
    with anyio.fail_after(10):
        while len(seen) < 2:
            seen += [parse_event(m.data) for m in await puller.fetch(10, expires=1.0)]
    await puller.stop()
    await nc.close()
    accepted = next(e for e in seen if isinstance(e, CommandAccepted))
    succeeded = next(e for e in seen if isinstance(e, CommandSucceeded))
    assert accepted.data.command["command_id"] == command.command_id
    assert accepted.data.command["args"] == {"to": "102"}
    assert accepted.correlation_id == command.command_id
    assert succeeded.data.command_id == command.command_id


async def test_a_leg_that_now_belongs_to_another_call_is_refused(rig: Rig) -> None:
    """D§5: participant ids are reused; the call-id map (ingest's) says whose the leg is now."""
    import json

    nc = rig.client._nc
    call = rig.sim.engine.place_call("+15550100", "800")
    [leg] = rig.sim.engine.participants("800")
    ids = await open_bucket(nc.jetstream(), CALL_IDS)
    ours, theirs = new_call_id(), new_call_id()
    await ids.put(f"main.{call.callid}", json.dumps({"call_id": theirs, "first_seen": 0, "last_seen": 0}).encode())
    target = LegRef(dn="800", participant_id=leg.id, legid=leg.legid)
    refused = await rig.client.send(c.Drop(pbx_id="main", issued_by="agent:test", call_id=ours, leg=target))
    assert refused.error is not None and refused.error.code is ErrorCode.NOT_FOUND
    assert f"now belongs to call {theirs}" in refused.error.message
    stale = LegRef(dn="800", participant_id=leg.id, legid=(leg.legid or 0) + 100)
    other = await rig.client.send(c.Drop(pbx_id="main", issued_by="agent:test", call_id=theirs, leg=stale))
    assert other.error is not None and "now another leg" in other.error.message
    assert rig.sim.engine.participants("800")  # nothing was dropped
    done = await rig.client.send(c.Drop(pbx_id="main", issued_by="agent:test", call_id=theirs, leg=target))
    assert done.ok and rig.sim.engine.participants("800") == []
