"""Simulator ceilings (issue 4): requests/s for GET participant and for participant actions, websocket events/s.

The simulator runs in its own process for the HTTP figures (so the load generator does not share its event loop);
the baseline is a bare Starlette app in the same kind of process answering with the same bytes. The websocket figure
is measured in-process against a bare Starlette websocket that sends the same frame in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator

import httpx
import websockets

from hub.bench.procs import spawn
from hub.bench.registry import BenchOptions, BenchResult, Figure, benchmark
from hub.natsd import free_port
from hub.simulator.config import SimConfig
from hub.simulator.server import running_simulator

_RAW_APP = r"""
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
body = sys.argv[2].encode()
async def get(request): return Response(body, media_type="application/json")
async def post(request):
    await request.body()
    return Response(body, media_type="application/json")
routes = [Route("/p", get), Route("/a", post, methods=["POST"]), Route("/connect/token", post, methods=["POST"])]
app = Starlette(routes=routes)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""

_SIM_APP = r"""
import asyncio, sys
from hub.simulator.config import SimConfig
from hub.simulator.server import running_simulator
async def main():
    async with running_simulator(SimConfig(), port=int(sys.argv[1])) as sim:
        sim.engine.place_call("+15550100", "800")
        print("ready", flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


def _process(code: str, *args: str) -> contextlib.AbstractContextManager[subprocess.Popen[str]]:
    return spawn(["-c", code, *args])


async def _wait_port(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(500):
            try:
                await client.post(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.02)
    raise RuntimeError(f"nothing answered at {url}")


async def _rate(port: int, request: bytes, seconds: float, connections: int = 8) -> float:
    """Requests/s over keep-alive connections with a minimal HTTP/1.1 client: httpx itself tops out near 500 req/s
    in one process, which would measure the client, not the server."""
    done = 0
    failed = 0
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal done, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    failed += 1
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))  # fmt: skip
                await reader.readexactly(length)
                done += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    if failed:
        raise RuntimeError(f"{failed} requests did not answer 200")
    return done / (time.perf_counter() - started)


def _request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@benchmark(
    "sim.rest", description="Simulator GET participant and participant-action requests/s vs a bare Starlette app"
)
async def sim_rest(options: BenchOptions) -> BenchResult:
    seconds = 1.0 if options.quick else 5.0
    sim_port, raw_port = free_port(), free_port()
    with _process(_SIM_APP, str(sim_port)) as proc:
        assert proc.stdout is not None
        await asyncio.to_thread(proc.stdout.readline)
        base = f"http://127.0.0.1:{sim_port}"
        async with httpx.AsyncClient(base_url=base) as c:
            form = {"client_id": "800", "client_secret": "sim-secret", "grant_type": "client_credentials"}
            token = (await c.post("/connect/token", data=form)).json()["access_token"]
            participant = (
                await c.get("/callcontrol/800/participants", headers={"Authorization": f"Bearer {token}"})
            ).json()[0]
        auth = {"Authorization": f"Bearer {token}"}
        get_path = f"/callcontrol/800/participants/{participant['id']}"
        action = json.dumps({"attacheddata": {"k": "v"}}).encode()
        sim_get = await _rate(sim_port, _request("GET", get_path, auth), seconds)
        sim_act = await _rate(sim_port, _request("POST", f"{get_path}/attach_participant_data", auth, action), seconds)
    body = json.dumps(participant)
    with _process(_RAW_APP, str(raw_port), body):
        raw = f"http://127.0.0.1:{raw_port}"
        await _wait_port(f"{raw}/connect/token")
        raw_get = await _rate(raw_port, _request("GET", "/p", auth), seconds)
        raw_post = await _rate(raw_port, _request("POST", "/a", auth, action), seconds)
    return BenchResult(
        name="sim.rest",
        figures=[
            Figure(name="GET participant", value=sim_get, unit="req/s"),
            Figure(name="participant action", value=sim_act, unit="req/s"),
        ],
        baseline=[
            Figure(name="bare GET", value=raw_get, unit="req/s"),
            Figure(name="bare POST", value=raw_post, unit="req/s"),
        ],
        headline="GET participant / bare GET",
        ratio=sim_get / raw_get,
        notes="8 keep-alive connections from a minimal client; simulator and baseline each in their own process",
    )


@contextlib.asynccontextmanager
async def _bare_ws(frame: str) -> AsyncIterator[str]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        with contextlib.suppress(Exception):
            while True:
                await ws.send_text(frame)

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="websockets-sansio")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
        await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        server.should_exit = True
        await task


async def _count_frames(ws: websockets.ClientConnection, seconds: float) -> float:
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        await ws.recv()
        count += 1
    return count / (time.perf_counter() - started)


@benchmark("sim.ws", description="Websocket events/s the simulator emits to one client vs a bare websocket loop")
async def sim_ws(options: BenchOptions) -> BenchResult:
    seconds = 1.0 if options.quick else 4.0
    async with running_simulator(SimConfig()) as sim:
        for i in range(200):
            sim.engine.place_call(f"+1555{i:07d}", "800")
        form = {"client_id": "800", "client_secret": "sim-secret", "grant_type": "client_credentials"}
        async with httpx.AsyncClient(base_url=sim.base_url) as c:
            token = (await c.post("/connect/token", data=form)).json()["access_token"]
        async with websockets.connect(sim.ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            stop = asyncio.Event()

            async def pump() -> None:
                while not stop.is_set():
                    sim.sim.repeat_upserts()  # 200 upserts per round
                    await asyncio.sleep(0)

            pumping = asyncio.create_task(pump())
            sim_rate = await _count_frames(ws, seconds)
            stop.set()
            await pumping
    frame = json.dumps({"sequence": 1, "event": {"event_type": 0, "entity": "/callcontrol/800/participants/1",
                                                 "attached_data": None}})  # fmt: skip
    async with _bare_ws(frame) as url, websockets.connect(url) as ws:
        raw_rate = await _count_frames(ws, seconds)
    return BenchResult(
        name="sim.ws",
        figures=[Figure(name="events to one client", value=sim_rate, unit="events/s")],
        baseline=[Figure(name="bare websocket loop", value=raw_rate, unit="frames/s")],
        headline="simulator / bare",
        ratio=sim_rate / raw_rate,
        notes="server and client in one process; 200 live participants re-upserted as fast as the socket drains",
    )


_LOAD_APP = r"""
import asyncio, sys
from hub.simulator.config import SimConfig
from hub.simulator.load import run_load
from hub.simulator.server import running_simulator
async def main():
    port, calls, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    async with running_simulator(SimConfig(repeat_upserts_s=0.75), port=port) as sim:
        print("ready", flush=True)
        await sim.sim.client_connected.wait()
        await run_load(sim.sim, calls=calls, rate=calls / 2, hold=hold, duration=3600)
asyncio.run(main())
"""
_RAMP_S = 2.0
_REPEAT_S = 0.75


async def _load_rung(calls: int, seconds: float) -> tuple[float, float]:
    """(events/s received, fraction of the expected repeats) with ``calls`` live route-point calls."""
    port = free_port()
    with _process(_LOAD_APP, str(port), str(calls), str(_RAMP_S + seconds + 30)) as proc:
        assert proc.stdout is not None
        await asyncio.to_thread(proc.stdout.readline)
        form = {"client_id": "800", "client_secret": "sim-secret", "grant_type": "client_credentials"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            token = (await c.post("/connect/token", data=form)).json()["access_token"]
        url = f"ws://127.0.0.1:{port}/callcontrol/ws"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            ramp_end = time.perf_counter() + _RAMP_S + 2 * _REPEAT_S
            while time.perf_counter() < ramp_end:
                await ws.recv()
            rate = await _count_frames(ws, seconds)
    expected = calls / _REPEAT_S
    return rate, rate / expected


@benchmark(
    "sim.load",
    description="Concurrent calls and websocket events/s the load mode sustains with repeated upserts (0.75 s)",
)
async def sim_load(options: BenchOptions) -> BenchResult:
    ladder = (250, 1000) if options.quick else (500, 1000, 2000, 4000, 8000, 16000)
    seconds = 2.0 if options.quick else 5.0
    sustained_calls, sustained_rate, tried = 0, 0.0, []
    for calls in ladder:
        rate, fraction = await _load_rung(calls, seconds)
        tried.append(f"{calls} calls: {rate:.0f} events/s ({100 * fraction:.0f}% of the repeats due)")
        if fraction < 0.9:
            break
        sustained_calls, sustained_rate = calls, rate
    frame = json.dumps({"sequence": 1, "event": {"event_type": 0, "entity": "/callcontrol/800/participants/1",
                                                 "attached_data": None}})  # fmt: skip
    async with _bare_ws(frame) as url, websockets.connect(url) as ws:
        raw_rate = await _count_frames(ws, 2.0 if options.quick else 4.0)
    return BenchResult(
        name="sim.load",
        figures=[
            Figure(name="concurrent calls sustained", value=sustained_calls, unit="calls"),
            Figure(name="events/s at that load", value=sustained_rate, unit="events/s"),
        ],
        baseline=[Figure(name="bare websocket loop", value=raw_rate, unit="frames/s")],
        headline="events/s at the sustained load / bare websocket loop",
        ratio=sustained_rate / raw_rate if raw_rate else None,
        notes="simulator + load generator in their own process, one websocket client here; a load is sustained "
        "when >= 90% of the repeated upserts due (calls / 0.75 s) arrive. " + "; ".join(tried),
    )
