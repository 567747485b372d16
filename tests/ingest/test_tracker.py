"""The sans-IO tracker: frames and reads in, observations and read requests out, without sockets."""

from __future__ import annotations

from typing import Any

import pytest

from hub.ingest.tracker import (
    CallGone,
    DtmfPressed,
    LegAppeared,
    LegChanged,
    LegRemoved,
    Observation,
    Read,
    Tracker,
)
from hub.ingest.wire import Frame, LegSnapshot, parse_participant


def leg(
    pid: int, status: str, *, dn: str = "101", callid: int = 7, legid: int | None = None, **extra: Any
) -> LegSnapshot:
    raw = {"id": pid, "dn": dn, "status": status, "callid": callid, "legid": legid if legid is not None else pid}
    raw.update(extra)
    return parse_participant(raw)


def up(dn: str, pid: int | None) -> Frame:
    return Frame("upsert", dn=dn, participant_id=pid)


def kinds(observations: list[Observation]) -> list[str]:
    return [type(o).__name__ for o in observations]


def test_an_upsert_asks_for_one_read_and_a_new_leg_appears_with_its_call() -> None:
    t = Tracker()
    assert t.frame(up("101", 5), 1.0) == []
    [read] = t.take_reads(1.0)
    assert (read.dn, read.participant_id) == ("101", 5)
    out = t.read_done(read, leg(5, "Ringing"), 1.1)
    assert kinds(out) == ["CallAppeared", "LegAppeared"]
    assert isinstance(out[1], LegAppeared) and out[1].leg.status == "Ringing" and not out[1].inferred


def test_an_unchanged_read_emits_nothing_and_a_status_change_is_one_observation() -> None:
    t = Tracker()
    t.frame(up("101", 5), 0)
    t.read_done(t.take_reads(0)[0], leg(5, "Ringing"), 0)
    t.frame(up("101", 5), 1)
    assert t.read_done(t.take_reads(1)[0], leg(5, "Ringing"), 1) == []
    t.frame(up("101", 5), 2)
    [changed] = t.read_done(t.take_reads(2)[0], leg(5, "Connected"), 2)
    assert isinstance(changed, LegChanged) and changed.status_changed and changed.previous.status == "Ringing"


def test_detail_changes_without_a_status_change_name_the_fields() -> None:
    t = Tracker()
    t.frame(up("101", 5), 0)
    t.read_done(t.take_reads(0)[0], leg(5, "Connected"), 0)
    t.frame(up("101", 5), 1)
    [changed] = t.read_done(t.take_reads(1)[0], leg(5, "Connected", party_caller_name="Dana"), 1)
    assert isinstance(changed, LegChanged)
    assert changed.changed == ("party_caller_name",) and not changed.status_changed


def test_upserts_while_a_read_is_in_flight_cause_exactly_one_more_read() -> None:
    t = Tracker()
    t.frame(up("101", 5), 0)
    [first] = t.take_reads(0)
    for i in range(5):
        t.frame(up("101", 5), 0.1 * i)
    assert t.take_reads(1) == []  # at most one read in flight per participant
    t.read_done(first, leg(5, "Ringing"), 1)
    [second] = t.take_reads(1)
    t.read_done(second, leg(5, "Connected"), 1.2)
    assert t.take_reads(2) == []
    assert t.stats.reads == 2 and t.stats.upserts == 6


def test_many_waiting_participants_of_one_dn_become_one_list_read() -> None:
    t = Tracker(max_inflight=1, list_threshold=3)
    t.frame(up("100", 1), 0)
    [blocking] = t.take_reads(0)
    for pid in (2, 3, 4, 5):
        t.frame(up("101", pid), 0)
    t.read_done(blocking, leg(1, "Ringing", dn="100", callid=1), 0)
    [listing] = t.take_reads(0)
    assert listing.participant_id is None and listing.dn == "101"
    out = t.list_done(listing, [leg(p, "Ringing", callid=10 + p) for p in (2, 3, 4, 5)], 0.1)
    assert kinds(out).count("LegAppeared") == 4
    assert t.stats.list_reads == 1 and t.stats.reads == 1


def test_a_404_after_an_upsert_is_a_removal() -> None:
    t = Tracker(end_grace_s=0)
    t.frame(up("101", 5), 0)
    t.read_done(t.take_reads(0)[0], leg(5, "Connected"), 0)
    t.frame(up("101", 5), 1)
    out = t.read_done(t.take_reads(1)[0], None, 1)
    assert kinds(out) == ["LegRemoved"]
    assert kinds(t.tick(1)) == ["CallGone"]


def test_a_leg_gone_before_its_first_read_is_counted_unseen_once() -> None:
    t = Tracker(end_grace_s=0)
    t.frame(up("101", 5), 0)
    assert t.frame(Frame("remove", dn="101", participant_id=5), 0) == []  # went before any read
    t.frame(Frame("remove", dn="101", participant_id=5), 0)  # a duplicate Remove is nothing new
    t.frame(up("101", 6), 1)
    assert t.read_done(t.take_reads(1)[0], None, 1) == []  # a 404 on the first read: gone unseen too
    t.frame(up("101", 7), 2)
    t.read_done(t.take_reads(2)[0], leg(7, "Ringing"), 2)
    assert kinds(t.frame(Frame("remove", dn="101", participant_id=7), 3)) == ["LegRemoved"]  # seen: not unseen
    assert t.stats.unseen == 2


def test_a_slow_read_never_resurrects_a_removed_leg() -> None:
    t = Tracker(end_grace_s=0)
    t.frame(up("101", 5), 0)
    t.read_done(t.take_reads(0)[0], leg(5, "Ringing"), 0)
    t.frame(up("101", 5), 1)
    [slow] = t.take_reads(1)
    assert kinds(t.frame(Frame("remove", dn="101", participant_id=5), 2)) == ["LegRemoved"]
    assert t.read_done(slow, leg(5, "Connected"), 3) == []  # started before the removal: stale
    assert t.stats.stale_results == 1
    assert kinds(t.tick(3)) == ["CallGone"]


def test_a_reused_participant_id_is_another_leg() -> None:
    t = Tracker(end_grace_s=0)
    t.frame(up("101", 5), 0)
    t.read_done(t.take_reads(0)[0], leg(5, "Connected", callid=7, legid=1), 0)
    t.frame(up("101", 5), 1)
    out = t.read_done(t.take_reads(1)[0], leg(5, "Ringing", callid=9, legid=4), 1)
    assert kinds(out) == ["LegRemoved", "CallAppeared", "LegAppeared"]


def test_a_call_is_gone_only_after_the_grace_and_a_transfer_keeps_it() -> None:
    t = Tracker(end_grace_s=0.5)
    t.frame(up("101", 5), 0)
    t.read_done(t.take_reads(0)[0], leg(5, "Connected", dn="101"), 0)
    t.frame(Frame("remove", dn="101", participant_id=5), 1.0)
    t.frame(up("102", 6), 1.0)
    out = t.read_done(t.take_reads(1.0)[0], leg(6, "Ringing", dn="102", referred_by_dn="101"), 1.1)
    [appeared] = out
    assert isinstance(appeared, LegAppeared)
    assert appeared.referred_by == "101" and appeared.source_status == "Connected"
    assert t.tick(2.0) == []  # the call goes on at 102
    t.frame(Frame("remove", dn="102", participant_id=6), 3.0)
    assert t.tick(3.2) == []
    [gone] = t.tick(3.5)
    assert isinstance(gone, CallGone) and gone.at == 3.0 and gone.last_leg.participant.dn == "102"


def test_a_call_whose_last_leg_goes_while_a_new_leg_is_being_read_ends_once() -> None:
    """Seen in a soak on a slow machine: the transfer's target appeared (its read in flight), then the caller hung
    up and both legs went; the route-point leg's removal was applied before that read's result, and the call ended
    twice (once at once, once with the target). Its end now waits for the read."""
    t = Tracker(end_grace_s=0.2)
    t.frame(up("800", 5), 0)
    t.read_done(t.take_reads(0)[0], leg(5, "Connected", dn="800"), 0)
    t.frame(up("100", 6), 1.0)  # the target: a leg the tracker cannot place in a call before its read
    [target] = t.take_reads(1.0)
    t.frame(Frame("remove", dn="800", participant_id=5), 1.1)
    assert t.tick(1.5) == []  # past the grace, but the read of a leg seen before the removal is owed
    out = t.read_done(target, leg(6, "Ringing", dn="100", referred_by_dn="800"), 1.6)
    assert kinds(out) == ["LegAppeared"]  # the same call goes on
    t.frame(Frame("remove", dn="100", participant_id=6), 1.7)
    assert t.tick(1.8) == []
    [gone] = t.tick(2.0)
    assert isinstance(gone, CallGone) and gone.at == 1.7 and gone.last_leg.participant.dn == "100"
    assert t.tick(10.0) == []


def test_a_call_s_end_waits_for_an_owed_read_only_so_long() -> None:
    t = Tracker(end_grace_s=0.2)
    t.frame(up("800", 5), 0)
    t.read_done(t.take_reads(0)[0], leg(5, "Connected", dn="800"), 0)
    t.frame(up("100", 6), 1.0)
    t.take_reads(1.0)  # a read that never answers
    t.frame(Frame("remove", dn="800", participant_id=5), 1.1)
    assert t.tick(5.0) == []
    [gone] = t.tick(6.2)  # NEW_LEG_WAIT_S after the leg went
    assert isinstance(gone, CallGone) and gone.at == 1.1
    t2 = Tracker(end_grace_s=0.2)  # a leg upserted after the removal does not hold the end
    t2.frame(up("800", 5), 0)
    t2.read_done(t2.take_reads(0)[0], leg(5, "Connected", dn="800"), 0)
    t2.frame(Frame("remove", dn="800", participant_id=5), 1.1)
    t2.frame(up("100", 7), 1.2)
    [late] = t2.tick(1.4)
    assert isinstance(late, CallGone)


def test_dtmf_for_a_known_leg_is_immediate_and_for_an_unknown_leg_waits_for_its_read() -> None:
    t = Tracker()
    t.frame(up("800", 5), 0)
    t.read_done(t.take_reads(0)[0], leg(5, "Connected", dn="800"), 0)
    [pressed] = t.frame(Frame("dtmf", dn="800", participant_id=5, digits="12"), 1)
    assert isinstance(pressed, DtmfPressed) and pressed.digits == "12"
    assert t.frame(Frame("dtmf", dn="800", participant_id=9, digits="#"), 2) == []
    [read] = t.take_reads(2)
    out = t.read_done(read, leg(9, "Connected", dn="800", callid=11), 2.1)
    assert kinds(out) == ["CallAppeared", "LegAppeared", "DtmfPressed"]
    assert isinstance(out[2], DtmfPressed) and out[2].at == 2


def test_a_snapshot_infers_what_the_outage_hid() -> None:
    t = Tracker()
    t.load([leg(5, "Ringing", dn="101", callid=7), leg(6, "Connected", dn="102", callid=8)])
    ticket = t.snapshot_ticket()
    out = t.snapshot_done(ticket, {"101": [leg(5, "Connected", dn="101", callid=7)], "102": [],
                                   "800": [leg(9, "Connected", dn="800", callid=12)]}, 5.0)  # fmt: skip
    assert all(getattr(o, "inferred", True) for o in out)
    assert kinds(out) == ["LegChanged", "LegRemoved", "CallAppeared", "LegAppeared", "CallGone"]
    assert isinstance(out[-1], CallGone) and out[-1].callid == 8


def test_a_failed_read_is_retried_after_the_backoff_and_a_403_uses_the_list() -> None:
    t = Tracker()
    t.frame(up("101", 5), 0)
    [read] = t.take_reads(0)
    t.read_failed(read, 0, backoff_s=1.0)
    assert t.take_reads(0.5) == []
    [again] = t.take_reads(1.0)
    assert again.participant_id == 5
    t.read_failed(again, 1.0, use_list=True)
    [listing] = t.take_reads(1.0)
    assert listing == Read(listing.ticket, "101", None)


def test_reads_stay_within_the_concurrency_bound() -> None:
    t = Tracker(max_inflight=4, list_threshold=100)
    for pid in range(20):
        t.frame(up(str(100 + pid), pid), 0)
    assert len(t.take_reads(0)) == 4
    assert t.take_reads(0) == []


def test_old_tickets_are_forgotten_once_nothing_can_answer_for_them() -> None:
    t = Tracker(end_grace_s=0)
    for pid in range(3000):
        t.frame(up("101", pid), 0)
        t.read_done(t.take_reads(0)[0], leg(pid, "Ringing", callid=pid), 0)
        t.frame(Frame("remove", dn="101", participant_id=pid), 0)
    t.tick(1)
    assert len(t._applied) < 1100


@pytest.mark.parametrize("threshold", [1, 0])
def test_bad_limits_are_refused(threshold: int) -> None:
    with pytest.raises(ValueError, match="list_threshold"):
        Tracker(list_threshold=threshold)


def test_new_participants_are_read_before_known_ones() -> None:
    t = Tracker(max_inflight=1, list_threshold=100)
    for pid in (1, 2):
        t.frame(up("800", pid), 0)
        t.read_done(t.take_reads(0)[0], leg(pid, "Connected", dn="800", callid=pid), 0)
    t.frame(up("100", 9), 0)  # blocks the only slot
    [blocking] = t.take_reads(0)
    t.frame(up("800", 1), 1)  # a known participant (probably a repeat)
    t.frame(up("800", 2), 2)
    t.frame(up("101", 7), 3)  # a new leg, upserted last
    t.read_done(blocking, leg(9, "Ringing", dn="100", callid=9), 3)
    order = []
    for _ in range(3):
        [read] = t.take_reads(4)
        order.append((read.dn, read.participant_id))
        t.read_done(read, None if read.dn == "101" else t.legs[(read.dn, read.participant_id or 0)], 4)
    assert order == [("101", 7), ("800", 1), ("800", 2)]


def test_a_big_dn_is_read_as_a_list_only_once_enough_of_it_waits() -> None:
    t = Tracker(max_inflight=1, list_threshold=3)
    t.load([leg(pid, "Connected", dn="800", callid=pid) for pid in range(320)])  # 1/32 of 320 = 10
    t.frame(up("100", 999), 0)
    [blocking] = t.take_reads(0)
    for pid in range(5):
        t.frame(up("800", pid), 0)
    t.read_done(blocking, None, 0)
    assert t.take_reads(0.01) == []  # known legs of a big DN wait briefly for company
    assert t.next_deadline() == pytest.approx(0.05)
    [read] = t.take_reads(0.05)
    assert read.participant_id == 0  # 5 waiting of 320 after the wait: single reads are cheaper
    for pid in range(5, 15):
        t.frame(up("800", pid), 0.05)
    t.read_done(read, t.legs[("800", 0)], 0.05)
    [listing] = t.take_reads(0.05)  # 13 waiting >= 320 / 32: one list read
    assert listing.participant_id is None and listing.dn == "800"
    for pid in range(40):
        t.frame(up("800", pid), 1.0)
    t.list_done(listing, [t.legs[("800", p)] for p in range(320)], 1.0)
    [at_once] = t.take_reads(1.0)  # 40 waiting >= 1/8 of the DN: no need to wait
    assert at_once.participant_id is None


def test_a_call_saved_without_legs_is_ended_by_the_first_full_read_unless_a_leg_is_back() -> None:
    """A leader that died in the grace after a call's last leg went left the call saved without legs."""
    t = Tracker()
    t.load([leg(5, "Connected", callid=7)], legless=[leg(6, "Connected", callid=8), leg(9, "Connected", callid=9)])
    ticket = t.snapshot_ticket()
    out = t.snapshot_done(ticket, {"101": [leg(5, "Connected", callid=7), leg(10, "Ringing", callid=9)]}, 3.0)
    [gone] = [o for o in out if isinstance(o, CallGone)]
    assert (gone.callid, gone.last_leg.participant.participant_id, gone.inferred) == (8, 6, True)
    assert 9 in t.calls and 8 not in t.calls  # call 9 has a leg again: it goes on


def test_provisional_legs_are_announced_when_still_there_and_removed_when_gone() -> None:
    """Legs saved with a new call's id before its events were acknowledged: the next leader cannot tell whether
    they went out, so one still there is announced again (same ids, deduplicated) and one gone is removed."""
    t = Tracker()
    t.load([], provisional=[leg(5, "Ringing", callid=7), leg(6, "Ringing", callid=8)])
    ticket = t.snapshot_ticket()
    out = t.snapshot_done(ticket, {"101": [leg(5, "Connected", callid=7)]}, 3.0)
    appeared = [o for o in out if isinstance(o, LegAppeared)]
    removed = [o for o in out if isinstance(o, LegRemoved)]
    gone = [o for o in out if isinstance(o, CallGone)]
    assert [(o.leg.participant.participant_id, o.inferred) for o in appeared] == [(5, True)]
    assert [(o.leg.participant.participant_id, o.inferred) for o in removed] == [(6, True)]
    assert [g.callid for g in gone] == [8]
    again = t.snapshot_done(t.snapshot_ticket(), {"101": [leg(5, "Connected", callid=7)]}, 4.0)
    assert again == []  # only the first full read after loading treats them so
