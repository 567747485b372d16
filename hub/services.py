"""What every hub service does first: open the bus, reporting it not ready and retrying while it is down (D§10),
with the configured NATS credentials, and make sure the streams exist."""

from __future__ import annotations

from nats.aio.client import Client

from hub.bus import BusUnavailableError, connect, ensure_streams
from hub.config import Settings
from hub.runner import ServiceContext, until_ready


async def open_bus(ctx: ServiceContext, settings: Settings, name: str) -> Client | None:
    """The service's NATS connection with its streams ensured; None when asked to stop before it opened."""
    ctx.health.set("nats", False, "connecting")
    url = settings.effective_nats_url()
    options = settings.bus.security.options()
    nc = await until_ready(
        "nats", lambda: connect(url, name=name, **options), BusUnavailableError, ctx.health, ctx.stopping
    )
    if nc is not None:
        await ensure_streams(nc.jetstream(), settings.bus)
    return nc
