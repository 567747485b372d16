"""A local fake of HubSpot's CRM calls API v3 on a real socket, built from the published shapes, not from memory.

Sources: /work/shared/providers.md §2, which cites the official guide "Activities | Calls"
(developers.hubspot.com/docs/api-reference/legacy/crm/activities/calls/guide), hubspot-api-python
``hubspot/crm/objects/calls/{api,models}`` and developers.hubspot.com/docs/api/usage-details; and the reference page
"Update a call" (developers.hubspot.com/docs/api-reference/legacy/crm/activities/calls/update-call), found with the
search tool. What it does, and where each behaviour comes from:

- ``Authorization: Bearer <token>`` required; otherwise 401 with category ``INVALID_AUTHENTICATION`` (§2 Auth,
  error categories).
- ``POST /crm/v3/objects/calls`` ``{"properties": {...}}``: values must be strings (the SDK types them
  ``dict[str, str]``); ``hs_timestamp`` is required; ``hs_call_status``, ``hs_call_direction`` and
  ``hs_call_disposition`` (the default outcome GUIDs) take only their documented values; read-only and unknown
  properties are ignored (§2 "Create body and properties"). Answers 201 ``{id, properties, createdAt, updatedAt,
  archived}``.
- ``PATCH /crm/v3/objects/calls/{id}``: 200 with the object; an unknown id is 404 ``OBJECT_NOT_FOUND``; a property
  that does not exist is an error ("Update a call": "Read-only and non-existent properties will result in an
  error"), sent here as 400 ``VALIDATION_ERROR``.
- ``POST /crm/v3/objects/calls/search`` with ``filterGroups`` (``EQ`` only here): 200 ``{total, results, paging}``.
  Search is eventually consistent (§2): an object is found only ``search_lag_s`` after it was created.
- Errors: ``{status: "error", message, correlationId, category, errors: [...]}`` (the SDK's ``Error`` model). 429:
  ``{status, message, errorType: "RATE_LIMIT", correlationId, policyName, requestId}`` with the
  ``X-HubSpot-RateLimit-*`` headers; ``Retry-After`` only when a test asks for it (§2 says it is not reliably sent).

Error messages are the fake's own words; only their shape and categories come from the sources.

Test controls: :meth:`rate_limit`, :meth:`fail`, :meth:`slow_answers` (the object is made, the answer comes too late:
a lost answer), :attr:`requests` (what arrived, with times).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
STATUSES = {"BUSY", "CALLING_CRM_USER", "CANCELED", "COMPLETED", "CONNECTING", "FAILED", "IN_PROGRESS",
            "NO_ANSWER", "QUEUED", "RINGING"}  # fmt: skip
DIRECTIONS = {"INBOUND", "OUTBOUND"}
DISPOSITIONS = {
    "9d9162e7-6cf3-4944-bf63-4dff82258764",  # Busy
    "f240bbac-87c9-4f6e-bf70-924b57d47db7",  # Connected
    "a4c4c377-d246-4b32-a13b-75a56a4cd0ff",  # Left live message
    "b2cf5968-551e-4856-9783-52b3da59a7d0",  # Left voicemail
    "73a0d17f-1163-4015-bdd5-ec830791da20",  # No answer
    "17b47fee-58de-441e-a44c-c6300d46f273",  # Wrong number
}
CALL_PROPERTIES = {
    "hs_timestamp", "hs_call_title", "hs_call_body", "hs_call_duration", "hs_call_from_number", "hs_call_to_number",
    "hs_call_recording_url", "hs_call_status", "hs_call_direction", "hs_call_disposition", "hs_call_callee_object_id",
    "hs_call_callee_object_type", "hs_call_source", "hubspot_owner_id", "hs_activity_type", "hs_attachment_ids",
}  # fmt: skip


@dataclass
class Call:
    id: str
    properties: dict[str, str]
    created: float
    created_at: str
    updated_at: str

    def body(self) -> dict[str, Any]:
        return {"id": self.id, "properties": dict(self.properties), "createdAt": self.created_at,
                "updatedAt": self.updated_at, "archived": False}  # fmt: skip


@dataclass
class Seen:
    """A request as it arrived (``at``: arrival), with the status it was answered with."""

    method: str
    path: str
    at: float
    status: int
    body: Any


@dataclass
class FakeHubSpot:
    custom_properties: set[str] = field(default_factory=lambda: {"masterlinc_record_id"})
    search_lag_s: float = 0.5
    token: str = TOKEN
    calls: dict[str, Call] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(17591596434))
    _rate_limited: list[float | None] = field(default_factory=list)  # one entry per 429 to send: its Retry-After
    _failures: list[tuple[int, str, str]] = field(default_factory=list)  # (status, category, message)
    _slow: list[float] = field(default_factory=list)
    interval_ms: int = 10000

    # ------------------------------------------------------------------ controls

    def rate_limit(self, count: int = 1, *, retry_after: float | None = None, interval_ms: int = 10000) -> None:
        self._rate_limited += [retry_after] * count
        self.interval_ms = interval_ms

    def fail(self, status: int, category: str, message: str, count: int = 1) -> None:
        self._failures += [(status, category, message)] * count

    def slow_answers(self, delay_s: float, count: int = 1) -> None:
        """The next creates happen, but their answers come ``delay_s`` late (a client times out: a lost answer)."""
        self._slow += [delay_s] * count

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/crm/v3/objects/calls", self.create, methods=["POST"]),
                Route("/crm/v3/objects/calls/search", self.search, methods=["POST"]),
                Route("/crm/v3/objects/calls/{call_id}", self.update, methods=["PATCH"]),
            ]
        )

    # ------------------------------------------------------------------ endpoints

    async def create(self, request: Request) -> Response:
        body, refused = await self._admit(request)
        if refused is not None:
            return refused
        props, problem = self._properties(body, creating=True)
        if problem:
            return self._record(request, body, _error(400, "VALIDATION_ERROR", problem))
        now = _now()
        call = Call(id=str(next(self._ids)), properties=props, created=time.monotonic(), created_at=now, updated_at=now)
        self.calls[call.id] = call
        if self._slow:
            await asyncio.sleep(self._slow.pop(0))
        return self._record(request, body, JSONResponse(call.body(), status_code=201))

    async def update(self, request: Request) -> Response:
        body, refused = await self._admit(request)
        if refused is not None:
            return refused
        call = self.calls.get(request.path_params["call_id"])
        if call is None:
            message = f"Object not found. objectId are usually numeric. {request.path_params['call_id']}"
            return self._record(request, body, _error(404, "OBJECT_NOT_FOUND", message))
        props, problem = self._properties(body, creating=False)
        if problem:
            return self._record(request, body, _error(400, "VALIDATION_ERROR", problem))
        call.properties.update(props)
        call.updated_at = _now()
        return self._record(request, body, JSONResponse(call.body()))

    async def search(self, request: Request) -> Response:
        body, refused = await self._admit(request)
        if refused is not None:
            return refused
        filters = [f for g in body.get("filterGroups", []) for f in g.get("filters", [])]
        visible = [c for c in self.calls.values() if time.monotonic() - c.created >= self.search_lag_s]
        found = [c for c in visible if all(_matches(c, f) for f in filters)][: int(body.get("limit", 10))]
        answer = {"total": len(found), "results": [c.body() for c in found]}
        return self._record(request, body, JSONResponse(answer))

    # ------------------------------------------------------------------ shared

    async def _admit(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        request.state.arrived = time.monotonic()
        try:
            body = await request.json()
        except ValueError:
            return {}, self._record(request, None, _error(400, "VALIDATION_ERROR", "Invalid input JSON"))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            message = "the access token is missing or not valid (the fake's wording)"
            return body, self._record(request, body, _error(401, "INVALID_AUTHENTICATION", message))
        if self._rate_limited:
            return body, self._record(request, body, self._too_many(self._rate_limited.pop(0)))
        if self._failures:
            status, category, message = self._failures.pop(0)
            return body, self._record(request, body, _error(status, category, message))
        return body, None

    def _too_many(self, retry_after: float | None) -> Response:
        body = {"status": "error", "message": "You have reached your secondly limit (the fake's wording).",
                "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()), "policyName": "TEN_SECONDLY_ROLLING",
                "requestId": str(uuid.uuid4())}  # fmt: skip
        headers = {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(self.interval_ms),
            "X-HubSpot-RateLimit-Max": "100",
            "X-HubSpot-RateLimit-Remaining": "0",
        }
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        return JSONResponse(body, status_code=429, headers=headers)

    def _properties(self, body: dict[str, Any], *, creating: bool) -> tuple[dict[str, str], str]:
        raw = body.get("properties")
        if not isinstance(raw, dict):
            return {}, "Property values were not valid: properties is required"
        known = CALL_PROPERTIES | self.custom_properties
        props: dict[str, str] = {}
        for name, value in raw.items():
            if name not in known:
                if creating:
                    continue  # ignored on create
                return {}, f'Property "{name}" does not exist'
            if not isinstance(value, str):
                return {}, f"Property values were not valid: {name} must be a string, not {type(value).__name__}"
            props[name] = value
        if creating and not props.get("hs_timestamp"):
            return {}, "Property values were not valid: hs_timestamp is required"
        for name, allowed in (("hs_call_status", STATUSES), ("hs_call_direction", DIRECTIONS),
                              ("hs_call_disposition", DISPOSITIONS)):  # fmt: skip
            if name in props and props[name] not in allowed:
                return (
                    {},
                    f"Property values were not valid: {props[name]!r} was not one of the allowed options for {name}",
                )
        return props, ""

    def _record(self, request: Request, body: Any, response: Response) -> Response:
        arrived = getattr(request.state, "arrived", time.monotonic())
        self.requests.append(Seen(request.method, request.url.path, arrived, response.status_code, body))
        self.requests.sort(key=lambda seen: seen.at)
        return response


def _matches(call: Call, f: dict[str, Any]) -> bool:
    if f.get("operator") != "EQ":
        return False
    return call.properties.get(str(f.get("propertyName"))) == str(f.get("value"))


def _error(status: int, category: str, message: str) -> JSONResponse:
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category,
            "errors": [{"message": message, "code": category}]}  # fmt: skip
    return JSONResponse(body, status_code=status)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
