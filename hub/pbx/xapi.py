"""The 3CX configuration API (XAPI, OData v4 under ``/xapi/v1``; reference §5): what the hub reads and sets.

- String literals are single-quoted with embedded quotes doubled (3CX's own ``odataParamEncoder``); every value
  put into a query goes through :func:`odata_string` or is a number or a date-time the client formats itself.
- Collections are paged with ``$top``/``$skip`` (``@odata.nextLink`` is not declared by 3CX; it is followed when
  present); :meth:`XapiClient.collect` reads every page.
- Function-style reports take every parameter inline and answer 404 when one is missing or malformed: the client
  always sends all 11 of ``GetCallLogData``.
- OData errors (``{"error": {"code", "message"}}``) become the same typed errors as Call Control's, with the
  PBX's message as the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from hub.pbx.errors import PbxError, PbxNotFound, from_status
from hub.pbx.http import RestResponse, authorized
from hub.pbx.token import TokenSource

BASE = "/xapi/v1"
PAGE = 500


def odata_string(value: str) -> str:
    """An OData string literal: single quotes, embedded quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def odata_datetime(value: datetime) -> str:
    """An XAPI date-time literal, UTC with milliseconds: ``2025-03-13T23:00:00.000Z``."""
    utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_datetime(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_duration(value: object) -> float:
    """Seconds of an ISO-8601 duration (``PT1M5.25S``, ``P1DT2H``); 0 for anything else."""
    if not isinstance(value, str) or not value.startswith("P"):
        return 0.0
    total, number, in_time = 0.0, "", False
    units = {"D": 86400.0, "H": 3600.0, "M": 60.0, "S": 1.0}
    for ch in value[1:]:
        if ch == "T":
            in_time = True
        elif ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total += float(number) * (units[ch] if (in_time or ch == "D") else 0.0)
            number = ""
    return total


@dataclass(frozen=True, kw_only=True)
class Query:
    """OData query options; ``filter`` must be built with :func:`odata_string` for any text it contains."""

    filter: str | None = None
    select: tuple[str, ...] = ()
    orderby: str | None = None
    top: int | None = None
    skip: int | None = None
    count: bool = False

    def params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.filter:
            out["$filter"] = self.filter
        if self.select:
            out["$select"] = ",".join(self.select)
        if self.orderby:
            out["$orderby"] = self.orderby
        if self.top is not None:
            out["$top"] = str(self.top)
        if self.skip is not None:
            out["$skip"] = str(self.skip)
        if self.count:
            out["$count"] = "true"
        return out


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    count: int | None


def _odata_reason(response: RestResponse) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or "") or None
    if isinstance(body, dict):
        return str(body.get("reasontext") or body.get("message") or "") or None
    return None


class XapiClient:
    def __init__(self, http: httpx.AsyncClient, tokens: TokenSource) -> None:
        self._http = http
        self._tokens = tokens
        self.requests = 0

    async def _send(
        self, method: str, path: str, what: str, *, params: Mapping[str, str] | None = None, json: Any = None
    ) -> Any:
        self.requests += 1
        response = await authorized(self._http, self._tokens, method, BASE + path, what, json=json,
                                    params=dict(params) if params else None)  # fmt: skip
        if response.status_code >= 300:
            raise from_status(response.status_code, _odata_reason(response), what)
        return response.json() if response.content else None

    async def page(self, path: str, query: Query | None = None, *, what: str = "") -> Page:
        body = await self._send("GET", path, what or f"GET {path}", params=(query or Query()).params())
        if not isinstance(body, dict) or not isinstance(body.get("value"), list):
            raise PbxError(f"{what or path}: the PBX answered something that is not an OData collection")
        count = body.get("@odata.count")
        return Page(rows=list(body["value"]), count=int(count) if isinstance(count, int) else None)

    async def collect(self, path: str, query: Query | None = None, *, limit: int = 100_000) -> list[dict[str, Any]]:
        """Every row of a collection, page by page (``$top``/``$skip``), up to ``limit`` rows."""
        base = query or Query()
        rows: list[dict[str, Any]] = []
        skip = base.skip or 0
        size = min(base.top or PAGE, PAGE)
        while len(rows) < limit:
            want = min(size, limit - len(rows))
            page = await self.page(path, Query(filter=base.filter, select=base.select, orderby=base.orderby,
                                               top=want, skip=skip))  # fmt: skip
            rows += page.rows
            if len(page.rows) < want:
                break
            skip += len(page.rows)
        return rows

    # ------------------------------------------------------------------ users and presence

    async def users(self, *, select: tuple[str, ...] = (), filter: str | None = None) -> list[dict[str, Any]]:
        query = Query(filter=filter, select=select, orderby="Number")
        return await self.collect("/Users", query)

    async def user(self, number: str) -> dict[str, Any]:
        body = await self._send("GET", f"/Users(Number={odata_string(number)})", f"user {number}")
        if not isinstance(body, dict) or "Id" not in body:
            raise PbxNotFound(f"user {number}: not found", status=404)
        return body

    async def forwarding_profiles(self, user_id: int) -> list[dict[str, Any]]:
        return await self.collect(f"/Users({int(user_id)})/ForwardingProfiles")

    async def set_user(self, user_id: int, fields: dict[str, Any]) -> None:
        """PATCH a user (204 No Content): CurrentProfileName, QueueStatus."""
        await self._send("PATCH", f"/Users({int(user_id)})", f"update user {user_id}", json=fields)

    # ------------------------------------------------------------------ calls, history, recordings, chat

    async def active_calls(self) -> list[dict[str, Any]]:
        return await self.collect("/ActiveCalls")

    async def call_log(
        self,
        period_from: datetime,
        period_to: datetime,
        *,
        source_type: int = 0,
        source_filter: str = "",
        destination_type: int = 0,
        destination_filter: str = "",
        calls_type: int = 0,
        call_time_filter_type: int = 0,
        call_time_filter_from: str = "0:00:0",
        call_time_filter_to: str = "0:00:0",
        hide_pcalls: bool = True,
        orderby: str = "StartTime asc",
        limit: int = 100_000,
    ) -> list[dict[str, Any]]:
        """``ReportCallLogData/Pbx.GetCallLogData(...)``, every parameter inline (a missing one is a 404)."""
        args = ",".join([
            f"periodFrom={odata_datetime(period_from)}", f"periodTo={odata_datetime(period_to)}",
            f"sourceType={int(source_type)}", f"sourceFilter={odata_string(source_filter)}",
            f"destinationType={int(destination_type)}", f"destinationFilter={odata_string(destination_filter)}",
            f"callsType={int(calls_type)}", f"callTimeFilterType={int(call_time_filter_type)}",
            f"callTimeFilterFrom={odata_string(call_time_filter_from)}",
            f"callTimeFilterTo={odata_string(call_time_filter_to)}", f"hidePcalls={'true' if hide_pcalls else 'false'}",
        ])  # fmt: skip
        return await self.collect(f"/ReportCallLogData/Pbx.GetCallLogData({args})", Query(orderby=orderby),
                                  limit=limit)  # fmt: skip

    async def call_history(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        extension: str | None = None,
        limit: int = 1000,
        skip: int = 0,
    ) -> Page:
        clauses = [f"(SrcDn eq {odata_string(extension)} or DstDn eq {odata_string(extension)})"] if extension else []
        if since is not None:
            clauses.append(f"SegmentStartTime ge {odata_datetime(since)}")
        if until is not None:
            clauses.append(f"SegmentStartTime le {odata_datetime(until)}")
        query = Query(filter=" and ".join(clauses) or None, orderby="SegmentStartTime desc", top=limit, skip=skip,
                      count=True)  # fmt: skip
        return await self.page("/CallHistoryView", query, what="call history")

    async def recordings(self, *, limit: int = 100, skip: int = 0) -> Page:
        query = Query(orderby="StartTime desc", top=limit, skip=skip, count=True)
        return await self.page("/Recordings", query, what="recordings")

    async def chat_history(self, *, since: datetime | None = None, limit: int = 1000, skip: int = 0) -> Page:
        query = Query(filter=f"TimeSent ge {odata_datetime(since)}" if since else None, orderby="TimeSent asc",
                      top=limit, skip=skip, count=True)  # fmt: skip
        return await self.page("/ChatHistoryView", query, what="chat history")

    async def parkings(self) -> list[dict[str, Any]]:
        return await self.collect("/Parkings")
