"""One token per PBX for every process (D§6): the ingest leader owns it and serves it on ``ml.int.<pbx>.token``.

3CX keeps one active token per API client, so a worker fetching its own would revoke the adapter's. The owner
answers ``{"token", "expires_at"}``; a client that got a 401 asks with ``{"refresh_if": <fingerprint of the stale
token>}`` and the owner re-fetches once (single flight) unless it already holds a newer token. The fingerprint is
a hash prefix, so the stale token itself never travels back. ``ml.int.>`` is never recorded (only ``ml.evt.>`` is
streamed), and tokens are never logged.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from hub.logs import get_logger
from hub.pbx.errors import PbxError, PbxUnavailable
from hub.pbx.token import TokenProvider, jwt_expiry
from schemas import subjects

log = get_logger(__name__)

REFRESH_MARGIN_S = 30.0


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class TokenOwner:
    """Serves the PBX token of this process's :class:`TokenProvider` to other processes."""

    def __init__(self, nc: Client, pbx_id: str, provider: TokenProvider) -> None:
        self._nc = nc
        self._subject = subjects.token_subject(pbx_id)
        self._provider = provider
        self._sub: Subscription | None = None
        self.served = 0

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._subject, cb=self._on_request)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_request(self, msg: Msg) -> None:
        try:
            request = json.loads(msg.data) if msg.data else {}
        except ValueError:
            request = {}
        stale = request.get("refresh_if") if isinstance(request, dict) else None
        try:
            token = await self._provider.token()
            if isinstance(stale, str) and fingerprint(token) == stale:
                token = await self._provider.refresh(token)
            reply = {"token": token, "expires_at": self._provider.expires_at}
        except PbxError as exc:
            reply = {"error": str(exc), "code": str(exc.code)}
        self.served += 1
        await msg.respond(json.dumps(reply).encode())


class BrokeredTokens:
    """A token source for processes that are not the token owner (the worker, the voice agent)."""

    def __init__(self, nc: Client, pbx_id: str, *, timeout: float = 5.0, clock: Callable[[], float] = time.time):
        self._nc = nc
        self._pbx_id = pbx_id
        self._subject = subjects.token_subject(pbx_id)
        self._timeout = timeout
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self.requests = 0

    def __repr__(self) -> str:
        return f"BrokeredTokens(pbx={self._pbx_id!r}, token={'***' if self._token else None})"

    async def token(self) -> str:
        if self._token is not None and self._clock() < self._expires - REFRESH_MARGIN_S:
            return self._token
        return await self._ask({})

    async def refresh(self, stale: str | None) -> str:
        if self._token is not None and stale is not None and self._token != stale:
            return self._token
        return await self._ask({"refresh_if": fingerprint(stale)} if stale else {})

    async def _ask(self, request: dict[str, str]) -> str:
        self.requests += 1
        try:
            msg = await self._nc.request(self._subject, json.dumps(request).encode(), timeout=self._timeout)
        except NoRespondersError:
            raise PbxUnavailable(
                f"no token owner for pbx {self._pbx_id}: start `masterlinc ingest` (its leader owns the PBX token), "
                "or give this service its own API client"
            ) from None
        except (TimeoutError, NatsTimeoutError):
            raise PbxUnavailable(f"the token owner for pbx {self._pbx_id} did not answer in {self._timeout}s") from None
        reply = json.loads(msg.data)
        if "token" not in reply:
            raise PbxUnavailable(f"the token owner could not get a token: {reply.get('error', 'unknown error')}")
        self._token = str(reply["token"])
        self._expires = float(reply.get("expires_at") or jwt_expiry(self._token) or self._clock() + 60)
        return self._token
