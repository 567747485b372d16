"""Round trips of every event, command and query type through JSON, and the envelope's rules."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest

from schemas import codec, commands, events
from schemas.common import ErrorCode
from tests.factories import EVENT_DATA, command_samples, make_event, query_samples


def test_every_event_type_has_a_sample() -> None:
    assert set(EVENT_DATA) == set(events.EVENT_TYPES)


@pytest.mark.parametrize("cls", events.EVENT_TYPES, ids=lambda c: c.type_name())
def test_event_round_trips_through_json(cls: type[events.EventBase]) -> None:
    event = make_event(cls)
    back = codec.parse_event(codec.dump_event(event))
    assert type(back) is cls
    assert back == event
    assert back.type == cls.type_name()
    assert back.schema_version == cls.VERSION


@pytest.mark.parametrize("command", command_samples(), ids=lambda c: c.NAME)
def test_command_round_trips_through_json(command: commands.CommandBase) -> None:
    back = codec.parse_command(codec.dump(command))
    assert type(back) is type(command)
    assert back == command


@pytest.mark.parametrize("query", query_samples(), ids=lambda q: q.NAME)
def test_query_round_trips_through_json(query: commands.QueryBase) -> None:
    back = codec.parse_query(codec.dump(query))
    assert back == query


def test_make_call_uses_from_on_the_wire() -> None:
    make_call = command_samples()[0]
    wire = json.loads(codec.dump(make_call))
    assert wire["args"]["from"] == "101"
    assert "from_" not in wire["args"]


def test_leg_command_without_a_target_is_rejected_with_what_to_give() -> None:
    with pytest.raises(codec.DecodeError, match="give both call_id and leg"):
        codec.parse_command(json.dumps({"type": "drop", "pbx_id": "main", "issued_by": "t"}))


def test_unknown_fields_are_rejected() -> None:
    raw = json.loads(codec.dump_event(make_event(events.CallAnswered)))
    raw["data"]["surprise"] = 1
    with pytest.raises(codec.DecodeError, match="surprise"):
        codec.event_from_dict(raw)


def test_unknown_event_type_is_a_decode_error() -> None:
    with pytest.raises(codec.DecodeError, match="unknown event type 'call.exploded'"):
        codec.event_from_dict({"type": "call.exploded"})


def test_not_json_is_a_decode_error() -> None:
    with pytest.raises(codec.DecodeError, match="not JSON"):
        codec.parse_event(b"\xff{")


def test_naive_datetimes_are_taken_as_utc() -> None:
    event = make_event(events.LinkConnected, occurred_at=datetime(2026, 1, 1, 8, 0))
    assert event.occurred_at.utcoffset() is not None
    assert event.occurred_at.isoformat() == "2026-01-01T08:00:00+00:00"


def test_dtmf_digits_are_validated() -> None:
    raw = json.loads(codec.dump_event(make_event(events.DtmfReceived)))
    raw["data"]["digits"] = "1; DROP TABLE"
    with pytest.raises(codec.DecodeError, match="data.digits"):
        codec.event_from_dict(raw)


def test_phone_numbers_in_commands_are_validated_with_a_hint() -> None:
    with pytest.raises(ValueError, match="should match pattern"):
        commands.MakeCallArgs.model_validate({"from": "101", "to": "+1 (555) 0100"})


def test_command_result_carries_an_error_exactly_when_failed() -> None:
    with pytest.raises(ValueError, match="exactly when ok is false"):
        commands.CommandResult(command_id="x", ok=False)
    failed = commands.CommandResult(
        command_id="x",
        ok=False,
        error={"code": "rate_limited", "message": "slow down"},
    )
    assert failed.error is not None and failed.error.retryable
    assert failed.error.code is ErrorCode.RATE_LIMITED


def test_call_history_window_must_not_be_inverted() -> None:
    with pytest.raises(ValueError, match="since is after until"):
        commands.CallHistoryArgs(since=datetime(2026, 2, 1), until=datetime(2026, 1, 1))


def test_event_ids_are_uuids() -> None:
    event = make_event(events.CallEnded)
    assert isinstance(event.event_id, uuid.UUID)
