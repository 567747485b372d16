"""The signed webhook target: each record version is POSTed once as JSON to a URL the operator runs.

Signed like the hub's message webhook (:mod:`hub.worker.messaging`): HMAC-SHA256 over ``<timestamp>.<body>`` in
``X-MasterLinc-Signature: sha256=<hex>`` with ``X-MasterLinc-Timestamp``; ``Idempotency-Key: <record id>:<version>``
lets the receiver drop a repeat (a retry after a lost answer). 2xx is delivered (a JSON ``{"id": ...}`` in the answer
is kept as the external id); 408, 429 (honouring Retry-After), 5xx and no answer are retried; any other status is a
refusal.
"""

from __future__ import annotations

import json

import httpx

from agents.crm.record import CallRecord
from agents.crm.targets.base import Attempt, Delivered, DeliveryError, retry_after
from hub.worker.messaging import signed_headers

EVENT_HEADER = "X-MasterLinc-Event"


def body_of(record: CallRecord) -> bytes:
    return json.dumps({"type": "crm.call_record", "record": record.model_dump(mode="json")}).encode()


class WebhookTarget:
    name = "webhook"

    def __init__(self, http: httpx.AsyncClient, url: str, secret: str) -> None:
        self._http = http
        self._url = url
        self._secret = secret

    def __repr__(self) -> str:
        return f"WebhookTarget(url={self._url!r}, secret=***)"

    async def deliver(self, record: CallRecord, attempt: Attempt) -> Delivered:
        body = body_of(record)
        headers = signed_headers(self._secret, body, f"{record.record_id}:{record.version}")
        headers[EVENT_HEADER] = "crm.call_record"
        try:
            response = await self._http.post(self._url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"the webhook did not answer in time ({type(exc).__name__})", retryable=True,
                                maybe_sent=not isinstance(exc, httpx.ConnectTimeout)) from None  # fmt: skip
        except httpx.HTTPError as exc:
            sent = not isinstance(exc, httpx.ConnectError)
            raise DeliveryError(f"the webhook is unreachable ({type(exc).__name__})", retryable=True,
                                maybe_sent=sent) from None  # fmt: skip
        status = response.status_code
        if status < 300:
            return Delivered(external_id=_id_of(response))
        wait = retry_after(response.headers.get("retry-after"))
        if status in (408, 429) or status >= 500:
            raise DeliveryError(f"the webhook answered {status}", retryable=True, retry_after_s=wait,
                                maybe_sent=status >= 500)  # fmt: skip
        raise DeliveryError(f"the webhook refused the record ({status}): {response.text[:200]}", retryable=False)


def _id_of(response: httpx.Response) -> str | None:
    try:
        value = response.json()
    except ValueError:
        return None
    found = value.get("id") if isinstance(value, dict) else None
    return str(found) if found is not None else None
