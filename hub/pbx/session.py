"""A lean HTTP session for the Call Control REST requests of every command, on aiohttp.

Why: each command costs the worker two Call Control requests (the leg read and the action). Through httpx (URL
parsing and merging, cookies, auth and redirect layers, then httpcore's pool, h11 and anyio streams) they were
about 80% of the worker's CPU per command; this session does the same requests for a fraction of it
(docs/architecture.md, "Worker throughput"). It has the one method the REST clients call, ``request``, with
httpx's signature and error types, so :class:`~hub.pbx.callcontrol.CallControlClient` takes either it or an
``httpx.AsyncClient`` (tests use httpx's MockTransport and the simulator). XAPI queries and audio streams stay on
httpx.

- Paths only, no query parameters (Call Control needs none); JSON bodies; whole bodies read before returning.
- At most one send per attempt for actions: aiohttp re-sends a request on a dead keep-alive connection only for
  idempotent methods (GET, PUT, DELETE...), never a POST; httpx sends each request once too.
- aiohttp's errors are raised as httpx's: ``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``,
  ``RemoteProtocolError`` (the server closed without an answer), ``ReadError`` for the rest.
"""

from __future__ import annotations

import json as jsonlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
import httpx


@dataclass(frozen=True, slots=True)
class Answer:
    """What the REST clients read of a response (the subset of ``httpx.Response`` they use)."""

    status_code: int
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class RestSession:
    """``verify``: an SSL context, or True (system CAs) / False (no verification), as for httpx. Open it with
    ``async with``: the aiohttp session belongs to the running loop."""

    def __init__(
        self, base_url: str, *, verify: ssl.SSLContext | bool = True, timeout: float = 10.0, max_connections: int = 100
    ) -> None:
        self._base = base_url.rstrip("/")
        self._ssl: ssl.SSLContext | bool = verify
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout, sock_read=timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RestSession:
        connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl)
        # no cookie jar: the REST APIs authenticate with a bearer token
        self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        if self._session is None:
            raise RuntimeError("RestSession used outside `async with`")
        if params:
            raise ValueError("RestSession sends paths only; use httpx for requests with query parameters")
        sent = dict(headers or {})
        body = None
        if json is not None:
            body = jsonlib.dumps(json, separators=(",", ":")).encode()
            sent["Content-Type"] = "application/json"
        try:
            async with self._session.request(
                method, self._base + url, data=body, headers=sent, allow_redirects=False, timeout=self._timeout
            ) as response:
                return Answer(response.status, await response.read(), response.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _as_httpx(exc, httpx.Request(method, self._base + url)) from exc


def _as_httpx(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx error the REST clients already handle (they report its type name)."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, TimeoutError):  # aiohttp's read timeouts are TimeoutErrors too
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(message, request=request)
    return httpx.ReadError(message, request=request)
