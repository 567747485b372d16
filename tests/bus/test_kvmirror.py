"""The KV mirror: loaded a batch at a time without the bucket's delete markers, then following every change from the
next sequence, through a nats-server restart too."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from hub.bus import connect
from hub.bus.kvmirror import KvMirror
from tests.helpers import eventually, private_nats, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.nats]

BUCKET = "TEST_MIRROR"


async def _fresh(js: JetStreamContext) -> KeyValue:
    with contextlib.suppress(NotFoundError):
        await js.delete_key_value(BUCKET)
    return await js.create_key_value(KeyValueConfig(bucket=BUCKET, history=1))


async def _bucket(js: JetStreamContext, live: int, deleted: int) -> None:
    kv = await _fresh(js)
    for i in range(live + deleted):
        await kv.put(f"k.{i:05d}", f"v{i}".encode())
    await asyncio.gather(*(kv.delete(f"k.{i:05d}") for i in range(live, live + deleted)))


async def test_the_first_load_holds_the_live_keys_only_and_changes_after_it_arrive_in_order(
    js: JetStreamContext,
) -> None:
    await _bucket(js, live=40, deleted=600)  # more markers than a batch of the scan
    mirror = await KvMirror(js, BUCKET, bytes.decode).start()
    kv = await js.key_value(BUCKET)
    try:
        assert sorted(mirror.values) == [f"k.{i:05d}" for i in range(40)]
        assert mirror.values["k.00007"][0] == "v7"
        revision = await kv.put("k.00007", b"again")
        await kv.delete("k.00003")
        await kv.put("k.new", b"fresh")
        await eventually(lambda: "k.new" in mirror.values, what="the new key followed")
        assert mirror.values["k.00007"] == ("again", revision)
        assert "k.00003" not in mirror.values
        assert len(mirror.values) == 40
    finally:
        await mirror.stop()


async def test_a_pattern_mirrors_its_keys_only(js: JetStreamContext) -> None:
    kv = await _fresh(js)
    await kv.put("a.one", b"1")
    await kv.put("b.one", b"2")
    mirror = await KvMirror(js, BUCKET, bytes.decode, "a.*").start()
    try:
        await kv.put("b.two", b"3")
        await kv.put("a.two", b"4")
        await eventually(lambda: "a.two" in mirror.values, what="a.two followed")
        assert sorted(mirror.values) == ["a.one", "a.two"]
    finally:
        await mirror.stop()


async def test_an_empty_bucket_mirrors_what_comes_later(js: JetStreamContext) -> None:
    kv = await _fresh(js)
    mirror = await KvMirror(js, BUCKET, bytes.decode).start()
    try:
        assert mirror.values == {}
        await kv.put("k", b"v")
        await eventually(lambda: "k" in mirror.values, what="the first key followed")
    finally:
        await mirror.stop()


async def test_the_mirror_keeps_following_after_the_nats_server_restarts(tmp_path: Path) -> None:
    with private_nats(tmp_path) as nats:
        nc = await connect(nats.url, name="test-mirror-restart")
        try:
            js = nc.jetstream()
            await _bucket(js, live=3, deleted=2)
            mirror = await KvMirror(js, BUCKET, bytes.decode).start()
            kv = await js.key_value(BUCKET)
            try:
                nats.kill()
                nats.restart()

                async def written() -> bool:  # JetStream answers a moment after the server accepts connections
                    try:
                        await kv.put("k.after", b"restart")
                        await kv.delete("k.00000")
                    except (NatsError, TimeoutError):
                        return False
                    return True

                await wait_until(written, timeout=30, what="JetStream back after the restart")
                await eventually(lambda: "k.after" in mirror.values and "k.00000" not in mirror.values,
                                 timeout=30, what="changes after the restart followed")  # fmt: skip
                assert sorted(mirror.values) == ["k.00001", "k.00002", "k.after"]
            finally:
                await mirror.stop()
        finally:
            await nc.close()
