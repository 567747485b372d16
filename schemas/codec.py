"""Reading and writing events, commands and queries as JSON bytes.

``parse_event`` upcasts older versions before validating, so every reader gets current models.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from schemas.commands import Command, CommandResult, Query, QueryResult
from schemas.events import Event, EventBase
from schemas.upcast import upcast

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
QUERY_ADAPTER: TypeAdapter[Query] = TypeAdapter(Query)


class DecodeError(ValueError):
    """A message is not a valid event, command or query; ``reason`` is fit for a dead letter."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = "" if exc.error_count() <= 5 else f" (+{exc.error_count() - 5} more)"
    return "; ".join(parts) + more


def loads_object(payload: bytes | str) -> dict[str, Any]:
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DecodeError(f"expected a JSON object, got {type(raw).__name__}")
    return raw


def event_from_dict(raw: dict[str, Any]) -> Event:
    try:
        return EVENT_ADAPTER.validate_python(upcast(raw))
    except ValidationError as exc:
        raise DecodeError(f"invalid {raw.get('type', 'event')}: {_describe(exc)}") from None
    except ValueError as exc:  # unknown type, unsupported version
        raise DecodeError(str(exc)) from None


def parse_event(payload: bytes | str) -> Event:
    return event_from_dict(loads_object(payload))


def dump_event(event: EventBase) -> bytes:
    return event.model_dump_json(by_alias=True).encode()


def parse_command(payload: bytes | str) -> Command:
    raw = loads_object(payload)
    try:
        return COMMAND_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise DecodeError(f"invalid {raw.get('type', 'command')}: {_describe(exc)}") from None


def parse_query(payload: bytes | str) -> Query:
    raw = loads_object(payload)
    try:
        return QUERY_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise DecodeError(f"invalid {raw.get('type', 'query')}: {_describe(exc)}") from None


def dump(model: Any) -> bytes:
    """Any contract model as JSON bytes (aliases on: ``from`` rather than ``from_``)."""
    data: bytes = model.model_dump_json(by_alias=True).encode()
    return data


def parse_command_result(payload: bytes | str) -> CommandResult:
    return CommandResult.model_validate_json(payload)


def parse_query_result(payload: bytes | str) -> QueryResult:
    return QueryResult.model_validate_json(payload)
