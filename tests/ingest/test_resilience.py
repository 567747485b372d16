"""Ingest when things break: NATS restarted (outbox), outbox overflow (resync), two processes for one PBX, and the
same event ids whether a transition is seen live or re-derived by a resync."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from hub import natsd
from hub.bus import connect
from hub.bus.kv import INGEST_STATE, LEADERS, open_bucket
from hub.config import IngestConfig
from hub.ingest.adapter import PbxAdapter
from hub.simulator import SimConfig, running_simulator
from hub.simulator.projection import Item, diff, observed, project
from schemas import events as e
from tests.helpers import eventually, fresh_bus, private_nats, wait_until
from tests.ingest.conftest import PBX, IngestRig, adapter_for, collecting, ingest_rig, stream_events

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


@contextlib.asynccontextmanager
async def leading(adapter: PbxAdapter) -> AsyncIterator[None]:
    """The adapter runs (stands by, then leads) until the block ends; then it stops cleanly."""
    stopping = asyncio.Event()
    task = asyncio.create_task(adapter.run(stopping))
    try:
        yield
    finally:
        stopping.set()
        with anyio.fail_after(15):
            await task


def _ignoring_inferred(items: Counter[Item]) -> Counter[tuple[object, ...]]:
    return Counter({item[:-1]: n for item, n in items.items()})


async def _quiet(rig: IngestRig) -> None:
    await rig.settled(timeout=20, check_stream=False)


async def test_nats_restarted_the_outbox_drains_and_nothing_is_lost(tmp_path: Path) -> None:
    with private_nats(tmp_path) as server:
        async with ingest_rig(server.url, SimConfig()) as rig:
            engine = rig.sim.engine
            known = engine.place_call("+15550100", "101")
            await _quiet(rig)
            server.kill()
            await eventually(lambda: not rig.nc.is_connected, what="the hub to see NATS gone")
            engine.answer(engine.participants("101")[0].id)
            await rig.caught_up()
            fresh = engine.place_call("+15550101", "102")  # a new call while the bus is down
            engine.hangup(known.callid)
            await rig.caught_up()
            assert rig.adapter.outbox is not None and len(rig.adapter.outbox) == 5  # held, none published
            server.restart()
            await _quiet(rig)
            engine.hangup(fresh.callid)
            await _quiet(rig)
            events = await stream_events(rig.nc)
        expected = project(rig.sim.journal.entries, rig.sim.config.visible, end_grace_s=0.2)
        problems = diff(expected, observed(events))
        assert not problems, problems  # every transition once, none inferred: the outbox kept them all
        assert len({ev.event_id for ev in events}) == len(events)


async def test_an_outbox_overflow_forces_a_resync_that_rebuilds_what_was_refused(tmp_path: Path) -> None:
    with private_nats(tmp_path) as server:
        config = IngestConfig(call_end_grace_s=0.2, outbox_max=100)
        async with ingest_rig(server.url, SimConfig(), config) as rig:
            engine = rig.sim.engine
            engine.place_call("+15550100", "101")
            await _quiet(rig)
            server.kill()
            await eventually(lambda: not rig.nc.is_connected, what="the hub to see NATS gone")
            for i in range(60):  # 120 events: more than the outbox holds
                engine.place_call(f"+1555100{i:02d}", "100")
            await eventually(lambda: rig.adapter.outbox is not None and rig.adapter.outbox.overflowed,
                             what="the outbox to overflow")  # fmt: skip
            server.restart()
            await eventually(lambda: rig.adapter.stats.resyncs >= 2, timeout=20, what="a resync")
            await _quiet(rig)
            events = await stream_events(rig.nc)
        expected = project(rig.sim.journal.entries, rig.sim.config.visible, end_grace_s=0.2)
        actual = observed(events)
        want, got = _ignoring_inferred(expected), _ignoring_inferred(actual)
        assert got == want, f"missing {want - got}, extra {got - want}"
        assert sum(n for item, n in actual.items() if item[-1]) > 0  # the refused ones came back inferred
        assert len({ev.event_id for ev in events}) == len(events)
        assert any(ev.type == "link.resynced" for ev in events)


async def test_nats_down_longer_than_a_kv_write_waits_the_adapter_polls_on_and_keeps_leading(tmp_path: Path) -> None:
    """Found by the 30-minute soak: a presence poll's KV save timed out while NATS was down (nats-py waits 5 s for
    JetStream) and the error ended the ingest process. The polls go on, and the leadership with them."""
    config = IngestConfig(call_end_grace_s=0.2, presence_interval_s=0.05, chat_interval_s=0.05, leader_lease_s=30)
    with private_nats(tmp_path) as server:
        async with ingest_rig(server.url, SimConfig(), config) as rig:
            adapter = rig.adapter
            await eventually(lambda: len(adapter.pollers) == 2 and all(p.polls >= 2 for p in adapter.pollers),
                             what="the pollers' baseline")  # fmt: skip
            presence = adapter.pollers[0]
            server.kill()
            await eventually(lambda: not rig.nc.is_connected, what="the hub to see NATS gone")
            start = presence.polls
            await eventually(lambda: presence.polls >= start + 2, timeout=20, what="a poll after one failed")
            server.restart()
            rig.sim.set_presence("101", profile="Away")
            call = rig.sim.engine.place_call("+15550100", "101")
            await eventually(lambda: any(ev.type == "presence.changed" for ev in rig.stream.events)
                             and any(ev.pbx_call_id == call.callid for ev in rig.stream.events),
                             timeout=20, what="events made after NATS came back")  # fmt: skip
            await _quiet(rig)
            events = await stream_events(rig.nc)
        assert adapter.stats.leaderships == 1 and adapter.stats.failed_leaderships == 0
        changed = [ev for ev in events if isinstance(ev, e.PresenceChanged)]
        assert [(ev.data.extension, ev.data.profile) for ev in changed] == [("101", "Away")]
        assert [ev.type for ev in events if ev.pbx_call_id == call.callid] == ["call.created", "call.ringing"]


async def test_a_leadership_ended_by_an_error_is_logged_with_its_cause_and_led_again(
    nats_server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    nc = await connect(nats_server, name="test-failed-leadership")
    await fresh_bus(nc.jetstream())
    async with running_simulator(SimConfig()) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        adapter = adapter_for(nc, sim, http, IngestConfig(call_end_grace_s=0.2))
        watch_modes = adapter._watch_modes

        async def fails_in_the_first_leadership(lead_stop: asyncio.Event) -> None:
            if adapter.stats.leaderships == 1:
                raise RuntimeError("one of the leadership's tasks failed")
            await watch_modes(lead_stop)

        monkeypatch.setattr(adapter, "_watch_modes", fails_in_the_first_leadership)
        async with leading(adapter):
            await eventually(lambda: adapter.stats.leaderships == 2 and adapter.synced.is_set(),
                             what="a second leadership")  # fmt: skip
            call = sim.engine.place_call("+15550100", "101")
            await eventually(lambda: adapter.outbox is not None and adapter.outbox.published >= 3,
                             what="the call's events")  # fmt: skip
        events = await stream_events(nc)
    await nc.close()
    assert adapter.stats.failed_leaderships == 1
    failed = [r for r in caplog.records if "leadership failed" in r.getMessage()]
    assert failed and failed[0].levelno == logging.ERROR
    assert "one of the leadership's tasks failed" in failed[0].getMessage() + str(failed[0].exc_info)
    assert [ev.type for ev in events if ev.pbx_call_id == call.callid] == ["call.created", "call.ringing"]


async def test_a_leader_that_dies_before_saving_a_new_call_leaves_the_next_one_enough_to_end_it(
    nats_server: str,
) -> None:
    """Found by the CI soak on a slower machine: a call whose events were out but whose state was not yet saved
    (acknowledged state is saved every ``persist_interval_s``), and which ended while no leader ran, was never
    ended: the next leader knew nothing of it. Its legs are now saved, provisionally, before its first events."""
    config = IngestConfig(call_end_grace_s=0.2, persist_interval_s=3600, leader_lease_s=1.0)
    nc = await connect(nats_server, name="test-provisional")
    await fresh_bus(nc.jetstream())
    async with running_simulator(SimConfig()) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        first = adapter_for(nc, sim, http, config)
        crash = asyncio.create_task(first.run(asyncio.Event()))
        with anyio.fail_after(10):
            await first.synced.wait()
        call = sim.engine.place_call("+15550100", "101")
        await eventually(lambda: first.outbox is not None and first.outbox.published >= 3, what="the call's events")
        crash.cancel()  # dies: the periodic save of acknowledged state never comes
        with contextlib.suppress(asyncio.CancelledError):
            await crash
        sim.engine.hangup(call.callid)  # while nobody leads
        second = adapter_for(nc, sim, http, config)
        async with leading(second):
            with anyio.fail_after(15):
                await second.synced.wait()
            await eventually(lambda: second.idle and second.outbox is not None and len(second.outbox) == 0,
                             what="the takeover's re-read published")  # fmt: skip
        events = await stream_events(nc)
    await nc.close()
    mine = [ev for ev in events if ev.pbx_call_id == call.callid]
    assert [(ev.type, ev.inferred) for ev in mine] == [
        ("call.created", False), ("call.ringing", False), ("call.leg_removed", True), ("call.ended", True),
    ]  # fmt: skip
    assert len({ev.call_id for ev in mine}) == 1  # one hub call id throughout


# --------------------------------------------------------------------------- two processes, one PBX


def _ingest_process(nats_url: str, base_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "NATS_URL": nats_url,
        "ML_PBXS__0__ID": PBX,
        "ML_PBXS__0__BASE_URL": base_url,
        "ML_PBXS__0__CLIENT_ID": "800",
        "ML_PBXS__0__CLIENT_SECRET": "sim-secret",
        "ML_INGEST__LEADER_LEASE_S": "1.5",
        "ML_INGEST__CALL_END_GRACE_S": "0.2",
        "ML_HTTP__PORT": str(port),
        "ML_LOG_FORMAT": "json",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "ingest"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def _detail(http: httpx.AsyncClient, port: int) -> str:
    try:
        body = (await http.get(f"http://127.0.0.1:{port}/readyz")).json()
    except (httpx.HTTPError, json.JSONDecodeError):
        return ""
    return str(body["components"].get(f"pbx:{PBX}", {}).get("detail", ""))


async def test_two_ingest_processes_for_one_pbx_only_one_publishes_and_the_other_takes_over(
    nats_server: str,
) -> None:
    nc = await connect(nats_server, name="test-two-ingest")
    await fresh_bus(nc.jetstream())
    ports = [natsd.free_port(), natsd.free_port()]
    async with running_simulator(SimConfig()) as sim, httpx.AsyncClient() as http:
        procs = [_ingest_process(nats_server, sim.base_url, port) for port in ports]
        try:
            details: list[str] = ["", ""]

            async def roles_known() -> bool:
                details[:] = [await _detail(http, p) for p in ports]
                return sum("websocket up" in d for d in details) == 1 and sum("standby" in d for d in details) == 1

            await wait_until(roles_known, timeout=20, what="one leader and one standby")
            leader = next(i for i, d in enumerate(details) if "websocket up" in d)
            tokens_before = sim.sim.tokens.issued
            call = sim.engine.place_call("+15550100", "101")
            kv = await open_bucket(nc.jetstream(), LEADERS)
            first_epoch = json.loads((await kv.get(PBX)).value or b"{}")["epoch"]

            async def ringing_seen(n: int = 1) -> bool:
                return [e.type for e in await stream_events(nc)].count("call.ringing") >= n

            await wait_until(ringing_seen, timeout=10, what="the call ringing")
            assert sim.sim.tokens.issued == tokens_before  # the standby never fetched a token (it would revoke)
            procs[leader].send_signal(signal.SIGKILL)
            procs[leader].wait(10)
            sim.engine.answer(sim.engine.participants("101")[0].id)  # seen by nobody until the takeover
            other = ports[1 - leader]

            async def took_over() -> bool:
                return "websocket up" in await _detail(http, other)

            await wait_until(took_over, timeout=20, what="the standby to take over")
            sim.engine.hangup(call.callid)

            async def ended() -> bool:
                return any(e.type == "call.ended" for e in await stream_events(nc))

            await wait_until(ended, timeout=10, what="the call to end")
            events = await stream_events(nc)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(15)
                if proc.poll() is None:
                    proc.kill()
    await nc.close()
    calls = [e for e in events if e.pbx_call_id == call.callid]
    types = [e.type for e in calls]
    assert types == ["call.created", "call.ringing", "call.answered", "call.leg_removed", "call.ended"], types
    epochs = [e.seq.epoch for e in calls if e.seq is not None]
    assert epochs[:2] == [first_epoch] * 2 and all(ep == first_epoch + 1 for ep in epochs[2:])
    answered = calls[2]
    assert answered.inferred  # the takeover's re-read found what the dead leader missed
    assert [e.seq.as_tuple() for e in calls if e.seq] == sorted(e.seq.as_tuple() for e in calls if e.seq)
    assert len({e.call_id for e in calls}) == 1  # the new leader found the same call id in KV
    assert sum(e.type == "link.connected" for e in events) == 2  # one per leadership, never two at once


# --------------------------------------------------------------------------- identity across paths


async def test_the_resync_path_gives_the_same_event_ids_as_the_live_path(nats_server: str) -> None:
    """A restarted adapter that lost its acked state (ML_INGEST) re-derives a live call from a re-read: every call
    event it emits carries the id the live path gave, so JetStream drops it as a duplicate and the log gains nothing."""
    nc = await connect(nats_server, name="test-identity")
    await fresh_bus(nc.jetstream())
    async with (
        running_simulator() as sim,
        httpx.AsyncClient(base_url=sim.base_url) as http,
        collecting(nc) as stream,
    ):
        first = adapter_for(nc, sim, http, None)
        stopping = asyncio.Event()
        task = asyncio.create_task(first.run(stopping))
        await asyncio.wait_for(first.synced.wait(), 10)
        call = sim.engine.place_call("+15550100", "101")
        await eventually(lambda: "call.ringing" in stream.types(call.callid), what="the phone to ring")
        [ringing] = sim.engine.participants("101")
        sim.engine.answer(ringing.id)
        await eventually(lambda: "call.answered" in stream.types(call.callid), what="the live events")
        stopping.set()
        await asyncio.wait_for(task, 15)
        live = [e for e in stream.events if e.type.startswith("call.")]
        assert {e.type for e in live} >= {"call.created", "call.ringing", "call.answered"}

        state = await open_bucket(nc.jetstream(), INGEST_STATE)
        await state.purge(f"{PBX}.{call.callid}")  # the acked state is gone: only a re-read can rebuild the call

        second = adapter_for(nc, sim, http, None)
        stopping = asyncio.Event()
        task = asyncio.create_task(second.run(stopping))
        try:
            await eventually(lambda: second.synced.is_set() and second.outbox is not None
                             and second.outbox.duplicates >= 2 and len(second.outbox) == 0,
                             what="the re-derived events, refused as duplicates")  # fmt: skip
            assert second.outbox is not None
            rederived = second.outbox.duplicates
        finally:
            stopping.set()
            await asyncio.wait_for(task, 15)
        after = [e for e in stream.events if e.type.startswith("call.")]
    await nc.close()
    assert [e.event_id for e in after] == [e.event_id for e in live]  # nothing new for the call
    assert rederived >= 2  # its legs' ringing/answered came again, with the live path's ids
