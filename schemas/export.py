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


def _kind(schema: dict[str, Any], prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        target = schema.get("$defs", {}).get(prop["$ref"].rsplit("/", 1)[1], {})
        if "enum" in target:
            return "one of " + ", ".join(f"`{v}`" for v in target["enum"])
        return f"object ({prop['$ref'].rsplit('/', 1)[1]})"
    if "anyOf" in prop:
        return " or ".join(_kind(schema, p) for p in prop["anyOf"])
    if prop.get("type") == "array":
        return f"list of {_kind(schema, prop.get('items', {}))}"
    return str(prop.get("type", "any"))


def _field_rows(schema: dict[str, Any], model: dict[str, Any]) -> list[str]:
    rows = []
    required = set(model.get("required", []))
    for name, prop in model.get("properties", {}).items():
        desc = str(prop.get("description", "")).replace("|", "\\|")
        rows.append(f"| `{name}` | {_kind(schema, prop)} | {'yes' if name in required else ''} | {desc} |")
    return rows


def catalogue_markdown() -> str:
    """docs/events.md: every event type with its subject, version, meaning and data fields."""
    lines = [
        "# Event catalogue",
        "",
        "Generated by `masterlinc schema catalogue` from the models in `schemas/events.py`; do not edit by hand.",
        "Every event carries the envelope: `event_id`, `type`, `schema_version`, `pbx_id`, `call_id`, `pbx_call_id`,",
        "`leg` {dn, participant_id, legid}, `seq` {epoch, counter}, `occurred_at`, `observed_at`, `inferred`,",
        "`correlation_id`, `issued_by`, and `data` as below.",
        "",
        "| type | version | subject | meaning |",
        "|---|---|---|---|",
    ]
    for cls in EVENT_TYPES:
        key, _ = _key_parameter(cls)
        subject = f"`ml.evt.<pbx>.{cls.DOMAIN}.<{key}>.{cls.NAME}`"
        anchor = cls.type_name().replace(".", "")
        lines.append(f"| [`{cls.type_name()}`](#{anchor}) | {cls.VERSION} | {subject} | {cls.DESCRIPTION} |")
    for cls in EVENT_TYPES:
        schema = cls.model_json_schema(by_alias=True)
        data_ref = schema["properties"]["data"]["$ref"].rsplit("/", 1)[1]
        data = schema["$defs"][data_ref]
        lines += [
            "",
            f"## {cls.type_name()}",
            "",
            cls.DESCRIPTION,
            "",
            "| data field | type | required | notes |",
            "|---|---|---|---|",
        ]
        lines += _field_rows(schema, data) or ["| (none) | | | |"]
    return "\n".join(lines) + "\n"
