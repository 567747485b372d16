"""PBX faults (issue 15): each fault against the simulator's ground truth (D§4), with its recovery time (D§11).

- every observed transition once in the stream (the projection diff is empty), every event id once;
- no command carried out twice (the simulator's request journal);
- recovery without a hand: the test only injects and waits;
- recovery time: fault injected -> the next event committed (printed; the figures of docs/faults.md).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import timedelta

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.config import IngestConfig, PbxConfig
from hub.ingest.polling import merge_windows
from hub.ingest.wire import FrameError, parse_frame
from hub.pbx import CallControlClient, CallControlGateway
from hub.pbx.broker import BrokeredTokens
from hub.sdk.client import CommandClient
from hub.simulator import SimConfig
from hub.simulator.load import LoadStats, run_load
from hub.simulator.projection import Outage
from hub.worker.service import Worker, WorkerConfig
from schemas import commands as c
from schemas.common import ErrorCode, LegRef, utcnow
from schemas.identity import new_call_id
from tests.agents.support import ROUTE_POINT, fresh_connection, worker_rig
from tests.faults.pbx_rig import (
    Recovery,
    drop_and_resync,
    executed,
    matches_ground_truth,
    on_loop,
    recovered,
    requests,
    threaded_ingest_rig,
)
from tests.helpers import eventually
from tests.ingest.conftest import PBX, IngestRig, ingest_rig

FAST_SIM = 5.0  # the accelerated clock: five simulated seconds per second
CONFIG = IngestConfig(call_end_grace_s=0.2, reconcile_delay_s=0.1)


def _reconciled(rig: IngestRig) -> int:
    return rig.adapter.reconciler.reconciled if rig.adapter.reconciler is not None else 0


# --------------------------------------------------------------------------- the websocket


@pytest.mark.anyio
@pytest.mark.nats
async def test_the_websocket_dropped_ten_times_in_a_thousand_calls_loses_nothing(nats_server: str) -> None:
    async with ingest_rig(nats_server, SimConfig(clock_speed=FAST_SIM), CONFIG, sim_clock=True) as rig:
        stats = LoadStats()
        load = asyncio.create_task(run_load(rig.sim.sim, calls=1000, rate=20, hold=6.0, stats=stats))
        recovery = Recovery("websocket drop (1,000 calls, 10 drops)")
        try:
            for n in range(1, 11):
                await eventually(lambda n=n: stats.placed >= n * 90, timeout=20, what=f"call {n * 90}")  # type: ignore[misc]
                await drop_and_resync(rig, recovery)
            await asyncio.wait_for(load, 30)
        finally:
            load.cancel()
        await rig.settled(timeout=30)
        recovery.report()
        await matches_ground_truth(rig, ignore_inferred=True)  # a read that lags a drop sees the hidden change live
    assert stats.placed == stats.ended == 1000
    assert len(rig.stream.of("call.created")) == 1000 and len(rig.stream.of("call.ended")) == 1000
    assert len(rig.stream.of("link.disconnected")) == 10 and len(rig.stream.of("link.resynced")) == 10
    assert rig.adapter.stats.resyncs == 11  # the first connection and one per drop, nothing else


# --------------------------------------------------------------------------- REST storms on ingest's reads


@pytest.mark.anyio
@pytest.mark.nats
async def test_5xx_and_429_storms_on_reads_lose_no_call_and_honour_retry_after(nats_server: str) -> None:
    """Calls that begin and end while every read fails come from the call history; the rest from reads that
    succeed once the storm is over. A 429's Retry-After holds the next read back."""
    async with ingest_rig(nats_server, SimConfig(clock_speed=FAST_SIM), CONFIG, sim_clock=True) as rig:
        engine, faults, journal = rig.sim.engine, rig.sim.sim.faults, rig.sim.journal
        known = engine.place_call("+15550100", "101")
        await rig.settled()
        unseen: list[int] = []
        recovery = Recovery("REST storm on reads")
        for round_, (status, retry_after, paths) in enumerate(((503, None, "/"), (429, 2.0, "/callcontrol/"))):
            start, since, injected = len(journal.entries), len(rig.stream.events), time.perf_counter()
            faults.rest_errors(status=status, seconds=4.0, retry_after=retry_after, paths=paths)
            stays = engine.place_call(f"+1555020{round_}", "102")  # its read fails until the storm is over
            if round_ == 0:
                engine.answer(engine.participants("101")[0].id)  # a known leg changes during the storm
            for i in range(3):  # calls that come and go inside the storm
                gone = engine.place_call(f"+155503{round_}{i}", "100")
                engine.hangup(gone.callid)
                unseen.append(gone.callid)
            recovery.add(await recovered(rig, since, injected, "the first event after the storm"))
            await rig.settled(timeout=20)
            rig.outages.append(Outage(start, len(journal.entries)))
            await eventually(lambda r=round_: _reconciled(rig) >= 3 * (r + 1), timeout=15,  # type: ignore[misc]
                             what="the storm's calls from the call history")  # fmt: skip
            engine.hangup(stays.callid)
            await rig.settled()
        engine.hangup(known.callid)
        await rig.settled()
        recovery.report()
        await matches_ground_truth(rig, ignore_inferred=True)
        from_history = [ev for ev in rig.stream.events if ev.pbx_call_id in unseen]
        assert len(from_history) == 2 * len(unseen) and all(ev.inferred for ev in from_history)
        refused = sorted(e.at for e in journal.of("request") if e.detail.get("status") == 429)
        assert refused, "the 429 storm refused no read"
        pauses = [b - a for a, b in itertools.pairwise(refused) if b - a > 0.2]  # between read rounds
        assert all(p >= 2.0 * 0.95 for p in pauses), pauses  # each round waited the Retry-After (simulated s)


@pytest.mark.anyio
@pytest.mark.nats
async def test_calls_gone_before_their_first_read_come_from_the_call_history(nats_server: str) -> None:
    """3CX's frames carry no state: a call hung up before the hub could read its leg is known only to the call
    history, and comes from it once, inferred."""
    async with ingest_rig(nats_server, SimConfig(), CONFIG) as rig:
        engine, journal = rig.sim.engine, rig.sim.journal
        start, since, injected = len(journal.entries), len(rig.stream.events), time.perf_counter()
        quick = [engine.place_call(f"+1555040{i}", "101") for i in range(3)]
        for call in quick:
            engine.hangup(call.callid)
        await rig.settled()
        rig.outages.append(Outage(start, len(journal.entries)))
        await eventually(lambda: _reconciled(rig) >= 3, what="the quick calls from the call history")
        recovery = Recovery("calls gone before their first read")
        recovery.add(await recovered(rig, since, injected, "the reconciled calls"))
        recovery.report()
        await matches_ground_truth(rig)
    assert rig.adapter.tracker.stats.unseen == 3
    assert (
        sorted(ev.type for ev in rig.stream.events if ev.type.startswith("call."))
        == ["call.created"] * 3 + ["call.ended"] * 3
    )


@pytest.mark.anyio
@pytest.mark.nats
async def test_legs_gone_unseen_one_after_another_share_one_call_history_read(nats_server: str) -> None:
    """Each leg gone before its read asks for the last minute of the call history; five in a row were five
    overlapping call-log reads of the PBX. Waiting windows are merged and read one at a time."""
    config = IngestConfig(call_end_grace_s=0.2, reconcile_delay_s=1.0)
    async with ingest_rig(nats_server, SimConfig(), config) as rig:
        engine, journal = rig.sim.engine, rig.sim.journal
        start = len(journal.entries)
        for i in range(5):  # one at a time: each is its own window of unseen legs
            call = engine.place_call(f"+1555041{i}", "101")
            engine.hangup(call.callid)
            await eventually(lambda n=i: rig.adapter.tracker.stats.unseen > n, what=f"quick call {i} unseen")  # type: ignore[misc]
        await rig.settled()
        rig.outages.append(Outage(start, len(journal.entries)))
        await eventually(lambda: _reconciled(rig) >= 5, what="the quick calls from the call history")
        await matches_ground_truth(rig)
    reads = [e for e in journal.of("request") if "GetCallLogData" in str(e.detail["path"])]
    assert rig.adapter.tracker.stats.unseen == 5
    assert 1 <= len(reads) <= 2, f"{len(reads)} call-log reads for 5 windows"
    assert rig.adapter.stats.reconciliations == len(reads)


def test_waiting_windows_merge_when_they_overlap_or_nearly_meet() -> None:
    windows = [(100.0, 160.0), (0.0, 60.0), (150.0, 170.0), (63.0, 64.0), (80.0, 90.0)]
    assert merge_windows(windows, within_s=5.0) == [(0.0, 64.0), (80.0, 90.0), (100.0, 170.0)]
    assert merge_windows([], within_s=5.0) == []


# --------------------------------------------------------------------------- REST storms on the worker's commands


def _drop(leg: LegRef, within_s: float) -> c.Drop:
    return c.Drop(pbx_id=PBX, issued_by="test", call_id=new_call_id(), leg=leg,
                  deadline=utcnow() + timedelta(seconds=within_s))  # fmt: skip


@pytest.mark.anyio
@pytest.mark.nats
async def test_commands_ride_out_429_and_503_within_their_deadline_and_never_run_twice(nats_server: str) -> None:
    async with fresh_connection(nats_server, "test-command-faults") as nc, worker_rig(nc) as rig:
        client, engine, faults = CommandClient(nc), rig.sim.engine, rig.sim.sim.faults
        recovery = Recovery("command through a 429/503 burst")

        async def burst(status: int, *, within_s: float, count: int | None = None, seconds: float | None = None,
                        retry_after: float | None = None) -> tuple[object, str, float]:  # fmt: skip
            engine.place_call(f"+15550{status}{len(engine.calls)}", ROUTE_POINT)
            leg = rig.route_point_leg()
            path = f"/callcontrol/{ROUTE_POINT}/participants/{leg.participant_id}/drop"
            faults.rest_errors(status=status, count=count, seconds=seconds, retry_after=retry_after, paths=path)
            started = time.perf_counter()
            result = await client.send(_drop(leg, within_s))
            faults.clear()
            return result, path, time.perf_counter() - started

        # a 429 with Retry-After, then a 503 burst: done after the wait, carried out once
        for status, count, retry_after in ((429, 2, 1.0), (503, 3, None)):
            result, path, took = await burst(status, within_s=8, count=count, retry_after=retry_after)
            assert result.ok, result  # type: ignore[attr-defined]
            assert len(requests(rig.sim, path)) == count + 1 and len(executed(rig.sim, path)) == 1
            assert took >= (retry_after or 0) * count
            assert engine.participants(ROUTE_POINT) == []
            recovery.add(took)
        # a Retry-After that ends after the deadline: refused at once, with the reason, never carried out
        result, path, took = await burst(429, within_s=2, count=1, retry_after=30)
        assert not result.ok and result.error.code == ErrorCode.RATE_LIMITED, result  # type: ignore[attr-defined]
        assert "deadline" in result.error.message and took < 1.5  # type: ignore[attr-defined]
        assert executed(rig.sim, path) == [] and len(engine.participants(ROUTE_POINT)) == 1
        engine.hangup(engine.participants(ROUTE_POINT)[0].callid)
        # 503 for longer than the deadline: tried until the deadline, then a clear failure
        result, path, took = await burst(503, within_s=1.5, seconds=60)
        assert not result.ok and result.error.code == ErrorCode.PBX_UNAVAILABLE, result  # type: ignore[attr-defined]
        assert "deadline" in result.error.message and took < 2.5  # type: ignore[attr-defined]
        assert len(requests(rig.sim, path)) > 2 and executed(rig.sim, path) == []
        engine.hangup(engine.participants(ROUTE_POINT)[0].callid)
        # a 500 may have been carried out: not sent again
        result, path, took = await burst(500, within_s=8, count=1)
        assert not result.ok and result.error.code == ErrorCode.PBX_UNAVAILABLE  # type: ignore[attr-defined]
        assert len(requests(rig.sim, path)) == 1
        recovery.report()


# --------------------------------------------------------------------------- the token revoked


@pytest.mark.anyio
@pytest.mark.nats
async def test_the_token_revoked_mid_run_is_fetched_again_and_nothing_is_lost_or_run_twice(nats_server: str) -> None:
    sim_config = SimConfig(clock_speed=FAST_SIM, revoked_token_closes_websocket=True)
    async with ingest_rig(nats_server, sim_config, CONFIG, sim_clock=True) as rig:
        sim, nc = rig.sim, rig.nc
        pbx = PbxConfig(id=PBX, base_url=sim.base_url, client_id=sim.config.client_id,
                        client_secret=sim.config.client_secret)  # fmt: skip
        async with httpx.AsyncClient(base_url=sim.base_url) as http:
            worker = Worker(nc, CallControlGateway(CallControlClient(http, BrokeredTokens(nc, PBX)), pbx),
                            config=WorkerConfig(rate_per_second=0))  # fmt: skip
            stopping = asyncio.Event()
            worker_task = asyncio.create_task(worker.run(stopping))
            try:
                await asyncio.wait_for(worker.ready.wait(), 10)
                stats = LoadStats()
                load = asyncio.create_task(run_load(sim.sim, calls=200, rate=15, hold=8.0, stats=stats))
                await eventually(lambda: stats.placed >= 100, timeout=20, what="half the calls")
                target = sim.engine.participants(ROUTE_POINT)[-1]  # the newest call: up for a while yet
                await eventually(lambda: "call.answered" in rig.stream.types(target.callid), timeout=15,
                                 what="the hub to have seen the call the worker drops")  # fmt: skip
                fetched = rig.adapter.tokens.fetches
                start, since, injected = len(sim.journal.entries), len(rig.stream.events), time.perf_counter()
                sim.sim.faults.revoke_tokens()
                leg = LegRef(dn=ROUTE_POINT, participant_id=target.id, legid=target.legid)
                result = await CommandClient(nc).send(_drop(leg, 8))
                took = await recovered(rig, since, injected, "an event after the revocation")
                await eventually(lambda: len(rig.stream.of("link.resynced")) >= 1, timeout=15, interval=0.005,
                                 what="the re-read")  # fmt: skip
                relinked = time.perf_counter() - injected
                rig.outages.append(Outage(start, rig.resync_index(start)))
                await asyncio.wait_for(load, 30)
                await rig.settled(timeout=20)
            finally:
                stopping.set()
                await asyncio.wait_for(worker_task, 15)
        for name, seconds in (("token revoked: next event", took), ("token revoked: websocket re-read", relinked)):
            recovery = Recovery(name)
            recovery.add(seconds)
            recovery.report()
        await matches_ground_truth(rig, ignore_inferred=True)
    assert result.ok and result.result == {"already_gone": False}, result
    path = f"/participants/{target.id}/drop"
    assert len(executed(sim, path)) == 1  # the 401 was answered by a re-fetch and one retry
    assert any(e.detail.get("status") == 401 for e in sim.journal.of("request"))
    assert rig.adapter.tokens.fetches >= fetched + 1
    assert sim.sim.tokens.issued >= 2


# --------------------------------------------------------------------------- duplicate and out-of-order frames


@pytest.mark.anyio
@pytest.mark.nats
async def test_duplicate_and_reordered_frames_give_each_transition_once(nats_server: str) -> None:
    async with ingest_rig(nats_server, SimConfig(clock_speed=FAST_SIM), CONFIG, sim_clock=True) as rig:
        faults = rig.sim.sim.faults
        stats = LoadStats()
        faults.duplicate_events(count=150)
        load = asyncio.create_task(run_load(rig.sim.sim, calls=300, rate=20, hold=6.0, stats=stats))
        await eventually(lambda: stats.placed >= 100, timeout=20, what="a third of the calls")
        faults.reorder_events(count=40, window=3)
        await eventually(lambda: stats.placed >= 200, timeout=20, what="two thirds of the calls")
        faults.duplicate_events(count=100)
        faults.reorder_events(count=40, window=4)
        await asyncio.wait_for(load, 30)
        faults.clear()
        await rig.settled(timeout=20)
        await matches_ground_truth(rig, with_history=False)
    applied = [e.detail["fault"] for e in rig.sim.journal.of("fault") if e.detail.get("phase") == "applied"]
    assert applied.count("duplicate_events") == 250 and applied.count("reorder_events") >= 60
    assert rig.adapter.stats.resyncs == 1  # no re-read was needed: nothing was inferred
    assert not any(ev.inferred for ev in rig.stream.events)


# --------------------------------------------------------------------------- malformed frames (property-based)

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
_EVENT = st.fixed_dictionaries(
    {},
    optional={
        "event_type": st.integers(-2, 4) | st.text(max_size=3) | _JSON,
        "entity": st.sampled_from(["/callcontrol/101/participants/x", "/callcontrol//participants/1", "", "/x"])
        | st.text(max_size=30)
        | _JSON,
        "attached_data": _JSON,
    },
)
MALFORMED = (
    st.binary(max_size=60)
    | st.text(max_size=60)
    | _JSON.map(json.dumps)
    | st.fixed_dictionaries({}, optional={"sequence": _JSON, "event": _EVENT | _JSON}).map(json.dumps)
)


def _rejected(frame: str | bytes) -> bool:
    try:
        parse_frame(frame)
    except FrameError:
        return True
    return False


@pytest.mark.nats
def test_malformed_frames_are_logged_and_skipped_and_nothing_valid_is_lost(nats_server: str) -> None:
    """Arbitrary frames between a call's real ones: each unreadable one counted, the link kept, every transition of
    the real calls once."""
    config = IngestConfig(call_end_grace_s=0.05)
    with threaded_ingest_rig(nats_server, SimConfig(), config) as live:
        rig = live.rig
        expected_malformed = [0]

        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(MALFORMED, min_size=1, max_size=6), st.integers(0, 2))
        def junk_around_a_call(frames: list[str | bytes], where: int) -> None:
            expected_malformed[0] += sum(_rejected(f) for f in frames)

            def junk(at: int) -> None:
                if where == at:
                    rig.sim.sim.faults.malformed_frames(frames=frames)

            engine = rig.sim.engine

            placed: list[int] = []

            def place() -> None:
                junk(0)
                placed.append(engine.place_call("+15550100", "101").callid)

            def answer() -> None:
                junk(1)
                engine.answer(engine.participants("101")[0].id)

            def hang_up() -> None:
                junk(2)
                engine.hangup(placed[-1])

            for step in (place, answer, hang_up):
                on_loop(live, step)
                live.run(rig.settled())

        junk_around_a_call()
        live.run(matches_ground_truth(rig, with_history=False))
        assert rig.adapter.stats.malformed == expected_malformed[0] > 0
        assert rig.adapter.stats.resyncs == 1 and len(rig.stream.of("link.disconnected")) == 0
