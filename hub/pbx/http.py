"""One authorized request to a PBX, shared by the Call Control and XAPI clients: the bearer token from a
:class:`~hub.pbx.token.TokenSource`, one token refresh and retry on a 401, transport errors as ``PbxUnavailable``.
Statuses >= 300 are returned for the caller to translate (the two APIs word their errors differently)."""

from __future__ import annotations

from typing import Any

import httpx

from hub.pbx.errors import PbxUnavailable
from hub.pbx.token import TokenSource


async def authorized(
    http: httpx.AsyncClient,
    tokens: TokenSource,
    method: str,
    path: str,
    what: str,
    *,
    json: Any = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    token = await tokens.token()
    response: httpx.Response | None = None
    for attempt in (1, 2):
        try:
            response = await http.request(
                method, path, json=json, params=params, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            raise PbxUnavailable(f"{what}: {type(exc).__name__}") from None
        if response.status_code == 401 and attempt == 1:
            token = await tokens.refresh(token)
            continue
        break
    assert response is not None
    return response
