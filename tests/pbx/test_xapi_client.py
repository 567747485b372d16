"""The XAPI client against the simulator's OData over a real socket: every page of a large collection read once,
text in filters quoted (an embedded quote cannot end the literal), and OData errors turned into typed errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from hub.pbx import TokenProvider
from hub.pbx.errors import PbxError, PbxNotFound
from hub.pbx.xapi import PAGE, Query, XapiClient, odata_string
from hub.simulator import running_simulator
from hub.simulator.config import ExtensionConfig, SimConfig

pytestmark = pytest.mark.anyio

STAFF = 1203  # three pages of 500: 500 + 500 + 203
NAMES = {"1000": "Seán O'Brien", "1001": "O'Brien' or Number ne '"}  # the second tries to break out of a literal


@pytest.fixture
async def xapi() -> AsyncIterator[XapiClient]:
    extensions = tuple(ExtensionConfig(dn=str(1000 + i), name=NAMES.get(str(1000 + i), f"Staff {i}"))
                       for i in range(STAFF))  # fmt: skip
    config = SimConfig(extensions=extensions)
    async with running_simulator(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        yield XapiClient(http, TokenProvider(http, config.client_id, config.client_secret))


async def test_a_collection_larger_than_a_page_is_read_page_by_page_each_row_once(xapi: XapiClient) -> None:
    before = xapi.requests
    users = await xapi.users(select=("Id", "Number"))
    numbers = [u["Number"] for u in users]
    assert len(numbers) == STAFF and len(set(numbers)) == STAFF
    assert numbers == sorted(numbers)  # ordered by Number, so paging with $skip cannot skip or repeat a row
    assert xapi.requests - before == -(-STAFF // PAGE)


async def test_a_limit_stops_reading_early(xapi: XapiClient) -> None:
    rows = await xapi.collect("/Users", Query(select=("Number",), orderby="Number"), limit=PAGE + 7)
    assert [r["Number"] for r in rows] == [str(1000 + i) for i in range(PAGE + 7)]


async def test_text_with_quotes_matches_exactly_and_cannot_widen_the_filter(xapi: XapiClient) -> None:
    found = await xapi.users(filter=f"DisplayName eq {odata_string(NAMES['1000'])}")
    assert [u["Number"] for u in found] == ["1000"]
    hostile = await xapi.users(filter=f"DisplayName eq {odata_string(NAMES['1001'])}")
    assert [u["Number"] for u in hostile] == ["1001"]  # one user, not everyone whose Number is not ''
    assert (await xapi.user("1001"))["DisplayName"] == NAMES["1001"]


async def test_odata_errors_become_typed_errors_with_the_pbx_message(xapi: XapiClient) -> None:
    with pytest.raises(PbxNotFound):
        await xapi.user("9999")
    with pytest.raises(PbxError) as bad:
        await xapi.users(filter="NoSuchField eq 1")
    assert bad.value.status == 400
    assert "NoSuchField" in str(bad.value)
