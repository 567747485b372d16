"""One authorized request to a PBX, shared by the Call Control and XAPI clients: the bearer token from a
:class:`~hub.pbx.token.TokenSource`, one token refresh and retry on a 401, transport errors as ``PbxUnavailable``.
Statuses >= 300 are returned for the caller to translate (the two APIs word their errors differently).

``http`` is an ``httpx.AsyncClient`` or anything with its ``request`` (the worker's lean
:class:`~hub.pbx.session.RestSession`): :class:`RestHttp` is that one method. Also the TLS settings of a PBX
(verified by default, or against its own CA file), shared by REST, the websocket and the worker."""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
from prometheus_client import Counter, Histogram

from hub.config import PbxConfig
from hub.pbx.errors import unreachable
from hub.pbx.token import TokenSource

REQUESTS = Counter("ml_pbx_requests_total", "Requests to the PBX's APIs, by API and status (0: no answer)",
                   ["api", "status"])  # fmt: skip
SECONDS = Histogram("ml_pbx_request_seconds", "PBX request time", ["api"],
                    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5))  # fmt: skip


def tls_context(verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    """TLS verified by default; a custom CA file for a PBX with its own certificate authority."""
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def pbx_http(pbx: PbxConfig, *, timeout: float = 10.0) -> httpx.AsyncClient:
    """An HTTP client for one PBX: TLS verified by default, or against the PBX's own CA file."""
    verify = tls_context(pbx.verify_tls, pbx.ca_file)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    return httpx.AsyncClient(base_url=pbx.base_url, verify=verify, timeout=timeout, limits=limits)


class RestResponse(Protocol):
    """What the REST clients read of a response (``httpx.Response`` has it)."""

    @property
    def status_code(self) -> int: ...

    @property
    def content(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


class RestHttp(Protocol):
    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestResponse: ...


async def authorized(
    http: RestHttp,
    tokens: TokenSource,
    method: str,
    path: str,
    what: str,
    *,
    json: Any = None,
    params: dict[str, str] | None = None,
) -> RestResponse:
    token = await tokens.token()
    api = "xapi" if path.startswith("/xapi/") else "callcontrol"
    response: RestResponse | None = None
    for attempt in (1, 2):
        started = time.perf_counter()
        try:
            response = await http.request(
                method, path, json=json, params=params, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            REQUESTS.labels(api, "0").inc()
            raise unreachable(what, exc) from None
        SECONDS.labels(api).observe(time.perf_counter() - started)
        REQUESTS.labels(api, str(response.status_code)).inc()
        if response.status_code == 401 and attempt == 1:
            token = await tokens.refresh(token)
            continue
        break
    assert response is not None
    return response
