"""An httpx transport on aiohttp's HTTP client, for the worker's REST requests to the PBX.

Why: each command costs the worker two REST requests (the leg read and the action). Through httpx's own transport
(httpcore's pool, h11, anyio streams) they were about half of the worker's CPU per command; aiohttp parses HTTP in C
and pools connections cheaply (docs/architecture.md, "Worker throughput"). Everything above the transport stays
httpx: the clients, the error types they catch, ``MockTransport`` in tests.

- Whole bodies only: the response is read before it is returned and its connection goes back to the pool. Audio
  streams (the recorder) keep using httpx's transport.
- At most one send per attempt for actions: aiohttp re-sends a request on a dead keep-alive connection only for
  idempotent methods (GET, PUT, DELETE...), never a POST or PATCH; httpx's transport sends each request once too.
- aiohttp's errors become httpx's: ``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``, ``RemoteProtocolError``
  (the server closed without an answer) and ``ReadError`` for the rest.
"""

from __future__ import annotations

import ssl

import aiohttp
import httpx


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``verify``: an SSL context, or True (system CAs) / False (no verification), as for httpx."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True, max_connections: int = 100) -> None:
        self._ssl: ssl.SSLContext | bool = verify
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        """Created on first use, inside the running loop the session belongs to."""
        connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl)
        # no cookie jar: the REST APIs authenticate with a bearer token; httpx decodes content encodings itself
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        body = await request.aread()
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.get("pool"),
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        try:
            async with session.request(
                request.method,
                str(request.url),
                headers=list(request.headers.multi_items()),
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                content = await response.read()
                status, headers = response.status, list(response.raw_headers)
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
        except TimeoutError as exc:  # aiohttp's read timeouts are TimeoutErrors too
            raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
