"""The emitter under a burst: the calls a batch opens are opened together (each is one KV create), and the events
still leave in the order of the observations."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from hub.ingest.calls import CallRegistry
from hub.ingest.emitter import Emitter
from hub.ingest.tracker import CallAppeared, CallGone, LegAppeared, LegRemoved, Observation
from tests.ingest.test_tracker import leg

pytestmark = pytest.mark.anyio


class SlowIds:
    """A call-id bucket whose creates take a round trip each; counts how many are in flight at once."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s = delay_s
        self.inflight = 0
        self.peak = 0
        self.keys: list[str] = []

    async def create(self, key: str, value: bytes) -> int:
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            await asyncio.sleep(self.delay_s)  # the KV round trip being modelled, not a wait for another task
        finally:
            self.inflight -= 1
        self.keys.append(key)
        return 1


def _new_calls(n: int, at: float = 100.0) -> list[Observation]:
    out: list[Observation] = []
    for callid in range(1, n + 1):
        snapshot = leg(callid, "Ringing", dn="800", callid=callid)
        out += [CallAppeared(callid, snapshot, at, False), LegAppeared(snapshot, at, False)]
    return out


def _emitter(ids: Any) -> Emitter:
    return Emitter("main", CallRegistry("main", ids, None), epoch=1)


async def test_a_burst_of_new_calls_is_opened_at_once_not_one_round_trip_each() -> None:
    ids = SlowIds(delay_s=0.05)
    emitter = _emitter(ids)
    with anyio.fail_after(1.0):  # 40 creates one after the other would take 2 s
        events = await emitter.events(_new_calls(40))
    assert ids.peak == 40 and len(ids.keys) == 40
    types = [ev.type_name() for ev in events]
    assert types == ["call.created", "call.ringing"] * 40  # observation order kept
    assert [ev.pbx_call_id for ev in events[::2]] == list(range(1, 41))
    assert len({ev.call_id for ev in events}) == 40


async def test_a_call_that_ends_and_comes_back_in_one_batch_keeps_its_id_and_order() -> None:
    ids = SlowIds(delay_s=0.0)
    emitter = _emitter(ids)
    first = await emitter.events(_new_calls(1))
    old, again = leg(1, "Ringing", dn="800", callid=1), leg(9, "Ringing", dn="800", callid=1)
    batch: list[Observation] = [
        LegRemoved(old, 101.0, False),
        CallGone(1, old, 101.0, False),
        CallAppeared(1, again, 101.5, False),  # first mentioned by its end: not opened ahead of it
        LegAppeared(again, 101.5, False),
        *_new_calls(3, at=102.0)[2:],  # calls 2 and 3 are new: opened together
    ]
    events = await emitter.events(batch)
    assert [ev.type_name() for ev in events] == ["call.leg_removed", "call.ended", "call.ringing",
                                          "call.created", "call.ringing", "call.created", "call.ringing"]  # fmt: skip
    assert {ev.call_id for ev in events[:3]} == {first[0].call_id}  # it came back within the window: same call
    record = emitter.registry.get(1)
    assert record is not None and record.call_id == first[0].call_id
    assert len(ids.keys) == 3
