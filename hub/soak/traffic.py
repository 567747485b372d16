"""Traffic from the simulator's load driver: calls to the route point at a rate that gives about the events per
second asked for (each call makes :data:`EVENTS_PER_CALL` events in the log: created, answered, the coordinator's
assignment and claim, the routing decision, the leg removed, the release, the end, the CRM record), held a few
seconds each."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from hub.simulator import LoadStats, SimHandle, run_load

EVENTS_PER_CALL = 9.0


@dataclass
class Traffic:
    stats: LoadStats = field(default_factory=LoadStats)
    task: asyncio.Task[LoadStats] | None = None

    async def placed(self, calls: int, within_s: float = 10.0) -> None:
        """Wait until ``calls`` calls have been placed (a fault then hits a hub under traffic)."""
        async with asyncio.timeout(within_s):
            while self.stats.placed < calls:  # noqa: ASYNC110 - the load driver has no event to wait on
                await asyncio.sleep(0.02)

    async def finish(self) -> LoadStats:
        """Wait until every call placed has been hung up (placing stopped at the duration)."""
        if self.task is not None:
            await self.task
        return self.stats


@contextlib.asynccontextmanager
async def load(sim: SimHandle, *, events_per_s: float, seconds: float, hold_s: float = 3.0) -> AsyncIterator[Traffic]:
    """Place calls for ``seconds`` in the background; on exit, wait for the last ones to end."""
    rate = max(events_per_s / EVENTS_PER_CALL, 0.1)
    traffic = Traffic()
    traffic.task = asyncio.create_task(run_load(sim.sim, calls=max(int(rate * hold_s * 2), 1), rate=rate,
                                                hold=hold_s, duration=seconds, stats=traffic.stats))  # fmt: skip
    try:
        yield traffic
        await traffic.finish()
    finally:
        if not traffic.task.done():
            traffic.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic.task
