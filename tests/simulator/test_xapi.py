"""The XAPI subset (reference §5) against its documented shapes, with a plain httpx client, including error cases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import pytest
import websockets

from hub.simulator import ExtensionConfig, SimConfig, SimHandle

pytestmark = pytest.mark.anyio

# CallHistoryView fields exactly as the reference (§5.5) lists them
CALL_HISTORY_FIELDS = {
    "SegmentId", "SegmentStartTime", "SegmentEndTime", "SegmentType", "SegmentActionId",
    "SrcId", "SrcDn", "SrcDnType", "SrcCallerNumber", "SrcDisplayName", "SrcExtendedDisplayName", "SrcExternal",
    "SrcInternal", "SrcParticipantId", "SrcRecId",
    "DstId", "DstDn", "DstDnType", "DstCallerNumber", "DstDisplayName", "DstExtendedDisplayName", "DstExternal",
    "DstInternal", "DstParticipantId", "DstRecId",
    "CallAnswered", "CallTime",
}  # fmt: skip
CALL_LOG_ARGS = {
    "periodFrom": "2020-01-01T00:00:00.000Z", "periodTo": "2100-01-01T00:00:00Z", "sourceType": "0",
    "sourceFilter": "''", "destinationType": "0", "destinationFilter": "''", "callsType": "0",
    "callTimeFilterType": "0", "callTimeFilterFrom": "'0:00:0'", "callTimeFilterTo": "'0:00:0'", "hidePcalls": "true",
}  # fmt: skip


def call_log_path(**changes: str | None) -> str:
    args = {**CALL_LOG_ARGS, **changes}
    inline = ",".join(f"{k}={v}" for k, v in args.items() if v is not None)
    return f"/ReportCallLogData/Pbx.GetCallLogData({quote(inline, safe='=,')})"


@pytest.fixture
async def xapi(sim: SimHandle, api: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """The same token as ``api`` (3CX keeps one active token per client)."""
    async with httpx.AsyncClient(base_url=sim.xapi_url, headers={"Authorization": api.headers["Authorization"]}) as c:
        yield c


def odata_error(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    error: dict[str, object] = body["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
    return error


def answered_call(sim: SimHandle, caller: str = "+15550100", dn: str = "101") -> int:
    call = sim.engine.place_call(caller, dn, caller_name="Dana Caller")
    [leg] = [leg for leg in sim.engine.legs_of(call.callid) if leg.dn == dn]
    sim.engine.answer(leg.id)
    return call.callid


# --------------------------------------------------------------------------- switches and auth


async def test_xapi_needs_a_bearer_token(sim: SimHandle) -> None:
    async with httpx.AsyncClient(base_url=sim.xapi_url) as anonymous:
        odata_error(await anonymous.get("/Users"), 401)


@pytest.mark.parametrize("sim_config", [SimConfig(xapi_enabled=False)], ids=["xapi_off"])
async def test_xapi_switched_off_is_403_and_call_control_still_works(
    sim: SimHandle, xapi: httpx.AsyncClient, api: httpx.AsyncClient, sim_config: SimConfig
) -> None:
    odata_error(await xapi.get("/Users"), 403)
    assert (await api.get("/callcontrol")).status_code == 200


@pytest.mark.parametrize("sim_config", [SimConfig(call_control_enabled=False)], ids=["cc_off"])
async def test_call_control_switched_off_is_403_on_rest_and_websocket(
    sim: SimHandle, xapi: httpx.AsyncClient, api: httpx.AsyncClient, sim_config: SimConfig
) -> None:
    assert (await api.get("/callcontrol")).status_code == 403
    assert (await api.get("/callcontrol/800/participants")).status_code == 403
    token = api.headers["Authorization"]
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(sim.ws_url, additional_headers={"Authorization": token})
    assert info.value.response.status_code == 403
    assert (await xapi.get("/Users")).status_code == 200


async def test_unknown_segments_are_odata_404s(xapi: httpx.AsyncClient) -> None:
    odata_error(await xapi.get("/Trunks"), 404)
    odata_error(await xapi.get("/Users(2)/Nonsense"), 404)
    odata_error(await xapi.get("/Users(999)"), 404)


# --------------------------------------------------------------------------- users and presence


@pytest.mark.parametrize(
    "sim_config",
    [SimConfig(extensions=(
        ExtensionConfig(dn="101", name="Alice Smith", email="alice@example.com", user_id=7),
        ExtensionConfig(dn="102", name="Pat O'Brien", registered=False, queue_status="LoggedOut"),
    ))],
    ids=["users"],
)  # fmt: skip
async def test_users_carry_presence_fields_and_both_keys(xapi: httpx.AsyncClient, sim_config: SimConfig) -> None:
    body = (await xapi.get("/Users")).json()
    assert set(body) == {"value"}
    alice = next(u for u in body["value"] if u["Number"] == "101")
    assert alice["Id"] == 7
    assert (alice["FirstName"], alice["LastName"], alice["EmailAddress"]) == ("Alice", "Smith", "alice@example.com")
    assert (alice["IsRegistered"], alice["CurrentProfileName"], alice["QueueStatus"]) == (True, "Available", "LoggedIn")
    assert (await xapi.get("/Users(7)")).json() == alice
    assert (await xapi.get("/Users(Number='101')")).json() == alice
    selected = (await xapi.get("/Users(Number='102')", params={"$select": "Number,IsRegistered,QueueStatus"})).json()
    assert selected == {"Number": "102", "IsRegistered": False, "QueueStatus": "LoggedOut"}
    escaped = await xapi.get("/Users", params={"$filter": "DisplayName eq 'Pat O''Brien'", "$select": "Number"})
    assert escaped.json() == {"value": [{"Number": "102"}]}


async def test_forwarding_profiles_list_the_names_patch_accepts(sim: SimHandle, xapi: httpx.AsyncClient) -> None:
    user = (await xapi.get("/Users(Number='101')")).json()
    profiles = (await xapi.get(f"/Users({user['Id']})/ForwardingProfiles")).json()["value"]
    assert [p["Name"] for p in profiles] == list(sim.config.profile_names)
    assert {"Id", "Name", "CustomName", "AvailableRoute", "AwayRoute", "NoAnswerTimeout"} <= set(profiles[0])
    names = await xapi.get(f"/Users({user['Id']})/ForwardingProfiles", params={"$select": "Name", "$top": "2"})
    assert names.json() == {"value": [{"Name": "Available"}, {"Name": "Away"}]}


async def test_patch_current_profile_name_and_queue_status(sim: SimHandle, xapi: httpx.AsyncClient) -> None:
    user = (await xapi.get("/Users(Number='101')")).json()
    r = await xapi.patch(f"/Users({user['Id']})", json={"CurrentProfileName": "Out of office"})
    assert r.status_code == 204 and r.content == b""
    r = await xapi.patch(f"/Users({user['Id']})", json={"QueueStatus": "LoggedOut"})
    assert r.status_code == 204
    again = (await xapi.get(f"/Users({user['Id']})")).json()
    assert (again["CurrentProfileName"], again["QueueStatus"]) == ("Out of office", "LoggedOut")
    changes = [(e.dn, e.detail["field"], e.detail["old"], e.detail["new"], e.detail["by"])
               for e in sim.journal.of("presence")]  # fmt: skip
    assert changes == [
        ("101", "CurrentProfileName", "Available", "Out of office", "xapi"),
        ("101", "QueueStatus", "LoggedIn", "LoggedOut", "xapi"),
    ]


@pytest.mark.parametrize(
    "sim_config", [SimConfig(strict_profile_names=True), SimConfig(strict_profile_names=False)], ids=["strict", "any"]
)
async def test_patch_with_an_unknown_profile_name(
    sim: SimHandle, xapi: httpx.AsyncClient, sim_config: SimConfig
) -> None:
    r = await xapi.patch("/Users(Number='101')", json={"CurrentProfileName": "Lunch"})
    if sim_config.strict_profile_names:
        error = odata_error(r, 400)
        assert "Available" in str(error["message"])  # says which names work
        assert sim.directory.users["101"].profile == "Available"
    else:
        assert r.status_code == 204
        assert sim.directory.users["101"].profile == "Lunch"


@pytest.mark.parametrize(
    ("body", "target"),
    [({"Number": "999"}, "Number"), ({"Nickname": "x"}, "Nickname"), ({"QueueStatus": "Busy"}, "QueueStatus"),
     ({"QueueStatus": 1}, "QueueStatus")],
    ids=["number", "unknown", "bad_enum", "not_string"],
)  # fmt: skip
async def test_patch_errors_name_the_property(
    sim: SimHandle, xapi: httpx.AsyncClient, body: dict[str, object], target: str
) -> None:
    error = odata_error(await xapi.patch("/Users(Number='101')", json=body), 400)
    assert error["target"] == target
    assert sim.journal.of("presence") == []


async def test_presence_driving_api_is_journalled_and_visible(sim: SimHandle, xapi: httpx.AsyncClient) -> None:
    sim.set_presence("102", profile="Away", registered=False)
    r = await xapi.get("/Users", params={"$filter": "IsRegistered eq false and CurrentProfileName eq 'Away'"})
    assert [u["Number"] for u in r.json()["value"]] == ["102"]
    assert [(e.detail["field"], e.detail["by"]) for e in sim.journal.of("presence")] == [
        ("CurrentProfileName", "driver"),
        ("IsRegistered", "driver"),
    ]


# --------------------------------------------------------------------------- calls


async def test_active_calls_follow_the_engine(sim: SimHandle, xapi: httpx.AsyncClient) -> None:
    ringing = sim.engine.place_call("+15550100", "102")
    answered_call(sim, "+15550111", "101")
    rows = (await xapi.get("/ActiveCalls", params={"$orderby": "Id"})).json()["value"]
    assert [set(r) for r in rows] == [
        {"Id", "Caller", "Callee", "Status", "EstablishedAt", "LastChangeStatus", "ServerNow"}
    ] * 2
    assert [(r["Caller"], r["Callee"], r["Status"]) for r in rows] == [
        ("+15550100", "102", "Ringing"),
        ("+15550111", "101", "Connected"),
    ]
    only = (await xapi.get("/ActiveCalls", params={"$filter": "Status eq 'Ringing'"})).json()["value"]
    assert [r["Id"] for r in only] == [ringing.callid]
    sim.engine.hangup(ringing.callid)
    assert len((await xapi.get("/ActiveCalls")).json()["value"]) == 1


async def test_call_history_has_one_row_per_segment_as_calls_end(sim: SimHandle, xapi: httpx.AsyncClient) -> None:
    callid = answered_call(sim)
    assert (await xapi.get("/CallHistoryView")).json() == {"value": []}  # filled as calls end
    [leg] = sim.engine.legs_of(callid)
    sim.engine.transfer(leg.id, "102")
    [moved] = sim.engine.legs_of(callid)
    sim.engine.answer(moved.id)
    sim.engine.hangup(callid)
    rows = (await xapi.get("/CallHistoryView", params={"$orderby": "SegmentId"})).json()["value"]
    assert len(rows) == 2
    assert all(set(row) == CALL_HISTORY_FIELDS for row in rows)
    first, second = rows
    assert (first["SrcCallerNumber"], first["SrcExternal"], first["DstDn"], first["DstInternal"]) == (
        "+15550100", True, "101", True)  # fmt: skip
    assert first["SrcDisplayName"] == "Dana Caller"
    assert first["DstParticipantId"] == leg.id and second["DstParticipantId"] == moved.id
    assert (first["CallAnswered"], second["DstDn"], second["CallAnswered"]) == (True, "102", True)
    assert first["CallTime"].startswith("PT") and first["CallTime"].endswith("S")
    assert first["SegmentStartTime"].endswith("Z")
    assert first["SegmentEndTime"] <= second["SegmentEndTime"]


async def test_call_history_odata_options(sim: SimHandle, xapi: httpx.AsyncClient) -> None:
    for n in range(3):
        sim.engine.hangup(answered_call(sim, f"+1555010{n}"))
    today = sim.directory.call_history[0]["SegmentStartTime"][:10]
    params = {
        "$filter": f"date(SegmentStartTime) ge {today} and date(SegmentStartTime) le {today}",
        "$count": "true", "$orderby": "SegmentStartTime desc,SegmentId desc", "$top": "1", "$skip": "1",
        "$select": "SegmentId,SrcCallerNumber",
    }  # fmt: skip
    body = (await xapi.get("/CallHistoryView", params=params)).json()
    assert body == {"@odata.count": 3, "value": [{"SegmentId": 2, "SrcCallerNumber": "+15550101"}]}
    later = await xapi.get("/CallHistoryView", params={"$filter": "SegmentStartTime gt 2100-01-01T00:00:00Z"})
    assert later.json() == {"value": []}


@pytest.mark.parametrize("sim_config", [SimConfig(xapi_role="system_admin")], ids=["admin"])
async def test_call_history_needs_the_system_owner_role(xapi: httpx.AsyncClient, sim_config: SimConfig) -> None:
    odata_error(await xapi.get("/CallHistoryView"), 403)
    assert (await xapi.get("/Users")).status_code == 200


async def test_report_call_log_data_with_all_eleven_parameters(sim: SimHandle, xapi: httpx.AsyncClient) -> None:
    sim.engine.hangup(answered_call(sim, "+15550100", "101"))
    sim.engine.hangup(sim.engine.place_call("+15550199", "102").callid)  # rang, never answered
    rows = (await xapi.get(call_log_path(), params={"$orderby": "SegmentId"})).json()["value"]
    assert len(rows) == 2
    assert {"CdrId", "CallId", "SegmentId", "StartTime", "SourceDn", "SourceCallerId", "DestinationDn",
            "RingingDuration", "TalkingDuration", "Answered", "Direction", "Recordings"} <= set(rows[0])  # fmt: skip
    assert [(r["SourceCallerId"], r["DestinationDn"], r["Answered"], r["Direction"]) for r in rows] == [
        ("+15550100", "101", True, "Inbound"),
        ("+15550199", "102", False, "Inbound"),
    ]
    answered = (await xapi.get(call_log_path(callsType="1"))).json()["value"]
    assert [r["DestinationDn"] for r in answered] == ["101"]
    by_source = (await xapi.get(call_log_path(sourceFilter="'0199'"))).json()["value"]
    assert [r["DestinationDn"] for r in by_source] == ["102"]
    none = (await xapi.get(call_log_path(periodTo="2021-01-01T00:00:00Z"))).json()["value"]
    assert none == []


@pytest.mark.parametrize(
    ("changes", "status"),
    [({"hidePcalls": None}, 404), ({"periodFrom": None, "periodTo": None}, 404), ({"extra": "1"}, 404),
     ({"sourceFilter": "abc"}, 404), ({"callsType": ""}, 404),
     ({"periodFrom": "yesterday"}, 500), ({"sourceType": "'x'"}, 500), ({"hidePcalls": "maybe"}, 500)],
    ids=["missing_one", "missing_two", "unknown", "unquoted_string", "empty", "bad_datetime", "bad_int", "bad_bool"],
)  # fmt: skip
async def test_report_call_log_data_rejects_bad_parameters(
    xapi: httpx.AsyncClient, changes: dict[str, str | None], status: int
) -> None:
    error = odata_error(await xapi.get(call_log_path(**changes)), status)
    assert "GetCallLogData" in str(error["message"])


@pytest.mark.parametrize(
    "sim_config",
    [SimConfig(extensions=(ExtensionConfig(dn="101", name="Alice", record_calls=True), ExtensionConfig(dn="102")))],
    ids=["recorded"],
)
async def test_recordings_of_recorded_extensions(
    sim: SimHandle, xapi: httpx.AsyncClient, sim_config: SimConfig
) -> None:
    sim.engine.hangup(answered_call(sim, "+15550100", "101"))
    sim.engine.hangup(answered_call(sim, "+15550100", "102"))  # 102 does not record
    [rec] = (await xapi.get("/Recordings")).json()["value"]
    assert (rec["FromCallerNumber"], rec["ToDn"], rec["CallType"]) == ("+15550100", "101", "InboundExternal")
    assert rec["RecordingUrl"].endswith(f"Pbx.DownloadRecording(recId={rec['Id']})")
    [segment] = [r for r in (await xapi.get("/CallHistoryView")).json()["value"] if r["DstDn"] == "101"]
    assert segment["DstRecId"] == rec["Id"]


async def test_chat_history_from_the_driving_api(sim: SimHandle, xapi: httpx.AsyncClient) -> None:
    sim.add_chat_message("+15550100", "Is the shop open?", from_name="Dana", provider_type="SMS", queue_number="8000")
    sim.add_chat_message("+15550100", "It's urgent", from_name="Dana", conversation_id=1)
    rows = (await xapi.get("/ChatHistoryView", params={"$filter": "contains(Message,'urgent')"})).json()["value"]
    assert [r["Message"] for r in rows] == ["It's urgent"]
    everything = (await xapi.get("/ChatHistoryView", params={"$count": "true"})).json()
    assert everything["@odata.count"] == 2
    assert {"ConversationId", "ChatName", "FromName", "FromNo", "IsExternal", "Message", "TimeSent", "ProviderName",
            "ProviderType", "QueueNumber", "Source"} <= set(everything["value"][0])  # fmt: skip
    assert [e.detail["message"] for e in sim.journal.of("chat")] == ["Is the shop open?", "It's urgent"]


async def test_parkings_and_their_number_key(sim: SimHandle, xapi: httpx.AsyncClient) -> None:
    rows = (await xapi.get("/Parkings")).json()["value"]
    assert [r["Number"] for r in rows] == list(sim.config.park_orbits)
    one = (await xapi.get("/Parkings(Number='SP1')")).json()
    assert one["Number"] == "SP1" and (await xapi.get(f"/Parkings({one['Id']})")).json() == one
    odata_error(await xapi.get("/Parkings(Number='SP99')"), 404)


# --------------------------------------------------------------------------- OData errors


@pytest.mark.parametrize(
    "params",
    [{"$filter": "Number eq"}, {"$filter": "Number eq '101"}, {"$filter": "Nope eq 1"}, {"$filter": "Number eq 101"},
     {"$filter": "Number"}, {"$orderby": "Number sideways"}, {"$select": "Number,Nope"}, {"$top": "-1"},
     {"$skip": "x"}, {"$count": "maybe"}, {"$expand": "Groups"}, {"$format": "xml"}],
    ids=["truncated", "unterminated", "unknown_property", "type_mismatch", "not_boolean", "bad_orderby",
         "bad_select", "negative_top", "bad_skip", "bad_count", "expand", "unknown_option"],
)  # fmt: skip
async def test_bad_query_options_are_400_odata_errors(xapi: httpx.AsyncClient, params: dict[str, str]) -> None:
    odata_error(await xapi.get("/Users", params=params), 400)
