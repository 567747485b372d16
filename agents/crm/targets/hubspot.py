"""The HubSpot target: each call record is one call engagement, created once and updated by its HubSpot id.

Built from HubSpot's published calls API v3 (/work/shared/providers.md §2: the official "Activities | Calls" guide,
hubspot-api-python ``crm/objects/calls``, the usage-details page; and developers.hubspot.com "Update a call"):

- ``POST /crm/v3/objects/calls`` ``{"properties": {...}}`` -> 201 ``{id, properties, createdAt, updatedAt,
  archived}``; ``PATCH /crm/v3/objects/calls/{id}`` -> 200; ``POST /crm/v3/objects/calls/search`` with
  ``filterGroups`` -> 200 ``{total, results, paging}``. Property values are strings; ``hs_timestamp`` is required.
- HubSpot has no idempotency key. The record id goes into a custom call property (``hubspot_id_property``, created
  by the operator with the Properties API), and the HubSpot id of each record is kept (``crm_links``), so every later
  version is a PATCH. Search is eventually consistent (a record created moments ago may not be found) and has its
  own low rate limit, so it is only used when an earlier create's answer was lost; then a create is held back for
  ``search_lag_s`` after that attempt, while search catches up.
- 429: ``Retry-After`` when present, else the window in ``X-HubSpot-RateLimit-Interval-Milliseconds``, else the
  outbox's exponential backoff. Errors: ``{status, message, correlationId, category, errors[...]}``; 400 (validation)
  is a refusal, 401/403 (token, scopes) and 5xx are retried; the token never appears in a message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from agents.crm.record import CallRecord
from agents.crm.targets.base import Attempt, Delivered, DeliveryError, retry_after

CALLS = "/crm/v3/objects/calls"
CONNECTED = "f240bbac-87c9-4f6e-bf70-924b57d47db7"
NO_ANSWER = "73a0d17f-1163-4015-bdd5-ec830791da20"
STATUS = {"answered": "COMPLETED", "missed": "NO_ANSWER", "rejected": "CANCELED", "failed": "FAILED"}
DISPOSITION = {"answered": CONNECTED, "missed": NO_ANSWER}
DIRECTION = {"inbound": "INBOUND", "outbound": "OUTBOUND"}


class HubSpotError(DeliveryError):
    def __init__(
        self,
        message: str,
        *,
        status: int,
        category: str = "",
        retryable: bool,
        retry_after_s: float | None = None,
        maybe_sent: bool = False,
    ) -> None:
        self.status = status
        self.category = category
        super().__init__(message, retryable=retryable, retry_after_s=retry_after_s, maybe_sent=maybe_sent)


class HubSpotCalls:
    """The few calls-API requests the target makes, with HubSpot's errors translated once."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self._http = http
        self._token = token

    def __repr__(self) -> str:
        return "HubSpotCalls(token=***)"

    async def create(self, properties: dict[str, str]) -> str:
        body = await self._request("POST", CALLS, {"properties": properties}, creates=True)
        return str(body["id"])

    async def update(self, call_id: str, properties: dict[str, str]) -> str:
        body = await self._request("PATCH", f"{CALLS}/{call_id}", {"properties": properties})
        return str(body["id"])

    async def find(self, id_property: str, value: str) -> str | None:
        query = {
            "filterGroups": [{"filters": [{"propertyName": id_property, "operator": "EQ", "value": value}]}],
            "properties": [id_property],
            "limit": 1,
        }
        body = await self._request("POST", f"{CALLS}/search", query)
        results = body.get("results") or []
        return str(results[0]["id"]) if results else None

    async def _request(self, method: str, path: str, body: dict[str, Any], *, creates: bool = False) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        try:
            response = await self._http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            sent = creates and not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            raise HubSpotError(f"HubSpot did not answer ({type(exc).__name__})", status=0, retryable=True,
                               maybe_sent=sent) from None  # fmt: skip
        if response.status_code < 300:
            data = response.json()
            return data if isinstance(data, dict) else {}
        raise _error(response, creates)


def _error(response: httpx.Response, creates: bool) -> HubSpotError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    category = str(body.get("category") or body.get("errorType") or "")
    message = str(body.get("message") or response.reason_phrase or "no message")
    details = [str(e.get("message")) for e in body.get("errors") or [] if isinstance(e, dict) and e.get("message")]
    where = f" (correlation id {body['correlationId']})" if body.get("correlationId") else ""
    text = f"HubSpot {status} {category or 'error'}: {message}{'; ' + '; '.join(details) if details else ''}{where}"
    if status == 429:
        wait = retry_after(response.headers.get("retry-after"))
        if wait is None:
            interval = response.headers.get("x-hubspot-ratelimit-interval-milliseconds")
            wait = float(interval) / 1000 if interval and interval.isdigit() else None
        return HubSpotError(text, status=status, category=category, retryable=True, retry_after_s=wait)
    retryable = status in (401, 403, 408) or status >= 500
    return HubSpotError(text, status=status, category=category, retryable=retryable,
                        maybe_sent=creates and status >= 500)  # fmt: skip


def properties(record: CallRecord, id_property: str) -> dict[str, str]:
    """The record as HubSpot call properties (every value a string, as the API types them)."""
    at = record.started_at or record.ended_at or datetime.now(UTC)
    caller = record.caller.number + (f" ({record.caller.name})" if record.caller.name else "")
    props = {
        "hs_timestamp": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
        "hs_call_title": f"{record.direction.capitalize()} call from {caller or 'an unknown number'}",
        "hs_call_body": _body(record),
        "hs_call_duration": str(round((record.talk_seconds or 0.0) * 1000)),
        "hs_call_from_number": record.caller.number,
        "hs_call_to_number": record.callee.number or record.did,
        "hs_call_status": STATUS[record.outcome],
        id_property: record.record_id,
    }
    if record.direction in DIRECTION:
        props["hs_call_direction"] = DIRECTION[record.direction]
    if record.outcome in DISPOSITION:
        props["hs_call_disposition"] = DISPOSITION[record.outcome]
    if record.recording_url and record.recording_url.startswith("https://"):  # HubSpot plays HTTPS recordings only
        props["hs_call_recording_url"] = record.recording_url
    return props


def _body(record: CallRecord) -> str:
    lines = [record.summary] if record.summary else []
    if record.answered_by:
        lines.append(f"Answered by {record.answered_by}; talked {record.talk_seconds or 0:.0f} s, rang "
                     f"{record.ring_seconds or 0:.0f} s.")  # fmt: skip
    lines += [
        f"{step.kind} to {step.to}" + (f" from {step.from_dn}" if step.from_dn else "") for step in record.transfers
    ]
    lines += [f"routed by rule {r.rule}: {r.action} {r.destination or ''}".rstrip() for r in record.routing]
    return "\n".join(lines) or f"Call {record.outcome}."


class HubSpotTarget:
    name = "hubspot"

    def __init__(self, calls: HubSpotCalls, *, id_property: str, search_lag_s: float = 10.0) -> None:
        self.calls = calls
        self.id_property = id_property
        self.search_lag_s = search_lag_s

    async def deliver(self, record: CallRecord, attempt: Attempt) -> Delivered:
        props = properties(record, self.id_property)
        if attempt.external_id is not None:
            try:
                return Delivered(await self.calls.update(attempt.external_id, props))
            except HubSpotError as exc:
                if exc.status != 404:  # 404: deleted in HubSpot since; make it again
                    raise
        if attempt.maybe_sent_at is not None:  # an earlier create may have landed although its answer was lost
            found = await self.calls.find(self.id_property, record.record_id)
            if found is not None:
                return Delivered(await self.calls.update(found, props))
            waited = (datetime.now(UTC) - attempt.maybe_sent_at).total_seconds()
            if waited < self.search_lag_s:
                raise DeliveryError(
                    "an earlier create may have landed; waiting for HubSpot search to catch up before creating",
                    retryable=True,
                    retry_after_s=max(0.2, self.search_lag_s - waited),
                )
        return Delivered(await self.calls.create(props))
