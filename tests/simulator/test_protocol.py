"""The simulator against the 3CX V20 reference (shared/3cx-protocol.md §9), driven by plain HTTP and websocket
clients; one test per behaviour, each unverified option both ways."""

from __future__ import annotations

import base64
import itertools
import json
from urllib.parse import quote

import httpx
import pytest
import websockets

from hub.simulator import SimConfig, SimHandle
from tests.simulator.conftest import Frames, fetch_token, open_ws

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------- token endpoint


@pytest.mark.parametrize("multipart", [False, True], ids=["form", "multipart"])
async def test_token_endpoint_accepts_form_and_multipart(sim: SimHandle, multipart: bool) -> None:
    token = await fetch_token(sim, multipart=multipart)
    header, claims, _ = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(claims + "=="))
    assert payload["exp"] - payload["iat"] == sim.config.token_lifetime_s
    assert json.loads(base64.urlsafe_b64decode(header + "=="))["alg"] == "HS256"


async def test_token_response_shape(sim: SimHandle) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        r = await client.post("/connect/token", data={"client_id": "800", "client_secret": "sim-secret",
                                                       "grant_type": "client_credentials"})  # fmt: skip
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600  # seconds, as since 20.0.9


async def test_bad_credentials_get_400_invalid_client(sim: SimHandle) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        r = await client.post("/connect/token", data={"client_id": "800", "client_secret": "wrong",
                                                       "grant_type": "client_credentials"})  # fmt: skip
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_client"


@pytest.mark.parametrize("sim_config", [SimConfig(new_token_revokes_old=True), SimConfig(new_token_revokes_old=False)],
                         ids=["revokes", "keeps"])  # fmt: skip
async def test_a_new_token_revokes_the_old_one_when_configured(sim: SimHandle, sim_config: SimConfig) -> None:
    first = await fetch_token(sim)
    await fetch_token(sim)
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        r = await client.get("/callcontrol", headers={"Authorization": f"Bearer {first}"})
    assert r.status_code == (401 if sim_config.new_token_revokes_old else 200)


# --------------------------------------------------------------------------- REST errors


async def test_rest_without_or_with_a_bad_bearer_is_401(sim: SimHandle) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        assert (await client.get("/callcontrol")).status_code == 401
        assert (await client.get("/callcontrol", headers={"Authorization": "Bearer nope"})).status_code == 401


async def test_a_dn_outside_the_scope_is_403(api: httpx.AsyncClient) -> None:
    r = await api.get("/callcontrol/103/participants")  # 103 exists but is not monitored
    assert r.status_code == 403
    assert "scope" in r.json()["reasontext"]


async def test_unknown_participant_and_device_are_404(api: httpx.AsyncClient) -> None:
    assert (await api.get("/callcontrol/101/participants/999")).status_code == 404
    assert (await api.get(f"/callcontrol/101/devices/{quote('sip:999@x', safe='')}")).status_code == 404


@pytest.mark.parametrize("path", ["/callcontrol/800/participants/1/hold", "/callcontrol/800/record/start",
                                  "/callcontrol/800/participants/1/resume", "/callcontrol/800/hold"])  # fmt: skip
async def test_invented_endpoints_are_404(sim: SimHandle, api: httpx.AsyncClient, path: str) -> None:
    sim.engine.place_call("+15550100", "800")
    r = await api.post(path, json={})
    assert r.status_code == 404


# --------------------------------------------------------------------------- topology and shapes


async def test_callcontrol_lists_the_route_point_and_monitored_extensions(api: httpx.AsyncClient) -> None:
    dns = {d["dn"]: d for d in (await api.get("/callcontrol")).json()}
    assert set(dns) == {"800", "100", "101", "102"}
    assert dns["800"]["type"] == "Wroutepoint"
    assert dns["101"]["type"] == "Wextension"
    device = dns["101"]["devices"][0]
    assert set(device) == {"dn", "device_id", "user_agent"}
    assert device["device_id"].startswith("sip:101@")


async def test_device_ids_are_percent_encoded_in_urls(api: httpx.AsyncClient) -> None:
    device_id = (await api.get("/callcontrol/101/devices")).json()[0]["device_id"]
    r = await api.get(f"/callcontrol/101/devices/{quote(device_id, safe='')}")
    assert r.status_code == 200
    assert r.json()["device_id"] == device_id


CAPTURED = {
    "id": 6, "status": "Connected", "dn": "209", "party_caller_name": "Naif saleh", "party_dn": "101",
    "party_caller_id": "101", "party_did": "", "device_id": "sip:209@127.0.0.1:5483", "party_dn_type": "Wextension",
    "direct_control": False, "originated_by_dn": "", "originated_by_type": "None", "referred_by_dn": "",
    "referred_by_type": "None", "on_behalf_of_dn": "", "on_behalf_of_type": "None", "callid": 2, "legid": 2,
}  # fmt: skip


async def test_the_captured_participant_comes_back_verbatim() -> None:
    """The reference's captured GET /callcontrol/209/participants item, reproduced by configuration and driving."""
    from hub.simulator import ExtensionConfig, running_simulator

    config = SimConfig(
        client_id="800",
        extensions=(
            ExtensionConfig(dn="209", name="", device_id="sip:209@127.0.0.1:5483"),
            ExtensionConfig(dn="101", name="Naif saleh"),
        ),
        first_participant_id=5,  # 101's own Dialing leg takes 5, the captured leg on 209 is 6
        first_callid=2,
        first_legid=1,
    )
    async with running_simulator(config) as sim:
        call = sim.engine.place_call("101", "209")
        leg = next(leg for leg in sim.engine.legs_of(call.callid) if leg.dn == "209")
        sim.engine.answer(leg.id)
        token = await fetch_token(sim)
        async with httpx.AsyncClient(base_url=sim.base_url, headers={"Authorization": f"Bearer {token}"}) as c:
            items = (await c.get("/callcontrol/209/participants")).json()
    assert items == [CAPTURED]
    assert list(items[0]) == list(CAPTURED)  # the field order too


# --------------------------------------------------------------------------- the status machine


async def test_outbound_from_an_extension_dials_then_connects(sim: SimHandle, api: httpx.AsyncClient) -> None:
    r = await api.post("/callcontrol/101/makecall", json={"destination": "+15550100"})
    result = r.json()["result"]
    assert result["dn"] == "101"
    assert result["status"] == "Dialing"
    sim.engine.answer_remote(result["callid"])
    again = (await api.get(f"/callcontrol/101/participants/{result['id']}")).json()
    assert again["status"] == "Connected"


async def test_makecall_by_device_returns_the_initiators_own_leg(api: httpx.AsyncClient) -> None:
    device = (await api.get("/callcontrol/101/devices")).json()[0]["device_id"]
    r = await api.post(f"/callcontrol/101/devices/{quote(device, safe='')}/makecall", json={"destination": "102"})
    assert r.status_code == 200
    assert r.json()["result"]["dn"] == "101"
    ringing = (await api.get("/callcontrol/102/participants")).json()
    assert [p["status"] for p in ringing] == ["Ringing"]


async def test_makecall_on_a_stale_device_is_404(api: httpx.AsyncClient) -> None:
    r = await api.post(f"/callcontrol/101/devices/{quote('sip:101@10.0.0.9:5060', safe='')}/makecall",
                       json={"destination": "102"})  # fmt: skip
    assert r.status_code == 404


async def test_inbound_to_an_extension_rings_then_connects_and_hangup_removes(
    sim: SimHandle, api: httpx.AsyncClient
) -> None:
    call = sim.engine.place_call("+15550100", "101")
    [leg] = (await api.get("/callcontrol/101/participants")).json()
    assert leg["status"] == "Ringing"
    assert leg["party_caller_id"] == "+15550100"
    assert leg["party_dn_type"] == "Wexternalline"
    sim.engine.answer(leg["id"])
    assert (await api.get(f"/callcontrol/101/participants/{leg['id']}")).json()["status"] == "Connected"
    sim.engine.hangup(call.callid)
    assert (await api.get(f"/callcontrol/101/participants/{leg['id']}")).status_code == 404
    assert (await api.get("/callcontrol/101/participants")).json() == []


@pytest.mark.parametrize(
    "sim_config",
    [SimConfig(route_point_inbound_connected=True), SimConfig(route_point_inbound_connected=False)],
    ids=["connected", "ringing"],
)
async def test_route_point_inbound_legs_arrive_connected_when_configured(
    sim: SimHandle, api: httpx.AsyncClient, sim_config: SimConfig
) -> None:
    sim.engine.place_call("+15550100", "800")
    [leg] = (await api.get("/callcontrol/800/participants")).json()
    assert leg["status"] == ("Connected" if sim_config.route_point_inbound_connected else "Ringing")


# --------------------------------------------------------------------------- actions


async def test_answer_needs_direct_control_or_the_route_point(sim: SimHandle, api: httpx.AsyncClient) -> None:
    sim.engine.place_call("+15550100", "101")  # 101 has no uaCSTA device
    [plain] = (await api.get("/callcontrol/101/participants")).json()
    r = await api.post(f"/callcontrol/101/participants/{plain['id']}/answer", json={})
    assert r.status_code == 422
    sim.engine.place_call("+15550101", "100")  # 100 is direct_control
    [cst] = (await api.get("/callcontrol/100/participants")).json()
    r = await api.post(f"/callcontrol/100/participants/{cst['id']}/answer", json={})
    assert r.status_code == 200
    assert r.json()["result"]["status"] == "Connected"


async def test_divert_only_while_ringing(sim: SimHandle, api: httpx.AsyncClient) -> None:
    sim.engine.place_call("+15550100", "101")
    [leg] = (await api.get("/callcontrol/101/participants")).json()
    r = await api.post(
        f"/callcontrol/101/participants/{leg['id']}/divert", json={"destination": "102", "reason": "NoAnswer"}
    )
    assert r.status_code == 200
    assert (await api.get("/callcontrol/101/participants")).json() == []
    [moved] = (await api.get("/callcontrol/102/participants")).json()
    assert moved["status"] == "Ringing"
    assert moved["party_caller_id"] == "+15550100"
    sim.engine.answer(moved["id"])
    r = await api.post(f"/callcontrol/102/participants/{moved['id']}/divert", json={"destination": "101"})
    assert r.status_code == 422


async def test_transferto_only_when_connected(sim: SimHandle, api: httpx.AsyncClient) -> None:
    sim.engine.place_call("+15550100", "101")
    [leg] = (await api.get("/callcontrol/101/participants")).json()
    r = await api.post(f"/callcontrol/101/participants/{leg['id']}/transferto", json={"destination": "102"})
    assert r.status_code == 422
    sim.engine.answer(leg["id"])
    r = await api.post(f"/callcontrol/101/participants/{leg['id']}/transferto", json={"destination": "102"})
    assert r.status_code == 200
    [moved] = (await api.get("/callcontrol/102/participants")).json()
    assert moved["referred_by_dn"] == "101"


async def test_routeto_works_ringing_or_connected_and_keeps_the_leg_until_delivered(
    sim: SimHandle, api: httpx.AsyncClient
) -> None:
    sim.engine.place_call("+15550100", "101")
    [leg] = (await api.get("/callcontrol/101/participants")).json()
    r = await api.post(f"/callcontrol/101/participants/{leg['id']}/routeto", json={"destination": "102"})
    assert r.status_code == 200
    assert len((await api.get("/callcontrol/101/participants")).json()) == 1  # still there
    [alt] = (await api.get("/callcontrol/102/participants")).json()
    sim.engine.answer(alt["id"])
    assert (await api.get("/callcontrol/101/participants")).json() == []


async def test_drop_removes_the_call(sim: SimHandle, api: httpx.AsyncClient) -> None:
    sim.engine.place_call("+15550100", "800")
    [leg] = (await api.get("/callcontrol/800/participants")).json()
    r = await api.post(f"/callcontrol/800/participants/{leg['id']}/drop", json={})
    assert r.status_code == 200
    assert (await api.get("/callcontrol/800/participants")).json() == []


async def test_attach_participant_data(sim: SimHandle, api: httpx.AsyncClient) -> None:
    call = sim.engine.place_call("+15550100", "800")
    [leg] = (await api.get("/callcontrol/800/participants")).json()
    r = await api.post(f"/callcontrol/800/participants/{leg['id']}/attach_participant_data",
                       json={"attacheddata": {"summary": "wants billing"}})  # fmt: skip
    assert r.status_code == 200
    assert sim.engine.calls[call.callid].attached == {"summary": "wants billing"}


@pytest.mark.parametrize("sim_config", [SimConfig(finalstatus="string"), SimConfig(finalstatus="number")],
                         ids=["string", "number"])  # fmt: skip
async def test_finalstatus_as_string_or_number(sim: SimHandle, api: httpx.AsyncClient, sim_config: SimConfig) -> None:
    r = await api.post("/callcontrol/101/makecall", json={"destination": "102"})
    assert r.json()["finalstatus"] == ("Success" if sim_config.finalstatus == "string" else 1)


@pytest.mark.parametrize("sim_config", [SimConfig(actions_need_json="reject"), SimConfig(actions_need_json="ignore")],
                         ids=["reject", "ignore"])  # fmt: skip
async def test_an_action_without_a_json_body(sim: SimHandle, api: httpx.AsyncClient, sim_config: SimConfig) -> None:
    sim.engine.place_call("+15550100", "800")
    [leg] = (await api.get("/callcontrol/800/participants")).json()
    r = await api.post(f"/callcontrol/800/participants/{leg['id']}/drop", content=b"")
    if sim_config.actions_need_json == "reject":
        assert r.status_code == 415
    else:
        assert r.status_code == 200
    assert len((await api.get("/callcontrol/800/participants")).json()) == 1  # the drop never happened


async def test_park_is_a_transfer_to_an_orbit_and_resume_dials_the_pickup_code(
    sim: SimHandle, api: httpx.AsyncClient
) -> None:
    call = sim.engine.place_call("+15550100", "101")
    [leg] = (await api.get("/callcontrol/101/participants")).json()
    sim.engine.answer(leg["id"])
    r = await api.post(f"/callcontrol/101/participants/{leg['id']}/transferto", json={"destination": "SP1"})
    assert r.status_code == 200
    assert sim.engine.calls[call.callid].parked_at == "SP1"
    assert (await api.get("/callcontrol/101/participants")).json() == []
    r = await api.post("/callcontrol/102/makecall", json={"destination": "*4SP1"})
    assert r.status_code == 200
    [picked] = (await api.get("/callcontrol/102/participants")).json()
    assert picked["status"] == "Connected"
    assert picked["party_caller_id"] == "+15550100"
    assert picked["callid"] == call.callid


# --------------------------------------------------------------------------- websocket


async def test_websocket_upgrade_without_bearer_is_401(sim: SimHandle) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(sim.ws_url)
    assert info.value.response.status_code == 401


async def test_websocket_events_upsert_remove_and_dtmf(sim: SimHandle) -> None:
    token = await fetch_token(sim)
    async with await open_ws(sim, token) as ws:
        frames = Frames(ws)
        call = sim.engine.place_call("+15550100", "800")
        upsert = await frames.next()
        leg = sim.engine.legs_of(call.callid)[0]
        assert upsert == {"sequence": 1, "event": {"event_type": 0, "entity": f"/callcontrol/800/participants/{leg.id}",
                                                   "attached_data": None}}  # fmt: skip
        sim.engine.send_dtmf(call.callid, "42#")
        dtmf = await frames.next()
        assert dtmf["event"]["event_type"] == 2
        assert dtmf["event"]["attached_data"] == {"dtmf_input": "42#"}
        sim.engine.hangup(call.callid)
        remove = await frames.next()
        assert remove["event"]["event_type"] == 1
        assert remove["sequence"] == 3


async def test_dtmf_is_reported_only_for_route_point_legs(sim: SimHandle) -> None:
    token = await fetch_token(sim)
    async with await open_ws(sim, token) as ws:
        frames = Frames(ws)
        call = sim.engine.place_call("+15550100", "101")
        await frames.next()  # the ringing upsert
        sim.engine.send_dtmf(call.callid, "5")
        sim.engine.hangup(call.callid)
        assert (await frames.next())["event"]["event_type"] == 1  # the remove, with no dtmf before it


async def test_unmonitored_extensions_send_no_events(sim: SimHandle) -> None:
    token = await fetch_token(sim)
    async with await open_ws(sim, token) as ws:
        frames = Frames(ws)
        sim.engine.place_call("+15550100", "103")  # not monitored
        sim.engine.place_call("+15550100", "101")
        frame = await frames.next()
        assert frame["event"]["entity"].startswith("/callcontrol/101/")


@pytest.mark.parametrize(
    "sim_config",
    [SimConfig(sequence="per_connection"), SimConfig(sequence="global"), SimConfig(sequence="gaps", seed=7)],
    ids=["per_connection", "global", "gaps"],
)
async def test_sequence_options(sim: SimHandle, sim_config: SimConfig) -> None:
    token = await fetch_token(sim)
    async with await open_ws(sim, token) as a, await open_ws(sim, token) as b:
        fa, fb = Frames(a), Frames(b)
        for i in range(5):
            sim.engine.place_call(f"+1555010{i}", "800")
        seq_a = [(await fa.next())["sequence"] for _ in range(5)]
        seq_b = [(await fb.next())["sequence"] for _ in range(5)]
    if sim_config.sequence == "per_connection":
        assert seq_a == seq_b == [1, 2, 3, 4, 5]
    elif sim_config.sequence == "global":
        assert sorted(seq_a + seq_b) == list(range(1, 11))
    else:
        steps = [later - earlier for earlier, later in itertools.pairwise(seq_a + seq_b)]
        assert all(step != 0 for step in steps)
        assert any(step > 1 for step in steps)  # seeded: the same gaps every run


@pytest.mark.parametrize("sim_config", [SimConfig(repeat_upserts_s=0.05), SimConfig(repeat_upserts_s=None)],
                         ids=["repeats", "no_repeats"])  # fmt: skip
async def test_repeated_upserts(sim: SimHandle, sim_config: SimConfig) -> None:
    token = await fetch_token(sim)
    async with await open_ws(sim, token) as ws:
        frames = Frames(ws)
        sim.engine.place_call("+15550100", "800")
        first = await frames.next()
        if sim_config.repeat_upserts_s:
            again = await frames.next()
            assert again["event"]["entity"] == first["event"]["entity"]
            assert again["event"]["event_type"] == 0
        else:
            with pytest.raises(TimeoutError):
                await frames.next(timeout=0.3)  # nothing repeats the upsert


# --------------------------------------------------------------------------- ground truth


async def test_the_journal_records_state_changes_and_requests(sim: SimHandle, api: httpx.AsyncClient) -> None:
    call = sim.engine.place_call("+15550100", "101")
    [leg] = (await api.get("/callcontrol/101/participants")).json()
    sim.engine.answer(leg["id"])
    await api.post(f"/callcontrol/101/participants/{leg['id']}/drop", json={})
    assert sim.journal.transitions(call.callid) == [
        ("101", leg["id"], None, "Ringing"),
        ("101", leg["id"], "Ringing", "Connected"),
        ("101", leg["id"], "Connected", None),
    ]
    requests = [(e.detail["method"], e.detail["path"], e.detail["status"]) for e in sim.journal.of("request")]
    assert ("GET", "/callcontrol/101/participants", 200) in requests
    assert ("POST", f"/callcontrol/101/participants/{leg['id']}/drop", 200) in requests
    indexes = [e.index for e in sim.journal.entries]
    assert indexes == list(range(len(indexes)))


def test_masterlinc_sim_runs_as_a_process_and_stops_on_sigint(tmp_path: object) -> None:
    import signal
    import subprocess
    import sys

    from hub.natsd import free_port

    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "sim", "--port", str(port), "--finalstatus", "number"],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(f"3CX simulator at http://127.0.0.1:{port}")
        form = {"client_id": "800", "client_secret": "sim-secret", "grant_type": "client_credentials"}
        r = httpx.post(f"http://127.0.0.1:{port}/connect/token", data=form)
        assert r.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0


def test_a_bad_simulator_config_is_explained(tmp_path: object) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "hub.cli", "sim", "--sequence", "sideways"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 2
    assert "sequence" in out.stderr
    assert "Traceback" not in out.stderr


async def test_a_queue_rings_every_member_and_the_first_answer_wins(sim: SimHandle, api: httpx.AsyncClient) -> None:
    call = sim.engine.place_call("+15550100", "8000")
    ringing = {dn: (await api.get(f"/callcontrol/{dn}/participants")).json() for dn in ("101", "102")}
    assert [p["status"] for p in ringing["101"]] == ["Ringing"]
    assert ringing["102"][0]["on_behalf_of_dn"] == "8000"
    assert ringing["102"][0]["on_behalf_of_type"] == "Wqueue"
    sim.engine.answer(ringing["102"][0]["id"])
    assert (await api.get("/callcontrol/101/participants")).json() == []
    [won] = (await api.get("/callcontrol/102/participants")).json()
    assert won["status"] == "Connected"
    assert won["callid"] == call.callid


@pytest.mark.parametrize("sim_config", [SimConfig(park_orbits=("P701", "P702"), pickup_code="#9")], ids=["custom"])
async def test_park_orbits_and_pickup_code_are_configurable(
    sim: SimHandle, api: httpx.AsyncClient, sim_config: SimConfig
) -> None:
    call = sim.engine.place_call("+15550100", "101")
    [leg] = (await api.get("/callcontrol/101/participants")).json()
    sim.engine.answer(leg["id"])
    assert (
        await api.post(f"/callcontrol/101/participants/{leg['id']}/transferto", json={"destination": "P702"})
    ).status_code == 200
    assert sim.engine.calls[call.callid].parked_at == "P702"
    await api.post("/callcontrol/102/makecall", json={"destination": "*4P702"})  # the default code does nothing here
    assert sim.engine.calls[call.callid].parked_at == "P702"
    await api.post("/callcontrol/102/makecall", json={"destination": "#9P702"})
    [picked] = [p for p in (await api.get("/callcontrol/102/participants")).json() if p["callid"] == call.callid]
    assert picked["status"] == "Connected"
