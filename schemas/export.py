"""JSON Schema and AsyncAPI 3 documents generated from the models (``masterlinc schema export|asyncapi``).

Both are deterministic (sorted keys, no timestamps) so snapshot tests can keep them stable, and a change to the
contract shows as a diff in review.
"""

from __future__ import annotations

import json
from typing import Any

from schemas.commands import COMMAND_TYPES, QUERY_TYPES, CommandResult, QueryResult
from schemas.events import EVENT_TYPES, EventBase

CONTRACT_VERSION = "0.1.0"


def event_json_schemas() -> dict[str, dict[str, Any]]:
    """Type name -> JSON Schema of each event type (current version)."""
    return {cls.type_name(): cls.model_json_schema(by_alias=True) for cls in EVENT_TYPES}


def contract_document() -> dict[str, Any]:
    """All events, commands and queries with their versions: the ``schema export`` output."""
    return {
        "contract_version": CONTRACT_VERSION,
        "events": {
            cls.type_name(): {
                "version": cls.VERSION,
                "description": cls.DESCRIPTION,
                "schema": cls.model_json_schema(by_alias=True),
            }
            for cls in EVENT_TYPES
        },
        "commands": {
            cls.NAME: {"description": (cls.__doc__ or "").strip(), "schema": cls.model_json_schema(by_alias=True)}
            for cls in COMMAND_TYPES
        },
        "queries": {cls.NAME: {"schema": cls.model_json_schema(by_alias=True)} for cls in QUERY_TYPES},
        "results": {
            "command": CommandResult.model_json_schema(by_alias=True),
            "query": QueryResult.model_json_schema(by_alias=True),
        },
    }


def _channel_id(cls: type[EventBase]) -> str:
    return cls.type_name().replace(".", "_")


def _key_parameter(cls: type[EventBase]) -> tuple[str, str]:
    if cls.DOMAIN in {"call", "recording", "voice", "crm", "routing"} or cls.NAME in {"claimed", "released"}:
        return "call_id", "The hub's call id (a ULID)."
    if cls.DOMAIN in {"presence", "queue"}:
        return "extension", "The extension the event is about."
    if cls.NAME == "registered":
        return "agent", "The agent's name."
    return "key", "The call id when the event is about a call, else '_'."


def asyncapi_document() -> dict[str, Any]:
    """AsyncAPI 3.0: one channel per event type (not one wildcard channel), with its subject parameters."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for cls in EVENT_TYPES:
        cid = _channel_id(cls)
        key, key_doc = _key_parameter(cls)
        message_name = cls.__name__
        schema = cls.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas[name] = definition
        schemas[message_name] = schema
        messages[message_name] = {
            "name": message_name,
            "title": cls.type_name(),
            "summary": cls.DESCRIPTION,
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "Nats-Msg-Id": {"type": "string", "description": "The event id: JetStream deduplicates on it."},
                },
            },
            "payload": {"$ref": f"#/components/schemas/{message_name}"},
        }
        channels[cid] = {
            "address": f"ml.evt.{{pbx}}.{cls.DOMAIN}.{{{key}}}.{cls.NAME}",
            "title": cls.type_name(),
            "description": f"{cls.DESCRIPTION} Schema version {cls.VERSION}.",
            "parameters": {
                "pbx": {"description": "The configured pbx id ([a-z0-9-]+)."},
                key: {"description": key_doc},
            },
            "messages": {message_name: {"$ref": f"#/components/messages/{message_name}"}},
        }
        operations[f"publish_{cid}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"The hub publishes {cls.type_name()}.",
            "messages": [{"$ref": f"#/channels/{cid}/messages/{message_name}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "MasterLinc events",
            "version": CONTRACT_VERSION,
            "description": "Typed, versioned events the MasterLinc hub publishes about a 3CX phone system.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {"host": "127.0.0.1:4222", "protocol": "nats", "description": "NATS JetStream (stream ML_EVENTS)."}
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
