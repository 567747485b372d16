"""A per-PBX command rate limit shared by every worker (D§8): a fixed one-second window counted in NATS KV.

3CX documents no rate limit; the default (20 commands/s) protects the PBX from a runaway agent. Each window is one KV
key incremented with compare-and-set, so two workers never both take the last slot. Keys expire with the bucket TTL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue


class SharedRateLimiter:
    def __init__(self, kv: KeyValue, pbx_id: str, per_second: int, *, clock: Callable[[], float] = time.time) -> None:
        self._kv = kv
        self._pbx_id = pbx_id
        self.per_second = per_second
        self._clock = clock

    async def try_acquire(self) -> bool:
        """Take a slot in the current window if one is left."""
        if self.per_second <= 0:  # limit lifted
            return True
        while True:
            key = f"{self._pbx_id}.{int(self._clock())}"
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:
                try:
                    await self._kv.create(key, b"1")
                    return True
                except KeyWrongLastSequenceError:
                    continue  # another worker opened the window first
            count = int(entry.value or b"0")
            if count >= self.per_second:
                return False
            try:
                await self._kv.update(key, str(count + 1).encode(), last=entry.revision)
                return True
            except KeyWrongLastSequenceError:
                continue  # lost a race for this slot: re-read

    async def acquire(self, deadline: float) -> bool:
        """Wait for a slot until ``deadline`` (time.time()); False when the deadline passes first."""
        while True:
            if await self.try_acquire():
                return True
            now = self._clock()
            next_window = int(now) + 1
            if next_window >= deadline:
                return False
            await asyncio.sleep(next_window - now)
