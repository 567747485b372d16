"""Load mode: keep up to N calls alive at once, placing new ones at a steady rate, each held for a while.

Calls go from distinct outside numbers to the route point (or ``to``); with ``repeat_upserts_s`` set, every live
leg is re-upserted on that period, which is where most of the websocket traffic comes from. Everything runs on the
simulator clock, so a load scenario can also run accelerated.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.simulator.app import Simulator


@dataclass
class LoadStats:
    placed: int = 0
    ended: int = 0
    peak_concurrent: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0


async def run_load(
    sim: Simulator, *, calls: int, rate: float, hold: float, duration: float | None = None, to: str | None = None,
    stats: LoadStats | None = None,
) -> LoadStats:  # fmt: skip
    """Place calls at ``rate``/s, at most ``calls`` at once, each hung up ``hold`` s after it began; stop placing
    after ``duration`` s (default: once ``calls`` have been placed) and hang up the rest as their hold ends."""
    if calls < 1 or rate <= 0 or hold <= 0:
        raise ValueError("load needs calls >= 1, rate > 0 and hold > 0")
    clock, engine = sim.clock, sim.engine
    stats = stats or LoadStats()
    stats.started_at = clock()
    target = to or sim.config.client_id
    stop_placing = stats.started_at + duration if duration is not None else None
    ends: list[tuple[float, int]] = []  # (hang-up time, callid)
    next_call = stats.started_at
    while True:
        now = clock()
        while ends and ends[0][0] <= now:
            _, callid = heapq.heappop(ends)
            if callid in engine.calls:
                engine.hangup(callid)
            stats.ended += 1
        placing = (stop_placing is None and stats.placed < calls) or (stop_placing is not None and now < stop_placing)
        if placing and len(ends) < calls and now >= next_call:
            call = engine.place_call(f"+1555{stats.placed:07d}", target, caller_name=f"Load {stats.placed}")
            heapq.heappush(ends, (now + hold, call.callid))
            stats.placed += 1
            stats.peak_concurrent = max(stats.peak_concurrent, len(ends))
            next_call = max(next_call + 1 / rate, now - 1 / rate)  # catch up a little, never burst
            continue
        if not placing and not ends:
            break
        wake = [t for t in (ends[0][0] if ends else None, next_call if placing and len(ends) < calls else None) if t]
        if stop_placing is not None and placing:
            wake.append(stop_placing)
        await clock.sleep_until(min(wake))
    stats.finished_at = clock()
    return stats
