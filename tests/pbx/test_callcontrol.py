"""The Call Control REST client against the simulator over a real socket: every endpoint of the reference's table
(section 2.1) the hub reads or drives, percent-encoded device ids, and typed errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from hub.pbx import CallControlClient, TokenProvider
from hub.pbx.errors import PbxInvalidState, PbxNotFound
from hub.simulator import SimHandle, running_simulator

pytestmark = pytest.mark.anyio

ROUTE_POINT = "800"


@pytest.fixture
async def sim() -> AsyncIterator[SimHandle]:
    async with running_simulator() as handle:
        yield handle


@pytest.fixture
async def rest(sim: SimHandle) -> AsyncIterator[CallControlClient]:
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        yield CallControlClient(http, TokenProvider(http, ROUTE_POINT, "sim-secret"))


async def test_dns_one_dn_and_its_devices_by_percent_encoded_id(sim: SimHandle, rest: CallControlClient) -> None:
    listed = {d["dn"] for d in await rest.dns()}
    assert {ROUTE_POINT, "101"} <= listed
    info = await rest.dn_info("101")
    assert info["dn"] == "101" and info["participants"] == []
    [device] = await rest.devices("101")
    assert device["device_id"] == sim.engine.device_id("101")
    assert ":" in device["device_id"]  # a SIP URI: only reachable percent-encoded
    assert await rest.device("101", device["device_id"]) == device
    with pytest.raises(PbxNotFound):
        await rest.device("101", "sip:nobody@127.0.0.1:5060")


async def test_participants_makecall_from_a_device_and_an_action(sim: SimHandle, rest: CallControlClient) -> None:
    [device] = await rest.devices("101")
    placed = await rest.makecall("101", "102", device_id=device["device_id"])
    participant_id = int(placed["result"]["id"])
    [leg] = await rest.participants("101")
    assert leg["id"] == participant_id
    assert (await rest.participant("101", participant_id))["id"] == participant_id
    assert (await rest.dn_info("101"))["participants"][0]["id"] == participant_id
    await rest.action("101", participant_id, "drop")
    assert await rest.participants("101") == []
    with pytest.raises((PbxNotFound, PbxInvalidState)):
        await rest.action("101", participant_id, "drop")
