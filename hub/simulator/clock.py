"""One clock for the whole simulator: the engine, the token issuer, the repeater, audio pacing and scenarios.

Simulated time is epoch seconds that advance ``speed`` times faster than the wall clock, so a long scenario without
audio runs in a fraction of its length. Everything that waits waits on this clock (``sleep``/``sleep_until``), and
everything that stamps reads it, so order is kept at any speed: a step scheduled later in simulated time is never
run before an earlier one. At ``speed=1`` it is the wall clock.
"""

from __future__ import annotations

import asyncio
import time


class SimClock:
    def __init__(self, speed: float = 1.0, *, start: float | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed must be > 0 (1 = real time), not {speed}")
        self.speed = speed
        self._start = time.time() if start is None else start
        self._mono0 = time.monotonic()

    def __call__(self) -> float:
        return self._start + (time.monotonic() - self._mono0) * self.speed

    def now(self) -> float:
        return self()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of simulated time (``seconds / speed`` of real time)."""
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    async def sleep_until(self, at: float) -> None:
        """Wait until simulated time reaches ``at`` (at once if it already has)."""
        delay = at - self()
        if delay > 0:
            await asyncio.sleep(delay / self.speed)
