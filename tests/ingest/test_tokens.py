"""One token per PBX (D§6): the ingest leader owns it; the worker asks for it on the bus, and a 401 refreshes once."""

from __future__ import annotations

import httpx
import pytest

from hub.bus import connect
from hub.pbx.broker import BrokeredTokens
from hub.pbx.callcontrol import CallControlClient
from hub.pbx.errors import PbxUnavailable
from tests.ingest.conftest import PBX, ingest_rig

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


async def test_the_worker_uses_the_owners_token_and_a_401_refreshes_it_once_for_everyone(nats_server: str) -> None:
    async with ingest_rig(nats_server) as rig, httpx.AsyncClient(base_url=rig.sim.base_url) as http:
        issued = rig.sim.sim.tokens.issued
        brokered = BrokeredTokens(rig.nc, PBX)
        rest = CallControlClient(http, brokered)
        assert next(d["dn"] for d in await rest.dns()) == "800"
        assert rig.sim.sim.tokens.issued == issued  # the owner's token, not a second grant that would revoke it
        rig.sim.sim.tokens.revoke_all()
        assert len(await rest.dns()) >= 1  # 401 -> ask the owner to refresh -> retried
        assert rig.sim.sim.tokens.issued == issued + 1
        call = rig.sim.engine.place_call("+15550100", "101")
        await rig.settled()  # ingest reads with the refreshed token too: no second fetch
        assert rig.stream.types(call.callid) == ["call.created", "call.ringing"]
        assert rig.sim.sim.tokens.issued == issued + 1
        assert "***" in repr(brokered) and (brokered._token or "x") not in repr(brokered)


async def test_without_a_token_owner_the_error_says_what_to_start(nats_server: str) -> None:
    nc = await connect(nats_server, name="test-no-owner")
    try:
        with pytest.raises(PbxUnavailable, match="start `masterlinc ingest`"):
            await BrokeredTokens(nc, "nobody", timeout=1).token()
    finally:
        await nc.close()
