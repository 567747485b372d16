"""The 3CX Call Control REST client: every endpoint the hub uses, JSON bodies on actions, typed errors.

``finalstatus`` may come as a string ("Success") or a number (1 success, 0 rejected, -1 failed); both are read.
A 401 triggers one token re-fetch and one retry. Device ids are percent-encoded in paths.

Inside :func:`retrying_until` (the worker runs each command in it, with the command's deadline), a request the PBX
refused (429 with its Retry-After, or 503: neither carried the request out) is sent again, after the Retry-After or
a short growing backoff, as long as the wait ends before the deadline; otherwise the refusal is raised, saying how
many times it was tried. Ingest reads have their own retry (the tracker) and run outside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

from hub.pbx.errors import PbxError, from_status, retry_after
from hub.pbx.http import RestHttp, RestResponse, authorized
from hub.pbx.token import TokenSource

SUCCESS = {"success", "1"}
RETRY_BASE_S = 0.05
RETRY_CAP_S = 1.0

_retry_until: ContextVar[float | None] = ContextVar("callcontrol_retry_until", default=None)


@contextlib.contextmanager
def retrying_until(deadline: float) -> Iterator[None]:
    """Requests made inside are sent again after a 429 or 503 while the wait ends before ``deadline``
    (``time.time()`` seconds)."""
    token = _retry_until.set(deadline)
    try:
        yield
    finally:
        _retry_until.reset(token)


def succeeded(finalstatus: object) -> bool:
    return str(finalstatus).strip().lower() in SUCCESS


class CallControlClient:
    """``http``: an ``httpx.AsyncClient`` with the PBX as base URL, or the worker's lean
    :class:`~hub.pbx.session.RestSession`."""

    def __init__(self, http: RestHttp, tokens: TokenSource) -> None:
        self._http = http
        self._tokens = tokens
        self.requests = 0

    async def _request(self, method: str, path: str, what: str, body: dict[str, Any] | None = None) -> Any:
        attempt = 0
        while True:
            attempt += 1
            self.requests += 1
            response = await authorized(self._http, self._tokens, method, path, what, json=body)
            if response.status_code < 300:
                return response.json() if response.content else None
            error = from_status(response.status_code, _reason(response), what,
                                retry_after=retry_after(response.headers.get("Retry-After")))  # fmt: skip
            until = _retry_until.get()
            if until is None or not error.refused:
                raise error
            wait = error.retry_after if error.retry_after is not None else min(RETRY_CAP_S, RETRY_BASE_S * 2**attempt)
            if time.time() + wait >= until:
                raise _gave_up(error, attempt, wait)
            await asyncio.sleep(wait)

    async def dns(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._request("GET", "/callcontrol", "list DNs")
        return result

    async def dn_info(self, dn: str) -> dict[str, Any]:
        """One DN's DNInfo: its type, devices and participants in one read."""
        result: dict[str, Any] = await self._request("GET", f"/callcontrol/{quote(dn, safe='')}", f"DN {dn}")
        return result

    async def participants(self, dn: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._request(
            "GET", f"/callcontrol/{quote(dn, safe='')}/participants", f"participants of {dn}"
        )
        return result

    async def participant(self, dn: str, participant_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._request(
            "GET",
            f"/callcontrol/{quote(dn, safe='')}/participants/{participant_id}",
            f"participant {participant_id} on {dn}",
        )
        return result

    async def devices(self, dn: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._request(
            "GET", f"/callcontrol/{quote(dn, safe='')}/devices", f"devices of {dn}"
        )
        return result

    async def device(self, dn: str, device_id: str) -> dict[str, Any]:
        path = f"/callcontrol/{quote(dn, safe='')}/devices/{quote(device_id, safe='')}"
        result: dict[str, Any] = await self._request("GET", path, f"device {device_id} of {dn}")
        return result

    async def makecall(self, dn: str, destination: str, *, device_id: str | None = None) -> dict[str, Any]:
        path = f"/callcontrol/{quote(dn, safe='')}/makecall"
        if device_id is not None:
            path = f"/callcontrol/{quote(dn, safe='')}/devices/{quote(device_id, safe='')}/makecall"
        result: dict[str, Any] = await self._request("POST", path, f"makecall from {dn}", {"destination": destination})
        _check_final(result, f"makecall from {dn}")
        return result

    async def action(
        self, dn: str, participant_id: int, action: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        path = f"/callcontrol/{quote(dn, safe='')}/participants/{participant_id}/{action}"
        result: dict[str, Any] = await self._request("POST", path, f"{action} on {dn}/{participant_id}", body or {})
        _check_final(result, f"{action} on {dn}/{participant_id}")
        return result


def _check_final(result: Any, what: str) -> None:
    if isinstance(result, dict) and "finalstatus" in result and not succeeded(result["finalstatus"]):
        reason = str(result.get("reasontext") or result.get("reason") or "")
        raise from_status(422, reason or f"finalstatus {result['finalstatus']}", what)


def _gave_up(error: PbxError, attempts: int, wait: float) -> PbxError:
    message = (f"{error}; tried {attempts} time{'s' if attempts > 1 else ''}: the next try (in {wait:g} s) would "
               "come after the command's deadline")  # fmt: skip
    return type(error)(message, status=error.status, reason=error.reason, retry_after=error.retry_after)


def _reason(response: RestResponse) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or None
    if isinstance(body, dict):
        return str(body.get("reasontext") or body.get("error_description") or body.get("error") or "") or None
    return None
