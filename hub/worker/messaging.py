"""Messaging providers for ``send_message`` (3CX has no public send-message API, D§7).

- ``webhook``: POSTs the message as JSON to a URL the operator runs (an SMS gateway, a CRM...), signed with
  HMAC-SHA256 over ``<timestamp>.<body>`` in ``X-MasterLinc-Signature: sha256=<hex>`` and ``X-MasterLinc-Timestamp``,
  so the receiver can check it came from this hub and is fresh.
- ``log``: records that a message would have been sent (for trials); nothing leaves the hub.
- none configured: the worker answers ``not_supported``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, Protocol

import httpx

from hub.logs import get_logger
from hub.worker.gateway import CommandFailure
from schemas.common import ErrorCode

log = get_logger(__name__)

SIGNATURE_HEADER = "X-MasterLinc-Signature"
TIMESTAMP_HEADER = "X-MasterLinc-Timestamp"


class MessagingProvider(Protocol):
    name: str

    async def send(self, *, message_id: str, pbx_id: str, to: str, text: str) -> dict[str, Any]: ...


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, idempotency_key: str) -> dict[str, str]:
    """The headers of a signed JSON webhook POST: the timestamp, its HMAC over timestamp + body, the idempotency key."""
    timestamp = str(int(time.time()))
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        "Idempotency-Key": idempotency_key,
    }


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, max_age_s: float = 300.0) -> bool:
    """What a receiver does: a constant-time comparison, and a timestamp no older than ``max_age_s``."""
    try:
        fresh = abs(time.time() - float(timestamp)) <= max_age_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


class LogOnlyProvider:
    name = "log"

    async def send(self, *, message_id: str, pbx_id: str, to: str, text: str) -> dict[str, Any]:
        log.info("message not sent (log-only provider)", message_id=message_id, pbx_id=pbx_id, length=len(text))
        return {"provider": self.name, "delivered": False, "message_id": message_id}


class WebhookProvider:
    name = "webhook"

    def __init__(self, http: httpx.AsyncClient, url: str, secret: str) -> None:
        self._http = http
        self._url = url
        self._secret = secret

    def __repr__(self) -> str:
        return f"WebhookProvider(url={self._url!r}, secret=***)"

    async def send(self, *, message_id: str, pbx_id: str, to: str, text: str) -> dict[str, Any]:
        body = json.dumps({"id": message_id, "pbx_id": pbx_id, "to": to, "text": text}).encode()
        headers = signed_headers(self._secret, body, message_id)
        try:
            response = await self._http.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise CommandFailure(
                ErrorCode.PBX_UNAVAILABLE, f"the message webhook did not answer: {type(exc).__name__}"
            ) from None
        if response.status_code >= 500:
            raise CommandFailure(ErrorCode.PBX_UNAVAILABLE, f"the message webhook answered {response.status_code}")
        if response.status_code >= 300:
            raise CommandFailure(
                ErrorCode.INVALID_ARGUMENT, f"the message webhook refused the message ({response.status_code})"
            )
        return {"provider": self.name, "delivered": True, "message_id": message_id, "status": response.status_code}
