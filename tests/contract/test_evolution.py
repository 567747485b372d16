"""Schema evolution: snapshots stay stable, old versions upcast, and the contract stays readable for old events."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from schemas import codec, events
from schemas.compat import check_compatibility, latest_snapshot
from schemas.export import asyncapi_document, contract_document, to_json
from schemas.upcast import UnsupportedVersionError, upcast

ROOT = Path(__file__).resolve().parents[2]
REGEN = "regenerate with `masterlinc schema export -o docs/contract/contract.json` (and `schema asyncapi`)"


def test_json_schema_export_matches_the_committed_snapshot() -> None:
    committed = (ROOT / "docs/contract/contract.json").read_text()
    assert to_json(contract_document()) == committed, f"the contract changed: review the diff, then {REGEN}"


def test_asyncapi_export_matches_the_committed_snapshot() -> None:
    committed = (ROOT / "docs/contract/asyncapi.json").read_text()
    assert to_json(asyncapi_document()) == committed, f"the AsyncAPI document changed: {REGEN}"


def test_asyncapi_has_one_channel_per_event_type_with_its_parameters() -> None:
    doc = asyncapi_document()
    assert doc["asyncapi"].startswith("3.")
    assert len(doc["channels"]) == len(events.EVENT_TYPES)
    for channel in doc["channels"].values():
        address: str = channel["address"]
        assert ">" not in address and "*" not in address
        placeholders = {part[1:-1] for part in address.split(".") if part.startswith("{")}
        assert placeholders == set(channel["parameters"])
        for ref in channel["messages"].values():
            name = ref["$ref"].rsplit("/", 1)[1]
            payload_ref = doc["components"]["messages"][name]["payload"]["$ref"]
            assert payload_ref.rsplit("/", 1)[1] in doc["components"]["schemas"]
    assert {op["action"] for op in doc["operations"].values()} == {"send"}


def test_the_contract_is_compatible_with_the_last_released_snapshot() -> None:
    version, snapshot = latest_snapshot()
    assert check_compatibility(snapshot) == [], f"incompatible with released contract {version}"


def _snapshot() -> dict[str, Any]:
    return copy.deepcopy(latest_snapshot()[1])


def test_compatibility_check_catches_a_removed_field() -> None:
    snapshot = _snapshot()
    props = snapshot["call.dtmf"]["schema"]["$defs"]["DtmfData"]["properties"]
    props["duration_ms"] = {"type": "integer"}
    assert any("duration_ms was removed" in p for p in check_compatibility(snapshot))


def test_compatibility_check_catches_a_newly_required_field() -> None:
    snapshot = _snapshot()
    snapshot["link.connected"]["schema"]["required"].remove("occurred_at")
    assert any("occurred_at is newly required" in p for p in check_compatibility(snapshot))


def test_compatibility_check_catches_a_version_bump_without_upcaster() -> None:
    snapshot = _snapshot()
    snapshot["call.answered"]["version"] = 0
    assert any("no upcaster path" in p for p in check_compatibility(snapshot))


def test_compatibility_check_catches_a_removed_type() -> None:
    snapshot = _snapshot()
    snapshot["call.teleported"] = {"version": 1, "schema": {}}
    assert "call.teleported: the type was removed" in check_compatibility(snapshot)


V1_CALL_ENDED = {
    "type": "call.ended",
    "schema_version": 1,
    "event_id": "0b7c8a3e-2c0f-5f71-9d0e-7c0b2f3c1a11",
    "pbx_id": "main",
    "call_id": "01JCALL",
    "occurred_at": "2026-01-01T10:00:00Z",
    "data": {"cause": "Hangup", "duration": 42},
}


def test_an_old_call_ended_is_read_as_the_current_version() -> None:
    event = codec.event_from_dict(copy.deepcopy(V1_CALL_ENDED))
    assert isinstance(event, events.CallEnded)
    assert event.schema_version == 2
    assert event.data.cause is events.EndCause.COMPLETED
    assert event.data.answered is True
    assert event.data.talk_seconds == 42.0


def test_upcasting_does_not_modify_its_input() -> None:
    raw = copy.deepcopy(V1_CALL_ENDED)
    upcast(raw)
    assert raw == V1_CALL_ENDED


@pytest.mark.parametrize(("cause", "expected"), [("busy", "rejected"), ("whatever", "unknown"), ("", "unknown")])
def test_v1_causes_map_onto_the_closed_set(cause: str, expected: str) -> None:
    raw = copy.deepcopy(V1_CALL_ENDED) | {"data": {"cause": cause, "duration": None}}
    assert upcast(raw)["data"]["cause"] == expected


def test_a_version_from_the_future_is_refused_with_what_to_do() -> None:
    raw = copy.deepcopy(V1_CALL_ENDED) | {"schema_version": 9}
    with pytest.raises(UnsupportedVersionError, match="upgrade masterlinc"):
        upcast(raw)
    with pytest.raises(codec.DecodeError, match="newer than this hub"):
        codec.parse_event(json.dumps(raw))


def test_event_catalogue_matches_the_committed_docs() -> None:
    from schemas.export import catalogue_markdown

    committed = (ROOT / "docs/events.md").read_text()
    assert catalogue_markdown() == committed, "regenerate with `masterlinc schema catalogue -o docs/events.md`"
