"""Turning a provider's HTTP error into a :class:`ProviderError` (once, at the boundary)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from agents.basma.errors import ProviderError, redact


def _message(body: Any) -> tuple[str | None, str]:
    """(kind, message) from the error bodies the providers document."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(
            error, dict
        ):  # Anthropic {"type":"error","error":{type,message}}; OpenAI {"error":{message,type,code}}
            kind = error.get("type") or error.get("code")
            return (str(kind) if kind else None), str(error.get("message", ""))
        detail = body.get("detail")  # ElevenLabs: a string, {status, message} or a validation list
        if isinstance(detail, str):
            return None, detail
        if isinstance(detail, dict):
            return detail.get("status"), str(detail.get("message", ""))
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            loc = ".".join(str(p) for p in detail[0].get("loc", []))
            return "validation_error", f"{loc}: {detail[0].get('msg', '')}".strip(": ")
    return None, ""


async def raise_for_status(provider: str, response: httpx.Response, secret: str | None) -> None:
    if response.status_code < 400:
        return
    raw = await response.aread()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    kind, message = _message(body)
    if not message:
        message = raw.decode(errors="replace")[:300] or response.reason_phrase
    raise ProviderError(provider, redact(message, secret), status=response.status_code, kind=kind)


def transport_error(provider: str, exc: httpx.HTTPError) -> ProviderError:
    return ProviderError(provider, f"could not reach the service ({type(exc).__name__})")
