"""Every injected fault, observed by plain clients (httpx, websockets) as specified, and journalled."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest
import websockets

from hub.simulator import SimConfig, SimHandle
from tests.helpers import wait_until
from tests.simulator.conftest import Frames, fetch_token, open_ws

pytestmark = pytest.mark.anyio


def fault_log(sim: SimHandle) -> list[tuple[str, str]]:
    return [(e.detail["fault"], e.detail["phase"]) for e in sim.journal.of("fault")]


async def test_drop_websockets_closes_every_socket_and_reconnecting_works(sim: SimHandle) -> None:
    token = await fetch_token(sim)
    async with await open_ws(sim, token) as a, await open_ws(sim, token) as b:
        await wait_until(lambda: _sockets(sim, 2), timeout=3, what="both sockets")
        assert sim.faults.drop_websockets() == 2
        for ws in (a, b):
            with pytest.raises(websockets.ConnectionClosed), anyio.fail_after(3):
                await ws.recv()
    async with await open_ws(sim, token) as again:
        sim.engine.place_call("+15550100", "800")
        assert (await Frames(again).next())["event"]["event_type"] == 0
    assert fault_log(sim) == [("drop_websockets", "injected")]


async def _sockets(sim: SimHandle, count: int) -> bool:
    return sim.sim.websocket_count == count


@pytest.mark.parametrize("status", [401, 503])
async def test_refuse_websockets_for_a_number_of_attempts(sim: SimHandle, status: int) -> None:
    token = await fetch_token(sim)
    sim.faults.refuse_websockets(status=status, count=2)
    for _ in range(2):
        with pytest.raises(websockets.InvalidStatus) as info:
            await open_ws(sim, token)
        assert info.value.response.status_code == status
    async with await open_ws(sim, token):
        pass
    assert fault_log(sim) == [("refuse_websockets", "injected")] + [("refuse_websockets", "applied")] * 2


async def test_refuse_websockets_for_a_while(sim: SimHandle) -> None:
    token = await fetch_token(sim)
    sim.faults.refuse_websockets(status=503, seconds=0.3)
    until = sim.clock() + 0.3
    with pytest.raises(websockets.InvalidStatus):
        await open_ws(sim, token)
    await wait_until(lambda: _after(sim, until), timeout=3, what="the refusal to end")
    async with await open_ws(sim, token):
        pass


async def _after(sim: SimHandle, at: float) -> bool:
    return sim.clock() >= at


async def test_a_5xx_burst_of_n_requests(sim: SimHandle, api: httpx.AsyncClient) -> None:
    sim.faults.rest_errors(status=503, count=3)
    statuses = [(await api.get("/callcontrol")).status_code for _ in range(4)]
    assert statuses == [503, 503, 503, 200]
    assert fault_log(sim).count(("rest_errors", "applied")) == 3


async def test_a_429_burst_carries_retry_after(sim: SimHandle, api: httpx.AsyncClient) -> None:
    sim.faults.rest_errors(status=429, count=1, retry_after=2.5)
    r = await api.get("/callcontrol/800/participants")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    assert (await api.get("/callcontrol/800/participants")).status_code == 200


async def test_a_burst_for_t_seconds_on_one_api_only(sim: SimHandle, api: httpx.AsyncClient) -> None:
    sim.faults.rest_errors(status=500, seconds=0.3, paths="/xapi")
    until = sim.clock() + 0.3
    xapi = await api.get("/xapi/v1/Users")
    assert xapi.status_code == 500
    assert set(xapi.json()["error"]) >= {"code", "message"}  # an OData error body on XAPI paths
    assert (await api.get("/callcontrol")).status_code == 200  # other paths are untouched
    assert (await api.get("/xapi/v1/Users")).status_code == 500
    await wait_until(lambda: _after(sim, until), timeout=3, what="the burst to end")
    assert (await api.get("/xapi/v1/Users")).status_code == 200


async def test_added_latency(sim: SimHandle, api: httpx.AsyncClient) -> None:
    sim.faults.latency(delay_s=0.3, count=1, paths="/callcontrol")
    started = time.monotonic()
    assert (await api.get("/callcontrol")).status_code == 200
    assert time.monotonic() - started >= 0.3
    await api.get("/callcontrol")
    assert fault_log(sim) == [("latency", "injected"), ("latency", "applied")]


@pytest.mark.parametrize(
    "sim_config",
    [SimConfig(revoked_token_closes_websocket=False), SimConfig(revoked_token_closes_websocket=True)],
    ids=["socket_stays", "socket_closes"],
)
async def test_token_revocation(sim: SimHandle, api: httpx.AsyncClient, sim_config: SimConfig) -> None:
    async with await open_ws(sim, api.headers["Authorization"][7:]) as ws:
        sim.faults.revoke_tokens()
        assert (await api.get("/callcontrol")).status_code == 401
        if sim_config.revoked_token_closes_websocket:
            with pytest.raises(websockets.ConnectionClosed), anyio.fail_after(3):
                await ws.recv()
        else:
            sim.engine.place_call("+15550100", "800")
            assert (await Frames(ws).next())["event"]["event_type"] == 0
    fresh = await fetch_token(sim)
    r = await api.get("/callcontrol", headers={"Authorization": f"Bearer {fresh}"})
    assert r.status_code == 200


@pytest.mark.parametrize("sim_config", [SimConfig(revoked_token_ends_streams=True)], ids=["ends"])
async def test_token_revocation_ends_audio_streams_when_configured(
    sim: SimHandle, api: httpx.AsyncClient, sim_config: SimConfig
) -> None:
    call = sim.engine.place_call("+15550100", "800")
    pid = sim.route_point_leg(call.callid).id
    async with api.stream("GET", f"/callcontrol/800/participants/{pid}/stream") as response:
        with anyio.fail_after(5):
            async for _ in response.aiter_raw():
                sim.faults.revoke_tokens()
    [closed] = [e for e in sim.journal.of("media") if e.detail["action"] == "stream_closed"]
    assert closed.detail["reason"] == "token_revoked"


async def test_duplicate_events_repeat_a_frame_with_its_sequence(sim: SimHandle) -> None:
    token = await fetch_token(sim)
    async with await open_ws(sim, token) as ws:
        frames = Frames(ws)
        await wait_until(lambda: _sockets(sim, 1), timeout=3, what="the socket")
        sim.faults.duplicate_events(count=1)
        call = sim.engine.place_call("+15550100", "800")
        sim.engine.hangup(call.callid)
        received = [await frames.next() for _ in range(3)]
    assert received[0] == received[1]
    assert [f["sequence"] for f in received] == [1, 1, 2]
    assert [f["event"]["event_type"] for f in received] == [0, 0, 1]


async def test_out_of_order_events(sim: SimHandle) -> None:
    token = await fetch_token(sim)
    async with await open_ws(sim, token) as ws:
        frames = Frames(ws)
        await wait_until(lambda: _sockets(sim, 1), timeout=3, what="the socket")
        sim.faults.reorder_events(count=1, window=2)
        call = sim.engine.place_call("+15550100", "800")
        sim.engine.hangup(call.callid)
        sim.engine.place_call("+15550101", "800")
        received = [await frames.next() for _ in range(3)]
    assert [f["sequence"] for f in received] == [2, 1, 3]
    assert [f["event"]["event_type"] for f in received] == [1, 0, 0]  # the remove arrives before its upsert
    assert ("reorder_events", "applied") in fault_log(sim)


async def test_a_held_frame_is_released_when_the_window_does_not_fill(sim: SimHandle) -> None:
    token = await fetch_token(sim)
    async with await open_ws(sim, token) as ws:
        await wait_until(lambda: _sockets(sim, 1), timeout=3, what="the socket")
        sim.faults.reorder_events(count=1, window=3)
        sim.engine.place_call("+15550100", "800")
        assert (await Frames(ws).next(timeout=3))["sequence"] == 1


async def test_faults_from_the_http_driving_api(sim: SimHandle, api: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=f"{sim.base_url}/_sim") as driver:
        r = await driver.post("/faults/rest_errors", json={"status": 502, "count": 1, "paths": "/callcontrol"})
        assert r.status_code == 200
        assert r.json()["rest_errors"][0]["status"] == 502
        assert (await api.get("/callcontrol")).status_code == 502
        bad = await driver.post("/faults/explode", json={})
        assert bad.status_code == 400 and "unknown fault" in bad.json()["error"]
        worse = await driver.post("/faults/rest_errors", json={"status": 200, "count": 1})
        assert worse.status_code == 400 and "429 or 5xx" in worse.json()["error"]
        await driver.post("/faults/latency", json={"delay_s": 5, "seconds": 60})
        assert (await driver.delete("/faults")).json() == {"rest_errors": [], "latency": []}
        placed = (await driver.post("/calls", json={"from": "+15550100", "to": "800"})).json()
        [leg] = placed["legs"]
        assert (await api.get(f"/callcontrol/800/participants/{leg['id']}")).json()["status"] == "Connected"
        assert (await driver.post(f"/calls/{placed['callid']}/hangup")).status_code == 200
        await driver.post("/presence", json={"number": "101", "profile": "Away"})
        await driver.post("/chat", json={"from_no": "+15550100", "message": "hello"})
        journal = (await driver.get("/journal")).json()
    kinds = {e["kind"] for e in journal}
    assert {"fault", "state", "presence", "chat", "request"} <= kinds
    assert sim.directory.users["101"].profile == "Away"
