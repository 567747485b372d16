"""``masterlinc ingest``: the adapter for every configured PBX, in one process (run several for failover: one leads
per PBX, the others stand by)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from nats.aio.client import Client

from hub.config import Settings
from hub.ingest.adapter import PbxAdapter, new_holder_id
from hub.logs import get_logger
from hub.pbx.callcontrol import CallControlClient
from hub.pbx.http import pbx_http
from hub.pbx.token import TokenProvider
from hub.pbx.xapi import XapiClient
from hub.runner import Health, ServiceContext, run_service
from hub.services import open_bus

log = get_logger(__name__)


@contextlib.asynccontextmanager
async def adapters(
    nc: Client, settings: Settings, health: Health, *, holder: str | None = None
) -> AsyncIterator[list[PbxAdapter]]:
    """One adapter per configured PBX, each with its own HTTP client and token provider."""
    holder = holder or new_holder_id()
    async with contextlib.AsyncExitStack() as stack:
        built = []
        for pbx in settings.pbxs:
            http = await stack.enter_async_context(pbx_http(pbx))
            tokens = TokenProvider(http, pbx.client_id, pbx.secret())
            rest = CallControlClient(http, tokens)
            built.append(PbxAdapter(nc, pbx, rest, tokens, xapi=XapiClient(http, tokens), config=settings.ingest,
                                    holder=holder, health=health))  # fmt: skip
        yield built


async def ingest_main(ctx: ServiceContext, settings: Settings) -> None:
    if not settings.pbxs:
        raise ValueError("no PBX configured: set ML_PBXS__0__ID, ..._BASE_URL, ..._CLIENT_ID and ..._CLIENT_SECRET")
    for pbx in settings.pbxs:
        pbx.secret()  # a missing secret is a configuration error, said now
    nc = await open_bus(ctx, settings, "masterlinc-ingest")
    if nc is None:
        return
    try:
        async with adapters(nc, settings, ctx.health) as running:
            await asyncio.gather(*(adapter.run(ctx.stopping) for adapter in running))
    finally:
        await nc.drain()


async def run_ingest_service(settings: Settings) -> int:
    return await run_service("ingest", lambda ctx: ingest_main(ctx, settings), host=settings.http.host,
                             port=settings.http.port)  # fmt: skip
