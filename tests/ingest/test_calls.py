"""The call registry's memory of ended calls: bounded by age, and what it forgets is found again in the call-id map."""

from __future__ import annotations

import pytest

from hub.bus import connect
from hub.bus.kv import CALL_IDS, INGEST_STATE, open_bucket
from hub.ingest.calls import RECENT_KEEP_S, CallRegistry
from tests.helpers import fresh_bus

pytestmark = pytest.mark.anyio


async def test_an_ended_call_is_kept_in_memory_only_for_the_keep_window() -> None:
    registry = CallRegistry("main", None, None)  # no bus: memory is the only way a call comes back
    first, how = await registry.open(7, 0.0)
    assert how == "new"
    registry.close(first, 1.0)
    back, how = await registry.open(7, 1.0 + RECENT_KEEP_S / 2)
    assert (how, back.call_id) == ("reappeared", first.call_id)
    registry.close(back, 2.0 + RECENT_KEEP_S / 2)

    other, _ = await registry.open(8, 3.0 + 2 * RECENT_KEEP_S)
    registry.close(other, 3.0 + 2 * RECENT_KEEP_S)  # closing a later call forgets the old one
    again, how = await registry.open(7, 4.0 + 2 * RECENT_KEEP_S)
    assert how == "new" and again.call_id != first.call_id


async def test_a_call_forgotten_by_memory_comes_back_with_its_id_from_the_call_id_map(nats_server: str) -> None:
    nc = await connect(nats_server, name="test-call-registry")
    try:
        js = nc.jetstream()
        await fresh_bus(js)
        registry = CallRegistry("main", await open_bucket(js, CALL_IDS), await open_bucket(js, INGEST_STATE))
        first, how = await registry.open(7, 0.0)
        assert how == "new"
        registry.close(first, 1.0, parked_orbit="70")
        await registry.flush_ids()
        other, _ = await registry.open(8, 2.0 + RECENT_KEEP_S)
        registry.close(other, 2.0 + RECENT_KEEP_S)  # 7 leaves memory

        back, how = await registry.open(7, 3.0 + RECENT_KEEP_S)
        assert (how, back.call_id) == ("resumed", first.call_id)
    finally:
        await nc.close()
