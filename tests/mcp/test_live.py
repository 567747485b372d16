"""Resource-updated notifications fed from the bus: listen (2026) and resources/subscribe (2025), across replicas."""

from __future__ import annotations

import warnings

import anyio
import pytest
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import ResourceUpdatedNotification, ServerNotification
from nats.aio.client import Client as Nats

from hub.mcp.live import uris_for_subject
from schemas.identity import new_call_id
from tests.mcp.support import new_pbx, publish_leg, running_facade

pytestmark = [pytest.mark.nats, pytest.mark.anyio]


def test_event_subjects_map_to_the_resources_they_change() -> None:
    assert uris_for_subject("ml.evt.main.call.01JX.ended") == [
        "3cx://active-calls",
        "3cx://calls/01JX",
        "3cx://call-history",
    ]
    assert uris_for_subject("ml.evt.main.presence.101.changed") == [
        "3cx://extensions/101/presence",
        "3cx://extensions",
    ]
    assert uris_for_subject("ml.evt.main.message._.received") == ["3cx://messages"]
    assert uris_for_subject("ml.cmd.main.drop") == []


async def test_a_current_client_listening_hears_that_a_call_changed(nc: Nats) -> None:
    pbx = new_pbx()
    call_id = new_call_id()
    wanted = {"3cx://active-calls", f"3cx://calls/{call_id}"}
    seen: set[str] = set()
    async with (
        running_facade(nc, pbx) as facade,
        Client(facade.server, raise_exceptions=True) as client,
        client.listen(resource_subscriptions=sorted(wanted)) as sub,
    ):
        await publish_leg(nc, pbx, call_id, "800", 4, "Ringing")
        with anyio.fail_after(5):
            async for event in sub:
                assert isinstance(event, ResourceUpdated)
                seen.add(event.uri)
                if seen >= wanted:
                    break
    assert seen == wanted


async def test_a_2025_client_subscribed_to_a_resource_gets_updated_notifications(nc: Nats) -> None:
    pbx = new_pbx()
    call_id = new_call_id()
    got: list[str] = []
    arrived = anyio.Event()

    async def on_message(message: IncomingMessage) -> None:
        if isinstance(message, ServerNotification | ResourceUpdatedNotification):
            root = getattr(message, "root", message)
            if isinstance(root, ResourceUpdatedNotification):
                got.append(str(root.params.uri))
                arrived.set()

    async with (
        running_facade(nc, pbx) as facade,
        Client(facade.server, raise_exceptions=True, mode="legacy", message_handler=on_message) as client,
    ):
        caps = client.server_capabilities
        assert caps.resources is not None and caps.resources.subscribe
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)  # deprecated for 2026 only; this is a 2025 client
            await client.subscribe_resource("3cx://active-calls")
        assert facade.legacy.session_count == 1
        with anyio.fail_after(5):
            await publish_leg(nc, pbx, call_id, "800", 4, "Ringing")
            await arrived.wait()
    assert got == ["3cx://active-calls"]


async def test_replicas_share_updates_through_nats(nc: Nats, nats_server: str) -> None:
    """Two facade replicas on one bus: a client of replica B hears a change exactly as one of A would."""
    from hub.bus import connect

    pbx = new_pbx()
    call_id = new_call_id()
    other = await connect(nats_server, name="replica-b")
    try:
        async with (
            running_facade(nc, pbx),
            running_facade(other, pbx) as replica_b,
            Client(replica_b.server, raise_exceptions=True) as client,
            client.listen(resource_subscriptions=[f"3cx://calls/{call_id}"]) as sub,
        ):
            await publish_leg(nc, pbx, call_id, "800", 4, "Connected")
            with anyio.fail_after(5):
                event = await sub.__anext__()
    finally:
        await other.close()
    assert event == ResourceUpdated(uri=f"3cx://calls/{call_id}")
