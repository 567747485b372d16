"""A simulator process for the ingest benchmark: background calls (their repeated upserts are the load) and probe
calls (the changes whose latency is measured).

``python -m hub.ingest.loadsim PORT CALLS REPEAT_S PROBES_PER_S SECONDS WARMUP_S`` prints ``ready`` once
listening. Once a websocket client is connected it places CALLS calls to the route point (held until the end),
prints ``loaded``, waits WARMUP_S, then every 1/PROBES_PER_S s places a probe (an outside caller ringing extension
101, answered 0.15 s and hung up 0.3 s later) for SECONDS, and prints ``done``. REPEAT_S 0 turns repeated upserts
off. The journal (``GET /_sim/journal``) has the ground-truth times.
"""

from __future__ import annotations

import asyncio
import sys

from hub.simulator.config import SimConfig
from hub.simulator.server import running_simulator


async def _main(port: int, calls: int, repeat_s: float, probes_per_s: float, seconds: float, warmup_s: float) -> None:
    config = SimConfig(repeat_upserts_s=repeat_s or None)
    async with running_simulator(config, port=port) as sim:
        print("ready", flush=True)
        await sim.sim.client_connected.wait()
        engine = sim.engine
        for i in range(calls):
            engine.place_call(f"+1557{i:07d}", config.client_id)
            if i % 200 == 199:
                await asyncio.sleep(0)  # let the frames out
        print("loaded", flush=True)
        await asyncio.sleep(warmup_s)  # the hub reads and publishes the new calls before the probes start
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        n = 0

        def hang_up(callid: int) -> None:
            if callid in engine.calls:
                engine.hangup(callid)

        def answer(callid: int) -> None:
            for leg in engine.legs_of(callid):
                if leg.status == "Ringing":
                    engine.answer(leg.id)

        while loop.time() < end:
            call = engine.place_call(f"+1558{n:07d}", "101")
            loop.call_later(0.15, answer, call.callid)
            loop.call_later(0.3, hang_up, call.callid)
            n += 1
            await asyncio.sleep(1 / probes_per_s)
        print("done", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(_main(int(a[0]), int(a[1]), float(a[2]), float(a[3]), float(a[4]), float(a[5])))
