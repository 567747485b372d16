"""Dial policy bypass attempts: emergency, premium-rate and international numbers stay denied to assistants however
they are dressed (feature codes, send keys, trunk and country prefixes, outside-line prefixes), through the worker."""

from __future__ import annotations

import pytest
from mcp import Client
from nats.aio.client import Client as Nats

from hub.worker.policy import DialPolicy, Verdict
from tests.mcp.support import RecordingGateway, new_pbx, running_facade, running_worker

MCP = "mcp:tok_attacker"


@pytest.mark.parametrize(
    "number",
    ["911", "+911", "1911", "+1911", "911#", "*67911", "*82*911", "#31#911", "**21*911#", "00911", "011911",
     "9911", "112", "*67112", "999#"],
)  # fmt: skip
def test_emergency_numbers_cannot_be_dressed_up(number: str) -> None:
    assert DialPolicy(outside_line_prefix="9").check(number, MCP).verdict is Verdict.DENIED_EMERGENCY


@pytest.mark.parametrize(
    ("number", "verdict"),
    [
        ("*6719005551234", Verdict.DENIED_PREMIUM),
        ("*82+19765551234#", Verdict.DENIED_PREMIUM),
        ("*67011442071234567", Verdict.DENIED_INTERNATIONAL),
        ("#31#+442071234567", Verdict.DENIED_INTERNATIONAL),
    ],
)
def test_premium_and_international_numbers_cannot_hide_behind_feature_codes(number: str, verdict: Verdict) -> None:
    assert DialPolicy().check(number, MCP).verdict is verdict


@pytest.mark.parametrize("number", ["101", "+15551230000", "*67+15551230000", "*4SP0", "5550911", "+15555550911"])
def test_ordinary_numbers_that_merely_contain_911_still_go_through(number: str) -> None:
    assert DialPolicy().check(number, MCP).allowed


@pytest.mark.nats
@pytest.mark.anyio
async def test_an_assistant_cannot_pose_as_an_agent_to_escape_the_policy(nc: Nats) -> None:
    """The facade sets issued_by from the caller's token; no argument lets an assistant pick it."""
    pbx = new_pbx()
    gateway = RecordingGateway()
    async with (
        running_worker(nc, pbx, gateway),
        running_facade(nc, pbx) as facade,
        Client(facade.server, raise_exceptions=True) as client,
    ):
        posed = await client.call_tool("make_call", {"from_extension": "101", "to": "*67911",
                                                     "issued_by": "agent:routing"})  # fmt: skip
        plain = await client.call_tool("make_call", {"from_extension": "101", "to": "*67911"})
    assert posed.is_error  # an unknown argument is refused, not honoured
    assert plain.is_error and plain.structured_content is not None
    assert plain.structured_content["error"]["code"] == "policy_denied"
    assert "emergency" in plain.structured_content["error"]["message"]
    assert gateway.calls == []
