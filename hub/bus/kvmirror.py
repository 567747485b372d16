"""An in-memory copy of a KV bucket's current values, kept by a watch, so scans cost no round trips.

Used for the coordinator's leases and assignments and for the agent registry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Generic, Self, TypeVar

from nats.js.kv import KeyValue

from hub.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")
_DELETED = ("DEL", "PURGE")


class KvMirror(Generic[T]):
    """``values`` holds key -> (parsed value, revision); ``changed`` is set after every entry the watch delivers.

    ``start`` returns once the bucket's current values have all arrived. A value ``parse`` refuses (ValueError,
    which pydantic's ValidationError is) is logged and the key keeps its last readable value.
    """

    def __init__(self, kv: KeyValue, parse: Callable[[bytes], T], pattern: str = ">") -> None:
        self._kv = kv
        self._parse = parse
        self._pattern = pattern
        self.values: dict[str, tuple[T, int]] = {}  # key -> (value, revision)
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self.changed = asyncio.Event()

    async def start(self) -> Self:
        watcher = await self._kv.watch(self._pattern)
        self._task = asyncio.create_task(self._follow(watcher), name=f"mirror-{self._pattern}")
        await self._synced.wait()
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        try:
            async for entry in watcher:
                if entry is None:
                    self._synced.set()
                    continue
                if entry.operation in _DELETED or not entry.value:
                    self.values.pop(entry.key, None)
                else:
                    try:
                        self.values[entry.key] = (self._parse(entry.value), entry.revision or 0)
                    except ValueError:
                        log.warning("unreadable KV value", key=entry.key)
                if entry.delta == 0:
                    self._synced.set()
                self.changed.set()
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    def forget(self, key: str) -> None:
        """Drop a key we just deleted ourselves (the watch will confirm it)."""
        self.values.pop(key, None)
