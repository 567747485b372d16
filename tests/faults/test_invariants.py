"""The fault suite's invariants (hub.soak.invariants): each passes on a faithful log and fails on a wrong one."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hub.simulator.journal import Journal
from hub.simulator.projection import Outage
from hub.soak.invariants import (
    Recovery,
    commands_once,
    event_ids_once,
    failed,
    inferred_only_hidden,
    outages_of,
    recovered,
    transitions_once,
)


def _journal() -> Journal:
    """One call to the route point: it rings, is answered, and goes."""
    j = Journal()
    j.add(0.0, "state", callid=1, dn="800", participant_id=7, legid=1, old_status=None, new_status="Ringing")
    j.add(0.1, "state", callid=1, dn="800", participant_id=7, legid=1, old_status="Ringing", new_status="Connected")
    j.add(2.0, "state", callid=1, dn="800", participant_id=7, legid=1, old_status="Connected", new_status=None)
    return j


def _event(kind: str, *, inferred: bool = False, leg: bool = True) -> Any:
    return SimpleNamespace(type=f"call.{kind}", pbx_call_id=1, inferred=inferred,
                           leg=SimpleNamespace(dn="800", participant_id=7, legid=1) if leg else None)  # fmt: skip


def _faithful() -> list[Any]:
    return [_event("created", leg=False), _event("ringing"), _event("answered"), _event("leg_removed"),
            _event("ended", leg=False)]  # fmt: skip


def _visible(dn: str) -> bool:
    return dn == "800"


def test_a_faithful_log_passes_every_transition_once() -> None:
    verdict = transitions_once(_journal().entries, _visible, _faithful(), end_grace_s=0.5)
    assert verdict.ok, verdict.detail


def test_a_lost_transition_fails_and_is_named() -> None:
    events = [e for e in _faithful() if e.type != "call.answered"]
    verdict = transitions_once(_journal().entries, _visible, events, end_grace_s=0.5)
    assert not verdict.ok
    assert "missing" in verdict.detail and "answered" in verdict.detail
    assert verdict.calls == (1,)


def test_a_transition_logged_twice_fails() -> None:
    verdict = transitions_once(_journal().entries, _visible, [*_faithful(), _event("ringing")], end_grace_s=0.5)
    assert not verdict.ok
    assert "extra" in verdict.detail


def test_an_outage_is_read_from_the_journal_and_expects_the_net_difference_inferred() -> None:
    j = Journal()
    j.add(0.0, "state", callid=1, dn="800", participant_id=7, legid=1, old_status=None, new_status="Ringing")
    j.add(0.5, "ws", detail={"action": "closed"})
    j.add(0.6, "state", callid=1, dn="800", participant_id=7, legid=1, old_status="Ringing", new_status="Connected")
    j.add(0.8, "ws", detail={"action": "connected"})
    j.add(0.9, "request", detail={"method": "GET", "path": "/callcontrol", "status": 200})
    assert outages_of(j.entries) == [Outage(1, 4)]
    live = [_event("created", leg=False), _event("ringing")]
    ok = transitions_once(j.entries, _visible, [*live, _event("answered", inferred=True)], end_grace_s=0.5)
    assert ok.ok, ok.detail
    assert inferred_only_hidden(j.entries, [*live, _event("answered", inferred=True)]).ok


def test_an_inferred_event_outside_any_outage_fails() -> None:
    events = [*_faithful()[:2], _event("answered", inferred=True), *_faithful()[3:]]
    assert transitions_once(_journal().entries, _visible, events, end_grace_s=0.5).ok  # once, whatever the flag
    verdict = inferred_only_hidden(_journal().entries, events)
    assert not verdict.ok and "[1]" in verdict.detail


def test_a_cut_opens_an_outage_before_the_simulator_saw_the_socket_close() -> None:
    j = _journal()
    j.add(3.0, "ws", detail={"action": "closed"})
    j.add(3.05, "request", detail={"method": "GET", "path": "/callcontrol", "status": 200})  # the new ingest's probe
    j.add(3.08, "ws", detail={"action": "connected"})
    j.add(3.1, "request", detail={"method": "GET", "path": "/callcontrol", "status": 200})  # its re-read
    assert outages_of(j.entries, cuts=[1]) == [Outage(1, 6)]
    assert outages_of(j.entries) == [Outage(3, 6)]


def test_an_outage_still_open_at_the_end_hides_the_rest_of_the_journal() -> None:
    j = _journal()
    j.add(3.0, "ws", detail={"action": "closed"})
    assert outages_of(j.entries) == [Outage(3, 4)]


def test_event_ids_once_fails_on_a_repeated_id() -> None:
    assert event_ids_once(["a", "b", "c"]).ok
    verdict = event_ids_once(["a", "b", "a"])
    assert not verdict.ok and "1 ids repeated" in verdict.detail


def _request(j: Journal, path: str, status: int = 200, method: str = "POST") -> None:
    j.add(0.0, "request", detail={"method": method, "path": path, "status": status})


def test_commands_once_fails_when_one_action_succeeded_twice_on_a_participant() -> None:
    j = Journal()
    _request(j, "/callcontrol/800/participants/7/routeto")
    _request(j, "/callcontrol/800/participants/8/routeto")
    _request(j, "/callcontrol/800/participants/8/drop", status=503)  # refused: not executed
    _request(j, "/callcontrol/800/participants/8/drop")
    _request(j, "/callcontrol/800/participants", method="GET")
    _request(j, "/callcontrol/800/participants/8/stream")  # audio played again (a prompt's retry): not an action
    _request(j, "/callcontrol/800/participants/8/stream")
    assert commands_once(j.entries).ok
    _request(j, "/callcontrol/800/participants/7/routeto")
    verdict = commands_once(j.entries)
    assert not verdict.ok and "participants/7/routeto" in verdict.detail


def test_recovered_fails_when_a_fault_never_recovered_or_took_too_long() -> None:
    assert recovered([Recovery("nats", 2.0), Recovery("recorder", 1.0)], within_s=30).ok
    assert not recovered([Recovery("nats", None)], within_s=30).ok
    slow = recovered([Recovery("nats", 45.0)], within_s=30)
    assert not slow.ok and "nats" in slow.detail
    assert not recovered([], within_s=30).ok  # a run that injected nothing proves nothing


def test_failed_keeps_only_the_failing_verdicts() -> None:
    verdicts = [event_ids_once(["a"]), event_ids_once(["a", "a"])]
    assert [v.name for v in failed(verdicts)] == ["each event id once"]
    assert failed(verdicts)[0].line().startswith("FAIL")


def test_a_call_whose_legs_were_all_fleeting_may_come_back_inferred_from_the_history() -> None:
    j = Journal()
    j.add(0.0, "state", callid=1, dn="800", participant_id=7, legid=1, old_status=None, new_status="Ringing")
    j.add(0.3, "state", callid=1, dn="800", participant_id=7, legid=1, old_status="Ringing", new_status=None)
    rebuilt = [_event("created", inferred=True, leg=False), _event("ended", inferred=True, leg=False)]
    assert inferred_only_hidden(j.entries, rebuilt).ok  # gone 0.3 s after it appeared
    assert not inferred_only_hidden(j.entries, rebuilt, fleeting_s=0.2).ok
    assert not inferred_only_hidden(_journal().entries, rebuilt).ok  # a leg that lived 2 s was there to be read


def _with_a_second_leg(lived_s: float, read_status: int) -> Journal:
    """The call of :func:`_journal`, plus a leg ringing at the safe route (100) for ``lived_s``, read once."""
    j = _journal()
    j.add(0.5, "state", callid=1, dn="100", participant_id=9, legid=2, old_status=None, new_status="Ringing")
    _request(j, "/callcontrol/100/participants/9", method="GET", status=read_status)
    j.add(0.5 + lived_s, "state", callid=1, dn="100", participant_id=9, legid=2, old_status="Ringing",
          new_status=None)  # fmt: skip
    return j


def test_a_leg_gone_before_its_read_answered_may_be_missing_and_nothing_else() -> None:
    """3CX's frames carry no state: a leg whose only read answered 404 was never knowable (the soak's safe-route
    legs, rung for a fraction of a second before the caller hung up). One the hub read, or that lived long, was."""

    def everywhere(dn: str) -> bool:
        return dn in {"800", "100"}

    verdict = transitions_once(_with_a_second_leg(0.3, 404).entries, everywhere, _faithful(), end_grace_s=0.2)
    assert verdict.ok and "1 legs gone before" in verdict.detail
    read = transitions_once(_with_a_second_leg(0.3, 200).entries, everywhere, _faithful(), end_grace_s=0.2)
    assert not read.ok and "missing (1, '100', 9, 2, 'ringing')" in read.detail
    lived = transitions_once(_with_a_second_leg(1.5, 404).entries, everywhere, _faithful(), end_grace_s=0.2)
    assert not lived.ok
    lost_on_800 = [ev for ev in _faithful() if ev.type != "call.answered"]
    assert not transitions_once(_with_a_second_leg(0.3, 404).entries, everywhere, lost_on_800, end_grace_s=0.2).ok


def test_what_a_killed_ingest_had_not_published_may_be_missing_but_nothing_else_and_never_twice() -> None:
    """SIGKILL loses what ingest had read but not yet published; a leg gone before the next leader's re-read
    leaves nothing to rebuild its last transitions from. Only transitions within the slack before the kill."""
    j = _journal()  # rings at 0.0, answered at 0.1, gone at 2.0
    j.add(2.5, "ws", detail={"action": "other"})  # index 3: ingest killed here
    j.add(3.0, "request", detail={"method": "GET", "path": "/callcontrol", "status": 200})
    published = [_event("created", leg=False), _event("ringing"), _event("answered")]
    verdict = transitions_once(j.entries, _visible, published, end_grace_s=0.2, cuts=[3], crash_slack_s=1.0)
    assert verdict.ok and "2 transitions a killed ingest had not yet published" in verdict.detail
    no_answer = [_event("created", leg=False), _event("ringing")]  # the answer, 2.4 s before the kill, is lost
    assert not transitions_once(j.entries, _visible, no_answer, end_grace_s=0.2, cuts=[3], crash_slack_s=1.0).ok
    twice = [*published, _event("ringing")]
    assert not transitions_once(j.entries, _visible, twice, end_grace_s=0.2, cuts=[3], crash_slack_s=1.0).ok
    assert not transitions_once(j.entries, _visible, published, end_grace_s=0.2, crash_slack_s=1.0).ok  # no kill
