"""Every tool and resource end to end: MCP client -> facade -> bus -> real worker -> recording gateway, both eras."""

from __future__ import annotations

import json
import uuid
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextResourceContents
from nats.aio.client import Client as Nats

from hub.mcp.backend import Backend
from hub.mcp.server import ALL_TOOLS, READ_TOOLS, FacadeConfig, build_server
from hub.mcp.tokens import Principal
from schemas import commands as c
from schemas import events as e
from schemas.common import LegRef, utcnow
from schemas.identity import new_call_id
from tests.mcp.support import (
    RecordingGateway,
    new_pbx,
    publish_event,
    publish_leg,
    running_facade,
    running_worker,
    wait_for_leg,
)

pytestmark = [pytest.mark.nats, pytest.mark.anyio]

MODES = ["auto", "legacy"]


def structured(result: CallToolResult) -> dict[str, Any]:
    body: dict[str, Any] | None = result.structured_content
    assert body is not None, result.content
    return body


async def test_the_full_profile_lists_every_tool_with_schemas_and_honest_hints(nc: Nats) -> None:
    async with running_facade(nc, new_pbx()) as facade, Client(facade.server, raise_exceptions=True) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == ALL_TOOLS
    for name, tool in tools.items():
        assert tool.output_schema is not None, name
        assert tool.annotations is not None, name
        assert tool.annotations.read_only_hint is (name in READ_TOOLS), name
        if name not in READ_TOOLS:
            assert "idempotency_key" in tool.input_schema["properties"], name
    assert tools["drop_call"].annotations is not None and tools["drop_call"].annotations.destructive_hint
    assert tools["hold_call"].description is not None and "no hold" in tools["hold_call"].description
    assert tools["record_call"].description is not None and "hub" in tools["record_call"].description
    assert tools["send_message"].description is not None and "provider" in tools["send_message"].description
    assert tools["make_call"].input_schema["properties"]["to"]["pattern"] == r"^\+?[0-9*#]{1,31}$"


async def test_the_read_only_profile_offers_only_read_tools(nc: Nats) -> None:
    async with (
        running_facade(nc, new_pbx(), profile="read-only") as facade,
        Client(facade.server, raise_exceptions=True) as client,
    ):
        names = {t.name for t in (await client.list_tools()).tools}
    assert names == READ_TOOLS


@pytest.mark.parametrize("mode", MODES)
async def test_every_action_tool_becomes_its_command_on_the_worker(nc: Nats, mode: str) -> None:
    pbx = new_pbx()
    gateway = RecordingGateway()
    ringing, connected = new_call_id(), new_call_id()
    async with (
        running_worker(nc, pbx, gateway),
        running_facade(nc, pbx) as facade,
        Client(facade.server, raise_exceptions=True, mode=mode) as client,
    ):
        await publish_leg(nc, pbx, ringing, "800", 4, "Ringing")
        await publish_leg(nc, pbx, connected, "800", 7, "Connected")
        await wait_for_leg(facade, ringing, "800", 4, "Ringing")
        await wait_for_leg(facade, connected, "800", 7, "Connected")
        calls: list[tuple[str, dict[str, Any]]] = [
            ("make_call", {"from_extension": "201", "to": "+14155550100"}),
            ("answer_call", {"call_id": ringing}),
            ("transfer_call", {"call_id": ringing, "to": "203"}),
            ("transfer_call", {"call_id": connected, "to": "204", "warm_summary": "Caller wants a refund"}),
            ("hold_call", {"call_id": connected}),
            ("drop_call", {"call_id": connected, "leg": {"dn": "800", "participant_id": 7}}),
            ("record_call", {"call_id": connected}),
            ("stop_recording", {"call_id": connected}),
            ("send_message", {"to": "+14155550100", "text": "Your callback is booked"}),
            ("set_presence", {"extension": "201", "profile": "Away"}),
        ]
        operations = []
        with anyio.fail_after(20):
            for name, args in calls:
                result = await client.call_tool(name, args)
                body = structured(result)
                assert body["ok"], (name, body)
                assert not result.is_error
                operations.append(body["operation"])
            await publish_event(
                nc,
                e.CallParked.model_validate(
                    {
                        "event_id": uuid.uuid4(),
                        "pbx_id": pbx,
                        "call_id": connected,
                        "leg": LegRef(dn="800", participant_id=7),
                        "occurred_at": utcnow(),
                        "data": {"orbit": "SP3"},
                    }
                ),
            )
            while (call := facade.backend.calls.get(connected)) is None or call.parked_orbit is None:
                await facade.backend.calls.changed.wait()
            resumed = structured(await client.call_tool("resume_call", {"call_id": connected, "to_extension": "201"}))
    assert resumed["ok"]
    assert operations == [
        "make_call",
        "answer",
        "divert",
        "transfer",
        "park",
        "drop",
        "start_recording",
        "stop_recording",
        "send_message",
        "set_presence",
    ]
    by_type = {type(cmd): cmd for cmd in gateway.calls}
    assert all(cmd.issued_by == "mcp:local" for cmd in gateway.calls)
    assert all(cmd.pbx_id == pbx for cmd in gateway.calls)
    make = by_type[c.MakeCall]
    assert isinstance(make, c.MakeCall) and make.args.from_ == "201" and make.args.to == "+14155550100"
    divert = by_type[c.Divert]
    assert isinstance(divert, c.Divert) and divert.call_id == ringing and divert.args.to == "203"
    assert divert.leg is not None and (divert.leg.dn, divert.leg.participant_id, divert.leg.legid) == ("800", 4, 104)
    transfer = by_type[c.Transfer]
    assert isinstance(transfer, c.Transfer) and transfer.args.summary == "Caller wants a refund"
    resume = by_type[c.Resume]
    assert isinstance(resume, c.Resume) and resume.args.orbit == "SP3" and resume.args.to == "201"
    presence = by_type[c.SetPresence]
    assert isinstance(presence, c.SetPresence) and presence.args.profile == "Away"


@pytest.mark.parametrize("mode", MODES)
async def test_read_tools_and_resources_answer_from_worker_queries(nc: Nats, mode: str) -> None:
    pbx = new_pbx()
    gateway = RecordingGateway()
    call_id = new_call_id()
    async with (
        running_worker(nc, pbx, gateway),
        running_facade(nc, pbx) as facade,
        Client(facade.server, raise_exceptions=True, mode=mode) as client,
    ):
        await publish_leg(nc, pbx, call_id, "800", 4, "Ringing")
        await publish_leg(nc, pbx, call_id, "800", 4, "Connected")
        with anyio.fail_after(15):
            logs = structured(await client.call_tool("get_call_logs", {"extension": "101", "limit": 5}))
            exts = structured(await client.call_tool("get_extensions", {}))
            pres = structured(await client.call_tool("get_presence", {"extension": "101"}))
            missing = await client.call_tool("get_presence", {"extension": "999"})
            listed = {str(r.uri) for r in (await client.list_resources()).resources}
            templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
            texts = {}
            for uri in ("3cx://active-calls", "3cx://call-history", "3cx://extensions", "3cx://messages"):
                contents = (await client.read_resource(uri)).contents[0]
                assert isinstance(contents, TextResourceContents)
                texts[uri] = json.loads(contents.text)
            presence = (await client.read_resource("3cx://extensions/101/presence")).contents[0]
            await wait_for_leg(facade, call_id, "800", 4, "Connected")
            timeline = (await client.read_resource(f"3cx://calls/{call_id}")).contents[0]
    assert logs["ok"] and logs["items"][0]["call_id"] == "01JOLD"
    assert exts["total"] == 2
    assert pres["items"][0]["profile"] == "Available"
    assert missing.is_error and structured(missing)["error"]["code"] == "not_found"
    history_query = next(q for q in gateway.queries if isinstance(q, c.CallHistory))
    assert history_query.args.extension == "101" and history_query.args.limit == 5
    assert listed == {"3cx://active-calls", "3cx://call-history", "3cx://extensions", "3cx://messages"}
    assert templates == {"3cx://calls/{call_id}", "3cx://extensions/{number}/presence"}
    assert texts["3cx://active-calls"]["items"][0]["call_id"] == "01JACTIVE"
    assert texts["3cx://messages"]["items"][0]["text"] == "hello"
    assert isinstance(presence, TextResourceContents) and json.loads(presence.text)["items"][0]["extension"] == "101"
    assert isinstance(timeline, TextResourceContents)
    events = json.loads(timeline.text)["events"]
    assert [ev["type"] for ev in events] == ["call.ringing", "call.answered"]


@pytest.mark.parametrize("mode", MODES)
async def test_invalid_arguments_say_what_to_fix(nc: Nats, mode: str) -> None:
    pbx = new_pbx()
    gateway = RecordingGateway()
    async with (
        running_worker(nc, pbx, gateway),
        running_facade(nc, pbx) as facade,
        Client(facade.server, raise_exceptions=True, mode=mode) as client,
    ):
        bad_number = await client.call_tool("make_call", {"from_extension": "201", "to": "555-0100"})
        missing = await client.call_tool("make_call", {"to": "+14155550100"})
        too_long = await client.call_tool("send_message", {"to": "+14155550100", "text": "x" * 1601})
        bad_window = await client.call_tool(
            "get_call_logs", {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
        )
    for result in (bad_number, missing, too_long):
        assert result.is_error
    text = bad_number.content[0].text  # type: ignore[union-attr]
    assert "to: got '555-0100'" in text and "no spaces or dashes" in text
    assert "from_extension: missing" in missing.content[0].text  # type: ignore[union-attr]
    assert "1 to 1600 characters" in too_long.content[0].text  # type: ignore[union-attr]
    assert structured(bad_window)["error"]["message"].startswith("since is after until")
    assert gateway.calls == []


async def test_an_ambiguous_or_unknown_call_asks_for_the_leg(nc: Nats) -> None:
    pbx = new_pbx()
    call_id = new_call_id()
    async with running_facade(nc, pbx) as facade, Client(facade.server, raise_exceptions=True) as client:
        await publish_leg(nc, pbx, call_id, "800", 4, "Connected")
        await publish_leg(nc, pbx, call_id, "201", 9, "Connected")
        await wait_for_leg(facade, call_id, "201", 9, "Connected")
        ambiguous = structured(await client.call_tool("drop_call", {"call_id": call_id}))
        unknown = structured(await client.call_tool("drop_call", {"call_id": new_call_id()}))
        ringing_only = structured(await client.call_tool("answer_call", {"call_id": call_id}))
    assert ambiguous["error"]["code"] == "invalid_argument" and "Pass `leg`" in ambiguous["error"]["message"]
    assert "participant_id: 9" in ambiguous["error"]["message"]
    assert unknown["error"]["code"] == "not_found" and "pass `leg`" in unknown["error"]["message"]
    assert ringing_only["error"]["code"] == "invalid_state"


async def test_a_warm_transfer_of_a_ringing_leg_is_refused_before_the_bus(nc: Nats) -> None:
    pbx = new_pbx()
    call_id = new_call_id()
    gateway = RecordingGateway()
    async with (
        running_worker(nc, pbx, gateway),
        running_facade(nc, pbx) as facade,
        Client(facade.server, raise_exceptions=True) as client,
    ):
        await publish_leg(nc, pbx, call_id, "800", 4, "Ringing")
        await wait_for_leg(facade, call_id, "800", 4, "Ringing")
        result = structured(
            await client.call_tool("transfer_call", {"call_id": call_id, "to": "203", "warm_summary": "VIP"})
        )
    assert result["error"]["code"] == "invalid_state" and "answer it first" in result["error"]["message"]
    assert gateway.calls == []


async def test_the_same_idempotency_key_acts_once_and_returns_the_first_outcome(nc: Nats) -> None:
    pbx = new_pbx()
    gateway = RecordingGateway()
    args = {"from_extension": "201", "to": "+14155550100", "idempotency_key": "callback-42"}
    async with (
        running_worker(nc, pbx, gateway),
        running_facade(nc, pbx) as facade,
        Client(facade.server, raise_exceptions=True) as client,
    ):
        with anyio.fail_after(15):
            first = structured(await client.call_tool("make_call", args))
            second = structured(await client.call_tool("make_call", args))
            other = structured(await client.call_tool("make_call", {**args, "to": "+14155550111"}))
    assert first["ok"] and not first["duplicate"]
    assert second["ok"] and second["duplicate"]
    assert other["error"]["code"] == "idempotency_conflict"
    assert len(gateway.calls) == 1


async def test_assistants_are_refused_emergency_numbers_by_the_worker_policy(nc: Nats) -> None:
    pbx = new_pbx()
    gateway = RecordingGateway()
    async with (
        running_worker(nc, pbx, gateway),
        running_facade(nc, pbx) as facade,
        Client(facade.server, raise_exceptions=True) as client,
    ):
        result = await client.call_tool("make_call", {"from_extension": "201", "to": "911"})
    assert result.is_error and structured(result)["error"]["code"] == "policy_denied"
    assert gateway.calls == []


async def test_a_tokens_dial_quota_is_enforced(nc: Nats) -> None:
    pbx = new_pbx()
    gateway = RecordingGateway()
    principal = Principal(token_id=f"q{pbx}", scopes=frozenset({"read", "control"}), dial_quota_per_day=1)
    async with (
        running_worker(nc, pbx, gateway),
        running_facade(nc, pbx, principal=principal) as facade,
        Client(facade.server, raise_exceptions=True) as client,
    ):
        with anyio.fail_after(15):
            first = structured(await client.call_tool("make_call", {"from_extension": "201", "to": "+14155550100"}))
            second = structured(await client.call_tool("make_call", {"from_extension": "201", "to": "+14155550101"}))
    assert first["ok"]
    assert second["error"]["code"] == "policy_denied" and "dial quota" in second["error"]["message"]
    assert len(gateway.calls) == 1
    assert gateway.calls[0].issued_by == f"mcp:q{pbx}"


async def test_a_read_only_principal_is_refused_control_tools(nc: Nats) -> None:
    principal = Principal(token_id="ro", scopes=frozenset({"read"}))
    async with (
        running_facade(nc, new_pbx(), principal=principal) as facade,
        Client(facade.server, raise_exceptions=True) as client,
    ):
        result = await client.call_tool("make_call", {"from_extension": "201", "to": "+14155550100"})
    assert result.is_error and structured(result)["error"]["code"] == "forbidden"


@pytest.mark.parametrize("mode", MODES)
async def test_with_the_bus_down_tools_are_listed_and_calls_say_pbx_unavailable(mode: str) -> None:
    from hub.natsd import free_port

    async with Backend(pbx_id="main", nats_url=f"nats://127.0.0.1:{free_port()}", retry_s=0.2) as backend:
        facade = build_server(backend, FacadeConfig(pbx_id="main"))
        async with Client(facade.server, raise_exceptions=True, mode=mode) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            result = await client.call_tool("make_call", {"from_extension": "201", "to": "+14155550100"})
            query = await client.call_tool("get_extensions", {})
            with pytest.raises(MCPError, match="pbx_unavailable"):
                await client.read_resource("3cx://extensions")
    assert names == ALL_TOOLS
    assert result.is_error and structured(result)["error"]["code"] == "pbx_unavailable"
    assert structured(result)["error"]["retryable"] is True
    assert structured(query)["error"]["code"] == "pbx_unavailable"
