"""Client-credentials tokens for one PBX (D§6): lifetime from the JWT ``exp``, refreshed ahead of expiry, one fetch
at a time (3CX keeps one active token per client: parallel fetches would revoke each other). The token never
appears in logs, errors or ``repr``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Protocol

import httpx

from hub.pbx.errors import PbxUnauthorized, PbxUnavailable, unreachable

REFRESH_AHEAD_S = 300.0


class TokenSource(Protocol):
    """Where a REST or websocket client gets its bearer token: this process's own :class:`TokenProvider`, or the
    token owner over the bus (:class:`hub.pbx.broker.BrokeredTokens`)."""

    async def token(self) -> str: ...

    async def refresh(self, stale: str | None) -> str:
        """After a 401: a new token, unless someone already replaced ``stale``."""
        ...


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, without verifying it (the PBX is the verifier)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


class TokenProvider:
    def __init__(
        self, http: httpx.AsyncClient, client_id: str, client_secret: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._http = http
        self._client_id = client_id
        self._secret = client_secret
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0  # when to fetch again (ahead of the real expiry)
        self.expires_at = 0.0  # the token's own expiry (JWT exp)
        self._lock = asyncio.Lock()
        self.fetches = 0

    def __repr__(self) -> str:
        return f"TokenProvider(client_id={self._client_id!r}, token={'***' if self._token else None})"

    async def token(self) -> str:
        if self._token is not None and self._clock() < self._expires:
            return self._token
        async with self._lock:  # single flight: the second caller gets the first caller's token
            if self._token is not None and self._clock() < self._expires:
                return self._token
            return await self._fetch()

    async def refresh(self, stale: str | None) -> str:
        """After a 401: fetch again unless another caller already replaced the stale token."""
        async with self._lock:
            if self._token is not None and self._token != stale:
                return self._token
            return await self._fetch()

    async def _fetch(self) -> str:
        form = {"client_id": self._client_id, "client_secret": self._secret, "grant_type": "client_credentials"}
        try:
            response = await self._http.post("/connect/token", data=form)
        except httpx.HTTPError as exc:
            raise unreachable("token request failed", exc) from None
        if response.status_code in (400, 401):
            detail = _oauth_error(response)
            raise PbxUnauthorized(f"the PBX refused the API credentials ({detail}); check the client id and secret",
                                  status=response.status_code, reason=detail)  # fmt: skip
        if response.status_code >= 300:
            raise PbxUnavailable(f"token request answered {response.status_code}", status=response.status_code)
        body = response.json()
        token = str(body["access_token"])
        now = self._clock()
        expiry = jwt_expiry(token) or now + float(body.get("expires_in", 60))
        lifetime = max(1.0, expiry - now)
        self._token = token
        self.expires_at = now + lifetime
        self._expires = now + max(lifetime / 2, lifetime - REFRESH_AHEAD_S)
        self.fetches += 1
        return token


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    return str(body.get("error_description") or body.get("error") or f"HTTP {response.status_code}")
