"""The call record from events alone (no bus, no database): parties, times, outcome, transfers, late changes."""

from __future__ import annotations

from datetime import timedelta

from agents.crm import CallState, record_id
from schemas import events as ev
from tests.agents.support import PBX, ROUTE_POINT
from tests.crm.support import T0, CallStory


def build(story: CallStory, route_points: tuple[str, ...] = (ROUTE_POINT,)) -> CallState:
    state = CallState(pbx_id=PBX, call_id=story.call_id)
    for event in story.events:
        state.apply(event, route_points)
    return state


def test_a_routed_answered_and_transferred_call_gives_its_parties_times_and_transfers() -> None:
    story = CallStory.typical()
    record = build(story).record()
    assert record.record_id == record_id(PBX, story.call_id)
    assert (record.direction, record.caller.number, record.caller.name) == ("inbound", "+15550100", "Ann")
    assert (record.callee.number, record.did) == (ROUTE_POINT, "+15550199")
    # the route point answered at once, but the first person to answer was 101, four seconds after the routing
    assert (record.answered_by, record.answered_at) == ("101", T0 + timedelta(seconds=4.3))
    assert (record.ring_seconds, record.talk_seconds) == (4.3, 89.5)
    assert (record.outcome, record.end_cause, record.version) == ("answered", "completed", 1)
    assert [(s.kind, s.from_dn, s.to) for s in record.transfers] == [
        ("transfer", ROUTE_POINT, "101"),
        ("transfer", "101", "102"),
    ]
    assert [(r.rule, r.action, r.destination) for r in record.routing] == [("vip", "transfer", "101")]
    assert record.parties == [ROUTE_POINT, "101", "102"]
    assert record.ended_at == T0 + timedelta(seconds=93.8)


def test_without_known_route_points_the_first_answer_counts() -> None:
    record = build(CallStory.typical(), route_points=()).record()
    assert record.answered_by == ROUTE_POINT
    assert record.ring_seconds == 0.05


def test_a_call_nobody_answered_is_missed_and_rang_until_it_ended() -> None:
    story = CallStory()
    rp = story.leg(ROUTE_POINT)
    story.created(0).answered(rp, 0.05).removed(rp, 12.0).ended(12.5, ev.EndCause.COMPLETED)
    record = build(story).record()
    assert (record.outcome, record.answered_by, record.answered_at) == ("missed", None, None)
    assert (record.ring_seconds, record.talk_seconds) == (12.5, 0.0)


def test_a_voice_agent_conversation_at_the_route_point_counts_as_answered_with_its_summary() -> None:
    story = CallStory()
    rp = story.leg(ROUTE_POINT)
    story.created(0).answered(rp, 0.05).transcript(20.0, "Caller wants a quote").removed(rp, 20.0).ended(20.5)
    record = build(story).record()
    assert (record.outcome, record.answered_by, record.summary) == ("answered", ROUTE_POINT, "Caller wants a quote")


def test_a_blocked_caller_is_rejected() -> None:
    story = CallStory()
    rp = story.leg(ROUTE_POINT)
    story.created(0).answered(rp, 0.05).routed(0.1, "blocked", "reject", "").removed(rp, 0.2).ended(0.7)
    assert build(story).record().outcome == "rejected"


def test_late_events_give_new_versions_and_repeats_change_nothing() -> None:
    story = CallStory.typical()
    state = build(story)
    assert state.version == 1
    assert not state.apply(story.events[-1])  # the same call.ended again: nothing new
    assert state.version == 1
    late = CallStory(call_id=story.call_id, start=story.start)
    late.transcript(95.0, "Quote for 12 seats").recording(96.0, "https://rec.example.com/a.wav")
    assert state.apply(late.events[0]) and state.version == 2
    assert state.apply(late.events[1]) and state.version == 3
    record = state.record()
    assert (record.version, record.summary, record.recording_url) == (3, "Quote for 12 seats",
                                                                      "https://rec.example.com/a.wav")  # fmt: skip


def test_before_the_end_changes_do_not_count_as_versions() -> None:
    story = CallStory.typical()
    state = CallState(pbx_id=PBX, call_id=story.call_id)
    for event in story.events[:-1]:
        state.apply(event, (ROUTE_POINT,))
    assert (state.version, state.ended) == (0, False)


def test_the_same_events_always_give_the_same_record() -> None:
    story = CallStory.typical()
    assert build(story).record() == build(story).record()
    assert build(story).record().model_dump_json() == build(story).record().model_dump_json()
