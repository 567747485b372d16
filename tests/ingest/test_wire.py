"""Frame and participant parsing: property-based, malformed input is a FrameError (counted), never a crash."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.ingest.wire import FrameError, parse_frame, parse_participant

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_bytes_parse_or_raise_frame_error(data: bytes | str) -> None:
    try:
        parse_frame(data)
    except FrameError as exc:
        reason = exc.reason
        assert reason


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {"sequence": JSON, "event": st.fixed_dictionaries({"event_type": JSON, "entity": JSON, "attached_data": JSON})}
    )
)
def test_frames_with_any_field_values_parse_or_raise_frame_error(raw: dict[str, Any]) -> None:
    try:
        frame = parse_frame(json.dumps(raw))
    except FrameError:
        return
    assert frame.kind in {"upsert", "remove", "dtmf", "ignored"}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "dn", "status", "callid", "legid", "party_dn", "direct_control"]), JSON))
def test_participants_with_any_field_values_parse_or_raise_frame_error(raw: dict[str, Any]) -> None:
    try:
        leg = parse_participant(raw)
    except FrameError:
        return
    assert leg.participant.status and leg.participant.dn


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["101", "800", "sp-1"]), st.sampled_from([0, 1]))
def test_well_formed_frames_round_trip(pid: int, dn: str, kind: int) -> None:
    entity = f"/callcontrol/{dn}/participants/{pid}"
    frame = parse_frame(json.dumps({"sequence": 5, "event": {"event_type": kind, "entity": entity}}))
    assert (frame.kind, frame.dn, frame.participant_id, frame.sequence) == (
        ["upsert", "remove"][kind], dn, pid, 5,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("[1]", "expected a JSON object"),
        ('{"event": {"entity": "/callcontrol/1/participants/2"}}', "no event_type"),
        ('{"event": {"event_type": 0, "entity": "/x"}}', "is not /callcontrol"),
        ('{"event": {"event_type": 2, "entity": "/callcontrol/800/participants/2", "attached_data": {}}}', "DTMF"),
        ('{"event": {"event_type": 0, "entity": "/callcontrol/800/participants/two"}}', "entity id"),
    ],
)
def test_malformed_frames_say_what_is_wrong(raw: str, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        parse_frame(raw)


def test_numbers_sent_as_strings_and_unknown_event_types_are_tolerated() -> None:
    frame = parse_frame('{"sequence": "x", "event": {"event_type": "0", "entity": "/callcontrol/800/participants/"'
                        ' "7"}}'.replace('/" "7"', '/7"'))  # fmt: skip
    assert (frame.kind, frame.participant_id, frame.sequence) == ("upsert", 7, None)
    assert parse_frame('{"event": {"event_type": 4, "entity": "/callcontrol/800/participants/7"}}').kind == "ignored"
    assert parse_frame('{"event": {"event_type": 0, "entity": "/callcontrol/800/devices/sip:1"}}').kind == "ignored"
    leg = parse_participant({"id": "6", "dn": "209", "status": "Connected", "callid": "2", "legid": 2})
    assert (leg.participant.participant_id, leg.callid, leg.key) == (6, 2, "209:6:2")
