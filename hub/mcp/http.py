"""Streamable HTTP for the facade: bearer tokens with scopes, Origin checks, clear 401 / 403.

Layers, outermost first:

1. :class:`AccessGate` (ours): refuses a browser ``Origin`` that is not allowed (403), a missing or unknown token
   (401, ``WWW-Authenticate: Bearer error="invalid_token"`` and how to get one), and a ``tools/call`` of a control
   tool by a token without the ``control`` scope (403, ``error="insufficient_scope", scope="control"``), before the
   request reaches the MCP session;
2. the SDK's bearer middleware (``token_verifier``), which puts the token's principal in the request for the tools;
3. the SDK's transport security (Host / Origin allow-lists, DNS-rebinding protection).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.mcp.server import CONTROL_TOOLS, FacadeAccessToken
from hub.mcp.tokens import Scope as TokenScope
from hub.mcp.tokens import TokenStore

MAX_BODY = 4 * 1024 * 1024
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class StoreTokenVerifier:
    """The SDK's ``TokenVerifier`` over the facade's token store."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store

    async def verify_token(self, token: str) -> AccessToken | None:
        principal = self.store.verify(token)
        if principal is None:
            return None
        return FacadeAccessToken(
            token=token,
            client_id=principal.token_id,
            scopes=sorted(principal.scopes),
            dial_quota_per_day=principal.dial_quota_per_day,
        )


def default_origins(host: str, port: int) -> list[str]:
    """Browser origins allowed by default: the server's own, and loopback on any port."""
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if host not in LOOPBACK_HOSTS and host not in ("0.0.0.0", "::"):  # noqa: S104 - compared, not bound
        origins.append(f"http://{host}:{port}")
        origins.append(f"https://{host}:{port}")
    return origins


def transport_security(host: str, port: int, origins: Sequence[str]) -> TransportSecuritySettings:
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    if host not in LOOPBACK_HOSTS:
        hosts.append(f"{host}:*")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=list(origins)
    )


def _origin_allowed(origin: str, allowed: Sequence[str]) -> bool:
    for pattern in allowed:
        if pattern == origin:
            return True
        if pattern.endswith(":*") and origin.startswith(pattern[:-1]) and origin[len(pattern) - 1 :].isdigit():
            return True
    return False


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def _tool_calls(body: bytes) -> list[str]:
    """Names of the tools a JSON-RPC body calls (one message, or a batch)."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return []
    messages = parsed if isinstance(parsed, list) else [parsed]
    names = []
    for msg in messages:
        if isinstance(msg, dict) and msg.get("method") == "tools/call":
            params = msg.get("params")
            if isinstance(params, dict) and isinstance(params.get("name"), str):
                names.append(params["name"])
    return names


class AccessGate:
    """ASGI middleware in front of the MCP endpoint (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        verify: Callable[[str], Any],
        origins: Sequence[str],
        path: str = "/mcp",
        control_tools: frozenset[str] = CONTROL_TOOLS,
    ) -> None:
        self.app = app
        self.verify = verify
        self.origins = list(origins)
        self.path = path
        self.control_tools = control_tools

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin is not None and not _origin_allowed(origin, self.origins):
            await _send_json(
                send,
                403,
                {
                    "error": "forbidden_origin",
                    "error_description": f"Origin {origin} may not use this server; allowed: "
                    f"{', '.join(self.origins)}. Start it with --allow-origin to add one",
                },
            )
            return
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        principal = self.verify(token) if token else None
        if principal is None:
            reason = "no bearer token" if not token else "the bearer token is unknown or revoked"
            await _send_json(
                send,
                401,
                {
                    "error": "invalid_token",
                    "error_description": f"{reason}: send Authorization: Bearer <token>; create one with "
                    "`masterlinc mcp token create --scope read` (or control)",
                },
                {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{reason}"'},
            )
            return
        if scope["method"] != "POST" or principal.has(TokenScope.CONTROL):
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        messages: list[Message] = []
        while more:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY:
                await _send_json(send, 413, {"error": "request_too_large"})
                return
        denied = [name for name in _tool_calls(body) if name in self.control_tools]
        if denied:
            await _send_json(
                send,
                403,
                {
                    "error": "insufficient_scope",
                    "error_description": f"{denied[0]} needs the control scope and this token has "
                    f"{', '.join(sorted(principal.scopes))}; create a token with "
                    "`masterlinc mcp token create --scope control`",
                },
                {"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="control"'},
            )
            return
        replay = iter(messages)

        async def replayed() -> Message:
            try:
                return next(replay)
            except StopIteration:
                return await receive()

        await self.app(scope, replayed, send)
