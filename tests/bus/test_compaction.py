"""Delete markers purged from the per-call buckets, on a real nats-server: values, new or rewritten, are never lost."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from hub.bus import connect
from hub.bus.compaction import compact_deletes, compact_forever, marker_batches, purge_markers
from hub.bus.kv import CALL_LEASES, open_bucket
from tests.helpers import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.anyio]


async def _messages(js: JetStreamContext) -> int:
    return (await js.stream_info(f"KV_{CALL_LEASES.name}")).state.messages


async def _old_markers(js: JetStreamContext, older_than_s: float) -> list[tuple[str, int]]:
    return [marker async for batch in marker_batches(js, CALL_LEASES, older_than_s) for marker in batch]


async def test_old_delete_markers_go_and_live_keys_stay(js: JetStreamContext) -> None:
    kv = await open_bucket(js, CALL_LEASES)
    for key in ("main.a", "main.b", "main.c", "main.d"):
        await kv.put(key, b"held")
    await kv.delete("main.a")
    await kv.delete("main.b")
    await kv.delete("main.d")
    await kv.put("main.d", b"held again")  # its latest entry is a value: not a marker
    assert await _messages(js) == 4

    assert await compact_deletes(js, CALL_LEASES, older_than_s=3600) == 0  # too young: kept
    assert await compact_deletes(js, CALL_LEASES, older_than_s=0) == 2
    assert await _messages(js) == 2
    assert (await kv.get("main.c")).value == b"held"
    assert (await kv.get("main.d")).value == b"held again"
    with pytest.raises(KeyNotFoundError):
        await kv.get("main.a")
    await kv.create("main.a", b"claimed anew")  # a purged key can be created again
    assert (await kv.get("main.a")).value == b"claimed anew"


async def test_the_scan_for_markers_reads_no_values(js: JetStreamContext, nats_server: str) -> None:
    kv = await open_bucket(js, CALL_LEASES)
    for i in range(50):
        await kv.put(f"main.big{i}", b"x" * 20_000)  # 1 MB of values
    await kv.delete("main.big0")
    nc = await connect(nats_server, name="test-compaction-scan")
    try:
        before = nc.stats["in_bytes"]
        markers = await _old_markers(nc.jetstream(), older_than_s=0)
        received = nc.stats["in_bytes"] - before
    finally:
        await nc.close()
    assert [key for key, _ in markers] == ["main.big0"]
    assert received < 100_000, f"the scan received {received} bytes: it read the values"


async def test_the_scan_holds_one_batch_however_big_the_bucket(js: JetStreamContext, nats_server: str) -> None:
    """A KV watch pushed the whole bucket into the client at once: the coordinator's RSS stepped up at each round."""
    kv = await open_bucket(js, CALL_LEASES)
    keys = [f"main.gone{i}" for i in range(1_000)]
    await asyncio.gather(*(kv.put(key, b"held") for key in keys))
    await asyncio.gather(*(kv.delete(key) for key in keys))
    await kv.put("main.live", b"held")
    nc = await connect(nats_server, name="test-compaction-batches")
    try:
        received_at_each_batch: list[int] = []
        found: list[tuple[str, int]] = []
        before = nc.stats["in_msgs"]
        async for batch in marker_batches(nc.jetstream(), CALL_LEASES, older_than_s=0, batch=100):
            received_at_each_batch.append(nc.stats["in_msgs"] - before)
            found += batch
    finally:
        await nc.close()
    assert sorted(key for key, _ in found) == sorted(keys)  # every marker, the live key not among them
    assert len(received_at_each_batch) == 10
    for n, received in enumerate(received_at_each_batch, start=1):
        assert received <= n * 100 + 5, f"{received} messages in the client at batch {n}: the scan ran ahead"
    assert await compact_deletes(js, CALL_LEASES, older_than_s=0, batch=100) == 1_000
    assert await _messages(js) == 1
    assert (await kv.get("main.live")).value == b"held"


async def test_a_value_written_after_the_marker_was_found_is_not_purged(js: JetStreamContext) -> None:
    kv = await open_bucket(js, CALL_LEASES)
    await kv.put("main.e", b"held")
    await kv.delete("main.e")
    markers = await _old_markers(js, older_than_s=0)
    assert [key for key, _ in markers] == ["main.e"]
    await kv.create("main.e", b"claimed between the scan and the purge")
    await purge_markers(js, CALL_LEASES, markers)
    assert (await kv.get("main.e")).value == b"claimed between the scan and the purge"
    assert await _messages(js) == 1


async def test_the_loop_compacts_until_stopped(js: JetStreamContext) -> None:
    kv: KeyValue = await open_bucket(js, CALL_LEASES)
    await kv.put("main.f", b"held")
    await kv.delete("main.f")
    stopping = asyncio.Event()
    task = asyncio.create_task(compact_forever(js, stopping, every_s=0.05, older_than_s=0))

    async def compacted() -> bool:
        return await _messages(js) == 0

    await wait_until(compacted, timeout=10, what="the lease marker purged")
    stopping.set()
    with anyio.fail_after(5):
        await task
