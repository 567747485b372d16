"""``hub.bus.kv.create`` against the compaction's purge landing inside nats-py's create, on a real nats-server.

nats-py's create of a deleted key is three steps: a write that expects no entry (refused: the marker is there), a
read of the marker, a write on the marker's revision. The races are staged by purging the key's marker at the exact
step, through the bucket's own ``_get`` (nats-py's read): the purge itself is the real one the compaction sends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from hub.bus.compaction import compact_deletes
from hub.bus.kv import CALL_LEASES, create, open_bucket

pytestmark = [pytest.mark.nats, pytest.mark.anyio]


async def _deleted_key(js: JetStreamContext, key: str) -> KeyValue:
    kv = await open_bucket(js, CALL_LEASES)
    await kv.put(key, b"released long ago")
    await kv.delete(key)
    return kv


def _purge_around_read(kv: KeyValue, js: JetStreamContext, *, before_read: bool) -> list[int]:
    """Purge the key's marker once, just before nats-py's read of it or just after (then the second write fails)."""
    read: Callable[..., Awaitable[Any]] = kv._get
    purges: list[int] = []

    async def racing_read(key: str, *args: Any, **kwargs: Any) -> Any:
        if purges:
            return await read(key, *args, **kwargs)
        purges.append(1)
        if before_read:
            await compact_deletes(js, CALL_LEASES, older_than_s=0)
            return await read(key, *args, **kwargs)
        try:
            return await read(key, *args, **kwargs)
        finally:
            await compact_deletes(js, CALL_LEASES, older_than_s=0)

    kv._get = racing_read  # type: ignore[method-assign]
    return purges


@pytest.mark.parametrize("before_read", [True, False], ids=["purged-before-the-read", "purged-after-the-read"])
async def test_a_create_racing_the_purge_of_its_marker_creates_the_key(js: JetStreamContext, before_read: bool) -> None:
    kv = await _deleted_key(js, "main.call1")
    purges = _purge_around_read(kv, js, before_read=before_read)
    with pytest.raises((KeyNotFoundError, KeyWrongLastSequenceError)):  # what nats-py's create alone does
        await kv.create("main.call1", b"claimed")
    assert purges == [1]

    kv = await _deleted_key(js, "main.call2")
    purges = _purge_around_read(kv, js, before_read=before_read)
    revision = await create(kv, "main.call2", b"claimed")
    assert purges == [1]
    entry = await kv.get("main.call2")
    assert (entry.value, entry.revision) == (b"claimed", revision)


async def test_a_key_that_holds_a_value_is_still_refused(js: JetStreamContext) -> None:
    kv = await open_bucket(js, CALL_LEASES)
    await create(kv, "main.call3", b"first")
    with pytest.raises(KeyWrongLastSequenceError):
        await create(kv, "main.call3", b"second")
    assert (await kv.get("main.call3")).value == b"first"
    await kv.delete("main.call3")
    await create(kv, "main.call3", b"after the delete")  # a marker, not purged: nats-py's own path
    assert (await kv.get("main.call3")).value == b"after the delete"
