"""Ingest against the simulator: exactly the expected events, each unverified option both ways, outages, tokens."""

from __future__ import annotations

from typing import Any

import pytest

from hub.config import IngestConfig
from hub.simulator import SimConfig
from hub.simulator.projection import Outage, diff, observed, project
from schemas import events as e
from tests.ingest.conftest import IngestRig, ingest_rig

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


def _call_events(rig: IngestRig, callid: int) -> list[Any]:
    return [ev for ev in rig.stream.events if ev.pbx_call_id == callid]


def _check_projection(rig: IngestRig, *, connected_on_arrival: str = "answered", with_history: bool = False) -> None:
    expected = project(
        rig.sim.journal.entries, rig.sim.config.visible, outages=rig.outages,
        connected_on_arrival=connected_on_arrival, end_grace_s=rig.adapter.config.call_end_grace_s,
        with_history=with_history,
    )  # fmt: skip
    problems = diff(expected, observed(rig.stream.events))
    assert not problems, problems


def _per_leg_order_holds(events: list[Any]) -> None:
    """created first, ended last, and on each leg ringing < answered < leg_removed; seq increases per call."""
    types = [ev.type for ev in events]
    assert types[0] == "call.created" and types[-1] == "call.ended", types
    seqs = [ev.seq.as_tuple() for ev in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    rank = {"call.ringing": 0, "call.answered": 1, "call.leg_removed": 2}
    by_leg: dict[str, list[int]] = {}
    for ev in events:
        if ev.type in rank:
            by_leg.setdefault(ev.leg.key, []).append(rank[ev.type])
    for ranks in by_leg.values():
        assert ranks == sorted(ranks), ranks


GOLDEN = [
    pytest.param(SimConfig(), IngestConfig(call_end_grace_s=0.2), id="defaults"),
    pytest.param(
        SimConfig(route_point_inbound_connected=False), IngestConfig(call_end_grace_s=0.2), id="route-point-rings"
    ),
    pytest.param(
        SimConfig(sequence="gaps", repeat_upserts_s=0.05),
        IngestConfig(call_end_grace_s=0.2),
        id="repeats-and-sequence-gaps",
    ),
    pytest.param(
        SimConfig(sequence="global"),
        IngestConfig(call_end_grace_s=0.2, connected_on_arrival="ringing_then_answered"),
        id="ringing-then-answered",
    ),
]


@pytest.mark.parametrize(("sim_config", "config"), GOLDEN)
async def test_a_golden_scenario_gives_exactly_the_expected_events(
    nats_server: str, sim_config: SimConfig, config: IngestConfig
) -> None:
    async with ingest_rig(nats_server, sim_config, config) as rig:
        engine = rig.sim.engine
        # 1. an outside caller rings extension 101, who answers; the caller hangs up
        inbound = engine.place_call("+15550100", "101", caller_name="Dana")
        await rig.settled()
        [ringing_leg] = engine.participants("101")
        engine.answer(ringing_leg.id)
        await rig.settled()
        engine.hangup(inbound.callid)
        # 2. 101 calls 102 internally; 102 answers; 102 hangs up
        internal = engine.place_call("101", "102")
        await rig.settled()
        engine.answer(engine.participants("102")[0].id)
        await rig.settled()
        engine.hangup(internal.callid)
        # 3. an outside caller reaches the route point, presses keys, is transferred to 102, who answers
        routed = engine.place_call("+15550111", "800")
        await rig.settled()
        [rp_leg] = engine.participants("800")
        if rp_leg.status == "Ringing":
            engine.answer(rp_leg.id)
            await rig.settled()
        engine.send_dtmf(routed.callid, "12#")
        await rig.settled()
        engine.transfer(rp_leg.id, "102")
        await rig.settled()
        engine.answer(engine.participants("102")[0].id)
        await rig.settled()
        engine.hangup(routed.callid)
        await rig.settled()

        _check_projection(rig, connected_on_arrival=config.connected_on_arrival)

        first = _call_events(rig, inbound.callid)
        assert [ev.type for ev in first] == [
            "call.created", "call.ringing", "call.answered", "call.leg_removed", "call.ended",
        ]  # fmt: skip
        created = first[0]
        assert isinstance(created, e.CallCreated)
        assert created.data.direction == "inbound" and created.data.from_number == "+15550100"
        assert created.data.to_number == "101" and created.data.from_name == "Dana"
        ended = first[-1]
        assert isinstance(ended, e.CallEnded)
        assert ended.data.cause == "completed" and ended.data.answered is True
        assert ended.data.talk_seconds is not None and ended.data.talk_seconds >= 0
        assert len({ev.call_id for ev in first}) == 1 and not any(ev.inferred for ev in first)

        second = _call_events(rig, internal.callid)
        _per_leg_order_holds(second)
        assert isinstance(second[0], e.CallCreated) and second[0].data.direction == "internal"
        assert second[0].data.from_number == "101" and second[0].data.to_number == "102"

        third = _call_events(rig, routed.callid)
        _per_leg_order_holds(third)
        types = [ev.type for ev in third]
        assert types.count("call.dtmf") == 1 and types.count("call.transferred") == 1
        [dtmf] = [ev for ev in third if isinstance(ev, e.DtmfReceived)]
        assert dtmf.data.digits == "12#" and dtmf.leg is not None and dtmf.leg.dn == "800"
        [transfer] = [ev for ev in third if isinstance(ev, e.CallTransferred)]
        assert transfer.data.to == "102" and transfer.data.from_dn == "800"
        assert types.count("call.ended") == 1  # the transfer did not end the call
        assert len({ev.event_id for ev in rig.stream.events}) == len(rig.stream.events)
        assert [ev.type for ev in rig.stream.of("link.connected")] == ["link.connected"]


async def test_repeated_upserts_cost_at_most_one_read_each_and_emit_nothing(nats_server: str) -> None:
    async with ingest_rig(nats_server, SimConfig(repeat_upserts_s=0.1)) as rig:
        call = rig.sim.engine.place_call("+15550100", "101")
        await rig.settled()
        before = len(rig.stream.events)
        stats = rig.adapter.tracker.stats
        upserts = stats.upserts
        await rig.wait(lambda: stats.upserts >= upserts + 10, "10 repeated upserts")
        await rig.settled()
        assert len(rig.stream.events) == before  # an unchanged state emits nothing
        assert stats.reads + stats.list_reads <= stats.upserts
        rig.sim.engine.hangup(call.callid)
        await rig.settled()
        _check_projection(rig)


async def test_the_websocket_dropped_mid_call_several_times_matches_the_ground_truth(nats_server: str) -> None:
    """Transitions seen live once; each outage's net difference once, inferred; the calls that came and went
    inside an outage once, inferred, from the call history (D§4)."""
    config = IngestConfig(call_end_grace_s=0.2, reconcile_delay_s=0.1)
    async with ingest_rig(nats_server, SimConfig(repeat_upserts_s=None), config) as rig:
        engine = rig.sim.engine
        a = engine.place_call("+15550100", "101")
        b = engine.place_call("+15550101", "102")
        await rig.settled()
        for round_ in range(3):
            start = await rig.drop_link()
            # changes the hub cannot see: made before it reconnects (it waits at least one backoff step)
            engine.answer(engine.participants("102")[0].id) if round_ == 0 else None
            c = engine.place_call(f"+1555020{round_}", "100")  # appears during the outage and stays
            d = engine.place_call(f"+1555030{round_}", "800")  # comes and goes inside the outage
            engine.hangup(d.callid)
            if round_ == 1:
                engine.hangup(a.callid)  # a known call ends unseen
            resynced = len(rig.stream.of("link.resynced"))
            await rig.wait(lambda n=resynced: len(rig.stream.of("link.resynced")) > n, "a resync")  # type: ignore[misc]
            await rig.settled()
            rig.outages.append(Outage(start, rig.resync_index(start)))
            reconciler = rig.adapter.reconciler
            assert reconciler is not None
            await rig.wait(lambda n=round_, r=reconciler: r.reconciled > n, "the call-history reconciliation")  # type: ignore[misc]
            await rig.settled()
            engine.answer(engine.participants("100")[-1].id)  # seen live again
            await rig.settled()
            engine.hangup(c.callid)
            await rig.settled()
        engine.hangup(b.callid)
        await rig.settled()
        _check_projection(rig, with_history=True)
        resyncs = rig.stream.of("link.resynced")
        assert len(resyncs) == 3 and all(isinstance(r, e.LinkResynced) and r.data.inferred_events > 0 for r in resyncs)
        assert len(rig.stream.of("link.disconnected")) == 3
        inferred = [ev for ev in rig.stream.events if ev.inferred]
        assert inferred and all(ev.pbx_call_id != a.callid or ev.type in {"call.leg_removed", "call.ended"}
                                for ev in inferred)  # fmt: skip


async def test_a_revoked_token_is_fetched_again_and_nothing_is_missed(nats_server: str) -> None:
    async with ingest_rig(nats_server) as rig:
        fetched = rig.adapter.tokens.fetches
        rig.sim.sim.tokens.revoke_all()
        call = rig.sim.engine.place_call("+15550100", "101")  # the read after this upsert gets a 401
        await rig.settled()
        assert rig.adapter.tokens.fetches == fetched + 1
        rig.sim.engine.hangup(call.callid)
        await rig.settled()
        assert rig.stream.types(call.callid) == [
            "call.created", "call.ringing", "call.leg_removed", "call.ended",
        ]  # fmt: skip
        [ended] = rig.stream.of("call.ended")
        assert isinstance(ended, e.CallEnded) and ended.data.cause == "no_answer" and ended.data.answered is False


GARBAGE = [
    "not json",
    '{"sequence": 1, "event": null}',
    "[]",
    '{"sequence": 1}',
    '{"event": {"event_type": 0, "entity": 42}}',
    '{"event": {"event_type": 2, "entity": "/callcontrol/800/participants/1", "attached_data": {"dtmf_input": "x"}}}',
    '{"event": {"event_type": "zero", "entity": "/callcontrol/101/participants/1"}}',
]


async def test_malformed_frames_are_counted_and_the_link_goes_on(nats_server: str) -> None:
    async with ingest_rig(nats_server) as rig:
        [connection] = list(rig.sim.sim._connections)
        for frame in GARBAGE:  # straight onto the wire, as a broken PBX would send them
            connection.queue.put_nowait(frame)
            rig.sim.sim.frames_sent += 1
        call = rig.sim.engine.place_call("+15550100", "101")
        await rig.settled()
        assert rig.adapter.stats.malformed == len(GARBAGE)
        assert rig.stream.types(call.callid) == ["call.created", "call.ringing"]
        assert rig.adapter.socket is not None and rig.adapter.socket.connects == 1  # never dropped the link
