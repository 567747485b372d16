"""Client-credentials tokens as 3CX issues them: a signed JWT with iat/exp, ``expires_in`` in seconds (20.0.9+).

One active token per client by default (the reference's "a new grant revokes the previous one", unverified:
``new_token_revokes_old``). Tokens can also be revoked from the driving API to simulate that fault.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable

from hub.simulator.config import SimConfig


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    def __init__(self, config: SimConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._active: dict[str, float] = {}  # token -> expiry
        self.issued = 0

    def issue(self, client_id: str, client_secret: str) -> dict[str, object] | None:
        if not (hmac.compare_digest(client_id, self._config.client_id) and
                hmac.compare_digest(client_secret, self._config.client_secret)):  # fmt: skip
            return None
        now = self._clock()
        lifetime = self._config.token_lifetime_s
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {"sub": client_id, "iat": int(now), "exp": int(now + lifetime), "jti": secrets.token_hex(8)}
        body = _b64(json.dumps(claims).encode())
        signature = _b64(hmac.new(self._key, f"{header}.{body}".encode(), hashlib.sha256).digest())
        token = f"{header}.{body}.{signature}"
        if self._config.new_token_revokes_old:
            self._active.clear()
        self._active[token] = now + lifetime
        self.issued += 1
        return {"token_type": "Bearer", "expires_in": lifetime, "access_token": token}

    def valid(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        expiry = self._active.get(authorization[7:].strip())
        return expiry is not None and self._clock() < expiry

    def revoke_all(self) -> None:
        self._active.clear()
