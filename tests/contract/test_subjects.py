"""Subjects are derived from the models and every token is validated (D§3)."""

from __future__ import annotations

import pytest

from schemas import events, subjects
from schemas.identity import deterministic_event_id, leg_event_id
from schemas.tokens import InvalidTokenError, check_pbx_id, check_token
from tests.factories import make_event


def test_call_event_subject_uses_the_call_id_as_key() -> None:
    event = make_event(events.CallAnswered, pbx_id="main", call_id="01JCALL")
    assert subjects.event_subject(event) == "ml.evt.main.call.01JCALL.answered"


def test_events_about_a_call_are_keyed_by_call_whatever_their_domain() -> None:
    for cls in (events.CommandAccepted, events.RecordingStarted, events.AgentClaimedCall, events.VoiceTurn):
        event = make_event(cls, call_id="01JCALL")
        assert subjects.event_subject(event).split(".")[4] == "01JCALL"


def test_presence_is_keyed_by_extension_and_links_by_underscore() -> None:
    assert subjects.event_subject(make_event(events.PresenceChanged)) == "ml.evt.main.presence.101.changed"
    assert subjects.event_subject(make_event(events.LinkResynced)) == "ml.evt.main.link._.resynced"
    assert subjects.event_subject(make_event(events.AgentRegistered)) == "ml.evt.main.agent.routing.registered"


def test_filters() -> None:
    assert subjects.call_filter("01JCALL") == "ml.evt.*.*.01JCALL.*"
    assert subjects.type_filter(events.CallEnded) == "ml.evt.*.call.*.ended"
    assert subjects.pbx_filter("main") == "ml.evt.main.>"
    assert subjects.event_filter() == "ml.evt.>"
    assert subjects.event_filter(domain="presence", pbx_id="b") == "ml.evt.b.presence.*.*"


def test_filter_rejects_contradictions_and_unknown_domains() -> None:
    with pytest.raises(ValueError, match="contradicts"):
        subjects.event_filter(event_type=events.CallEnded, domain="presence")
    with pytest.raises(ValueError, match="unknown domain 'calls'"):
        subjects.event_filter(domain="calls")


def test_command_query_token_and_dlq_subjects() -> None:
    from tests.factories import command_samples

    drop = next(c for c in command_samples("pbx-2") if c.NAME == "drop")
    assert subjects.command_subject(drop) == "ml.cmd.pbx-2.drop"
    assert subjects.token_subject("main") == "ml.int.main.token"
    assert subjects.dlq_subject("recorder") == "ml.dlq.recorder"
    assert subjects.commands_filter() == "ml.cmd.*.*"


def test_sandbox_subject_wraps_the_original() -> None:
    original = "ml.evt.main.call.01J.ended"
    sandboxed = subjects.sandbox_subject("run1", original)
    assert sandboxed == "ml.sbx.run1.evt.main.call.01J.ended"
    assert subjects.parse_event_subject(sandboxed) == subjects.parse_event_subject(original)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("a.b", "'.'"),
        ("*", "'*'"),
        (">", "'>'"),
        ("a b", "<space>"),
        ("", "empty"),
        ("x" * 200, "longer than"),
        ("ml.evt.>", "'.>'"),
        ("call/../x", "'./'"),
    ],
)
def test_tokens_reject_dots_wildcards_and_spaces(value: str, problem: str) -> None:
    with pytest.raises(InvalidTokenError) as info:
        check_token(value, "call id")
    assert "call id" in str(info.value)
    assert problem in str(info.value)


def test_tokens_accept_ulids_and_names() -> None:
    assert check_token("01JCALLXYZ_a-b") == "01JCALLXYZ_a-b"


@pytest.mark.parametrize("value", ["Main", "main.1", "-main", "main pbx", "", "a" * 64])
def test_pbx_ids_are_short_lowercase_names(value: str) -> None:
    with pytest.raises(InvalidTokenError, match="pbx id"):
        check_pbx_id(value)


def test_an_event_with_an_injected_call_id_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="call_id\n  String should match pattern"):
        make_event(events.CallEnded, call_id="x.*.>")


def test_deterministic_event_ids_are_stable_and_distinct() -> None:
    a = leg_event_id("main", "01J", "209:6:2", "answered", 0)
    assert a == leg_event_id("main", "01J", "209:6:2", "answered", 0)
    assert a != leg_event_id("main", "01J", "209:6:2", "answered", 1)
    assert a != leg_event_id("main", "01K", "209:6:2", "answered", 0)
    # the separator cannot be forged by concatenation
    assert deterministic_event_id("ab", "c") != deterministic_event_id("a", "bc")
