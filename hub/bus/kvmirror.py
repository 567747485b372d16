"""An in-memory copy of a KV bucket's current values, so scans cost no round trips.

Used for the coordinator's leases and assignments and for the agent registry. The first load reads each key's
latest entry a batch at a time (:class:`hub.bus.kvscan.KvScan`), skipping delete markers; an ordered push consumer
then follows every change from the next stream sequence (nats-py resets it after a reconnect or a gap, from the last
sequence it saw). Not nats-py's ``watch``: its first delivery is every key's latest entry at once, markers
included, and a bucket of the soak's per-call markers (tens of thousands) left each new coordinator ~7 MiB larger.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Generic, Self, TypeVar

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from hub.bus.kvscan import KvScan, is_marker, kv_prefix, kv_stream
from hub.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")
FOLLOW_INACTIVE_S = 300.0  # the server drops a follower whose process vanished


class KvMirror(Generic[T]):
    """``values`` holds key -> (parsed value, revision); ``changed`` is set after every entry that arrives.

    ``start`` returns once the bucket's current values are loaded. A value ``parse`` refuses (ValueError, which
    pydantic's ValidationError is) is logged and the key keeps its last readable value.
    """

    def __init__(self, js: JetStreamContext, bucket: str, parse: Callable[[bytes], T], pattern: str = ">") -> None:
        self._js = js
        self._bucket = bucket
        self._prefix = kv_prefix(bucket)
        self._parse = parse
        self._pattern = pattern
        self.values: dict[str, tuple[T, int]] = {}  # key -> (value, revision)
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()

    async def start(self) -> Self:
        stream = kv_stream(self._bucket)
        floor = (await self._js.stream_info(stream)).state.last_seq
        scan = KvScan(self._js, self._bucket, self._pattern)
        async for msgs in scan.batches():
            for msg in msgs:
                self._take(msg)
        # complete: everything up to the stream's end then was seen; else follow from the last entry read
        start = max(scan.last_seq, floor) + 1 if scan.complete else scan.last_seq + 1
        sub = await self._js.subscribe(
            f"{self._prefix}{self._pattern}",
            stream=stream,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
            inactive_threshold=FOLLOW_INACTIVE_S,
        )
        self._task = asyncio.create_task(self._follow(sub), name=f"mirror-{self._bucket}-{self._pattern}")
        self.changed.set()
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self, sub: JetStreamContext.PushSubscription) -> None:
        try:
            async for msg in sub.messages:
                self._take(msg)
                self.changed.set()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _take(self, msg: Msg) -> None:
        key = msg.subject[len(self._prefix) :]
        if is_marker(msg) or not msg.data:
            self.values.pop(key, None)
            return
        try:
            self.values[key] = (self._parse(msg.data), msg.metadata.sequence.stream)
        except ValueError:
            log.warning("unreadable KV value", key=key)

    def forget(self, key: str) -> None:
        """Drop a key we just deleted ourselves (the follower will confirm it)."""
        self.values.pop(key, None)
