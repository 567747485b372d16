"""Entry points for ``masterlinc mcp serve | token | config`` (the CLI wires these; ``python -m hub.mcp`` too).

Each returns a process exit code and prints to stderr what went wrong; stdout is left to the stdio transport (serve)
or to what the user asked for (token create prints the token once, config prints the client's config).
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, cast

import anyio
import uvicorn
from starlette.types import ASGIApp

from hub.config import Settings
from hub.logs import get_logger, setup_logging
from hub.mcp.backend import Backend
from hub.mcp.clients import CLIENTS, ConfigTarget, render_config, write_config
from hub.mcp.http import AccessGate, StoreTokenVerifier, default_origins, transport_security
from hub.mcp.server import PROFILES, Facade, FacadeConfig, Profile, build_server
from hub.mcp.tokens import TokenStore, describe
from hub.runner import Health, HealthServer

log = get_logger(__name__)

Transport = Literal["stdio", "http"]
DEFAULT_HTTP_PORT = 8765
MCP_PATH = "/mcp"


def _err(message: str) -> None:
    print(f"masterlinc mcp: {message}", file=sys.stderr)


def resolve_pbx(settings: Settings, pbx_id: str | None) -> str:
    if pbx_id:
        return pbx_id
    if settings.pbxs:
        return settings.pbxs[0].id
    raise ValueError("no PBX configured: set ML_PBXS__0__ID (and its base URL and credentials), or pass --pbx")


def http_app(
    facade: Facade,
    store: TokenStore,
    *,
    host: str,
    port: int,
    origins: Sequence[str],
    json_response: bool = False,
) -> ASGIApp:
    """The streamable HTTP app behind the access gate. ``facade`` must be built with a token verifier."""
    inner = facade.server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=transport_security(host, port, origins),
        host=host,
        json_response=json_response,
    )
    return AccessGate(inner, verify=store.verify, origins=origins, path=MCP_PATH)


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn, created with ``IPPROTO_TCP`` so the event loop turns Nagle off on accepted
    connections (asyncio and uvloop only set TCP_NODELAY on sockets whose protocol says TCP). With proto 0 the
    response body waits for the client's delayed ACK of the headers: ~40 ms on every 2026-era tool call."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


async def run_http(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    on_bound: Callable[[str], None] | None = None,
    stopping: anyio.Event | None = None,
) -> None:
    """Serve ``app`` with uvicorn on host:port (0 picks a port) until ``stopping`` is set or a signal arrives."""
    sock = listening_socket(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound_port}{MCP_PATH}"
    async with anyio.create_task_group() as tg:

        async def announce() -> None:
            while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
                await anyio.sleep(0.01)
            log.info("mcp http listening", url=url)
            if on_bound is not None:
                on_bound(url)

        async def stop_on_event() -> None:
            if stopping is not None:
                await stopping.wait()
                server.should_exit = True

        tg.start_soon(announce)
        tg.start_soon(stop_on_event)
        try:
            await server.serve(sockets=[sock])
        finally:
            tg.cancel_scope.cancel()
            sock.close()


async def _serve(
    settings: Settings,
    transport: Transport,
    host: str,
    port: int,
    profile: str,
    pbx_id: str,
    origins: list[str],
) -> None:
    store = TokenStore.in_data_dir(settings.data_dir)
    nats = settings.effective_nats_url()
    async with Backend(pbx_id=pbx_id, nats_url=nats, nats_options=settings.bus.security.options()) as backend:
        if transport == "stdio":
            facade = build_server(backend, FacadeConfig(pbx_id=pbx_id, profile=cast(Profile, profile)))
        else:
            facade = build_server(
                backend,
                FacadeConfig(pbx_id=pbx_id, profile=cast(Profile, profile), default_principal=None),
                token_verifier=StoreTokenVerifier(store),
                issuer_url=f"http://{host}:{port}",
            )
        async with anyio.create_task_group() as tg:
            tg.start_soon(facade.legacy.run)
            if transport == "stdio":
                await facade.server.run_stdio_async()
            else:
                app = http_app(facade, store, host=host, port=port, origins=origins)
                health = Health()
                health.set("http", False, "starting")
                async with HealthServer(health, settings.http.host, settings.http.port) as probes:
                    log.info("service started", service="mcp", health=probes.url)
                    tg.start_soon(_report_bus, backend, health)
                    await run_http(app, host, port, on_bound=lambda url: health.set("http", True, url))
                    health.alive = False
            tg.cancel_scope.cancel()


async def _report_bus(backend: Backend, health: Health, every_s: float = 0.5) -> None:
    """/readyz says whether the facade can reach the bus (tools fail with pbx_unavailable meanwhile)."""
    while True:
        up = backend.available
        health.set("nats", up, "connected" if up else "connecting to NATS")
        await anyio.sleep(every_s)


def serve(
    settings: Settings,
    transport: Transport = "stdio",
    host: str | None = None,
    port: int | None = None,
    profile: str = "full",
    *,
    pbx_id: str | None = None,
    allowed_origins: Sequence[str] = (),
) -> int:
    """``masterlinc mcp serve``: run the facade on stdio or streamable HTTP until stdin closes or a signal."""
    setup_logging(settings.log_level, settings.log_format)  # before MCPServer is built, and never on stdout
    if transport not in ("stdio", "http"):
        _err(f"unknown transport {transport!r}: use stdio or http")
        return 2
    if profile not in PROFILES:
        _err(f"unknown profile {profile!r}: use {' or '.join(PROFILES)}")
        return 2
    try:
        pbx = resolve_pbx(settings, pbx_id)
    except ValueError as exc:
        _err(str(exc))
        return 2
    bind_host = host or settings.http.host
    bind_port = DEFAULT_HTTP_PORT if port is None else port
    if transport == "http" and bind_port and settings.http.port == bind_port:
        clash = f"the MCP port and ML_HTTP__PORT (/healthz, /readyz, /metrics) are both {bind_port}"
        _err(f"{clash}: give them different ports")
        return 2
    origins = [*default_origins(bind_host, bind_port), *allowed_origins]
    try:
        anyio.run(_serve, settings, transport, bind_host, bind_port, profile, pbx, origins)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        _err(f"cannot serve on {bind_host}:{bind_port}: {exc.strerror or exc}")
        return 1
    return 0


# --------------------------------------------------------------------------- tokens


def token_create(
    settings: Settings, *, name: str = "", scopes: Sequence[str] = ("read",), dial_quota_per_day: int | None = None
) -> int:
    """``masterlinc mcp token create``: prints the token once on stdout, its details on stderr."""
    try:
        created = TokenStore.in_data_dir(settings.data_dir).create(
            name=name, scopes=scopes, dial_quota_per_day=dial_quota_per_day
        )
    except ValueError as exc:
        _err(str(exc))
        return 2
    record = created.record
    quota = f", dial quota {record.dial_quota_per_day}/day" if record.dial_quota_per_day is not None else ""
    print(
        f"token {record.id} ({', '.join(record.scopes)}{quota}); shown once, store it now:",
        file=sys.stderr,
    )
    print(created.token)
    return 0


def token_list(settings: Settings, *, as_json: bool = False) -> int:
    """``masterlinc mcp token list``: ids, names, scopes, quotas, revocation (never the tokens)."""
    try:
        records = [describe(r) for r in TokenStore.in_data_dir(settings.data_dir).records()]
    except ValueError as exc:
        _err(str(exc))
        return 1
    if as_json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print("no tokens; create one with `masterlinc mcp token create --scope read`")
        return 0
    for r in records:
        state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
        quota = r["dial_quota_per_day"] if r["dial_quota_per_day"] is not None else "-"
        print(f"{r['id']}  {r['name'] or '-':<16} {','.join(r['scopes']):<22} quota={quota:<5} {state}")
    return 0


def token_revoke(settings: Settings, token_id: str) -> int:
    """``masterlinc mcp token revoke ID``: running servers refuse it from their next request."""
    try:
        record = TokenStore.in_data_dir(settings.data_dir).revoke(token_id)
    except KeyError as exc:
        _err(str(exc.args[0]))
        return 1
    print(f"revoked {record.id}")
    return 0


# --------------------------------------------------------------------------- client configs


def config_print(client: str, target: ConfigTarget) -> int:
    """``masterlinc mcp config --client NAME``: print the client's config snippet."""
    if client not in CLIENTS:
        _err(f"unknown client {client!r}; known: {', '.join(CLIENTS)}")
        return 2
    print(render_config(client, target))
    return 0


def config_write(client: str, target: ConfigTarget, *, path: Path | None = None) -> int:
    """``masterlinc mcp config --client NAME --write``: merge into the client's file (backup, 0600)."""
    if client not in CLIENTS:
        _err(f"unknown client {client!r}; known: {', '.join(CLIENTS)}")
        return 2
    try:
        result = write_config(client, target, path=path)
    except (OSError, ValueError) as exc:
        _err(str(exc))
        return 1
    backup = f" (previous version: {result.backup})" if result.backup else ""
    print(f"wrote the masterlinc server into {result.path}{backup}", file=sys.stderr)
    return 0
