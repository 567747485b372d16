"""A failed soak writes the journal and the log of the calls its verdicts name (hub.soak.evidence)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hub.simulator.journal import Journal
from hub.soak.evidence import call_evidence, write_evidence


def _journal() -> Journal:
    j = Journal()
    j.add(100.0, "state", callid=1, dn="800", participant_id=7, legid=1, old_status=None, new_status="Connected")
    j.add(100.5, "request", detail={"method": "GET", "path": "/callcontrol", "status": 200})
    j.add(100.6, "state", callid=2, dn="800", participant_id=8, legid=1, old_status=None, new_status="Connected")
    j.add(101.0, "ws", detail={"action": "closed", "connections": 0})
    j.add(103.0, "state", callid=1, dn="800", participant_id=7, legid=1, old_status="Connected", new_status=None)
    j.add(103.4, "request", detail={"method": "GET", "path": "/callcontrol/800/participants/8", "status": 200})
    j.add(104.0, "request", detail={"method": "GET", "path": "/callcontrol/800/participants/7", "status": 404})
    return j


def _event(kind: str, at: float, *, leg: bool = True, inferred: bool = False) -> Any:
    return SimpleNamespace(type=f"call.{kind}", pbx_call_id=1, inferred=inferred,
                           occurred_at=datetime.fromtimestamp(at, UTC),
                           leg=SimpleNamespace(dn="800", participant_id=7, legid=1) if leg else None)  # fmt: skip


def test_the_evidence_shows_the_calls_journal_with_the_link_and_kill_marks_beside_its_events() -> None:
    entries = _journal().entries
    events = [_event("created", 100.0, leg=False), _event("answered", 100.0), _event("ended", 103.2, leg=False,
                                                                                     inferred=True)]  # fmt: skip
    text = call_evidence(entries, events, [1], cuts=[3])
    lines = text.splitlines()
    assert lines[0] == "call 1"
    journal = [line for line in lines if line.startswith("  #")]
    assert len(journal) == 5  # its transitions, the re-read, the websocket close, its leg's late read; not call 2
    assert "800 p7 leg1 None -> Connected" in journal[0] and "0.000s" in journal[0]
    assert "path=/callcontrol" in journal[1]
    assert "action=closed" in journal[2] and journal[2].endswith("<- ingest killed")
    assert "Connected -> None" in journal[3] and "3.000s" in journal[3]
    assert "path=/callcontrol/800/participants/7 status=404" in journal[4]  # it asked after the leg was gone
    assert "call.answered 800 p7 leg1" in text and "3.200s call.ended inferred" in text
    assert "leg_removed" not in text  # what the hub did not log is visible by its absence


def test_a_call_with_no_event_says_so_and_nothing_is_written_for_no_call(tmp_path: Path) -> None:
    entries = _journal().entries
    assert "hub's events: none" in call_evidence(entries, [], [2])
    assert write_evidence(tmp_path / "d.txt", entries, [], []) is None
    assert not (tmp_path / "d.txt").exists()
    written = write_evidence(tmp_path / "d.txt", entries, [], [2])
    assert written == tmp_path / "d.txt" and written.read_text().startswith("call 2\n")
