"""The rule loader: hours, holidays and timezones, caller and DID matches, and errors that name the line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.rules import CallContext, RuleError, RuleSet, load_rules, parse_rules

ACTIONS = {"transfer", "queue", "voicemail", "reject", "assign"}

RULES = """\
timezone: America/New_York
hours:
  mon-fri: "09:00-17:00"
  sat: "10:00-13:00"
holidays:
  2026-12-25: Christmas Day
lists:
  vip: ["+15550100", "+1555011*"]
  blocked: ["+1900*"]
rules:
  - name: blocked
    match: {caller_list: blocked}
    action: {reject: true}
  - name: holiday
    match: {when: holiday}
    action: {voicemail: "800"}
  - name: vip
    match: {caller_list: vip, when: open}
    action: {transfer: "101"}
  - name: support-line
    match: {did: "+1555020*", when: open}
    action: {queue: "8000"}
  - name: after-hours
    match: {when: closed}
    action: {voicemail: "800"}
default: {queue: "8001"}
"""

# 2026-11-23 is a Monday; New York is UTC-5 in November.
MON_10AM = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
MON_8PM = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
SAT_11AM = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)
SUN_11AM = datetime(2026, 11, 29, 16, 0, tzinfo=UTC)
CHRISTMAS_NOON = datetime(2026, 12, 25, 17, 0, tzinfo=UTC)


@pytest.fixture
def rules() -> RuleSet:
    return parse_rules(RULES, "rules.yaml", actions=ACTIONS)


@pytest.mark.parametrize(
    ("ctx", "expected"),
    [
        (CallContext(caller="+19005551234", at=MON_10AM), "blocked"),
        (CallContext(caller="+15550100", at=MON_10AM), "vip"),
        (CallContext(caller="+15550117", at=SAT_11AM), "vip"),
        (CallContext(caller="+15550100", at=MON_8PM), "after-hours"),
        (CallContext(caller="+15550100", at=SUN_11AM), "after-hours"),
        (CallContext(caller="+15550100", at=CHRISTMAS_NOON), "holiday"),
        (CallContext(caller="+15559999", did="+15550201", at=MON_10AM), "support-line"),
    ],
)
def test_first_matching_rule_wins(rules: RuleSet, ctx: CallContext, expected: str) -> None:
    rule = rules.first_match(ctx)
    assert rule is not None
    assert rule.name == expected


def test_no_match_falls_to_the_default(rules: RuleSet) -> None:
    assert rules.first_match(CallContext(caller="+15559999", did="+15559999", at=MON_10AM)) is None
    assert rules.default == {"queue": "8001"}


def test_rules_remember_their_line(rules: RuleSet) -> None:
    assert [r.line for r in rules.rules] == [11, 14, 17, 20, 23]


def test_a_window_across_midnight() -> None:
    text = (
        "timezone: UTC\nhours: {mon-sun: '22:00-06:00'}\n"
        "rules:\n  - {name: night, match: {when: open}, action: {queue: '1'}}\n"
    )
    rules = parse_rules(text)
    assert rules.first_match(CallContext(at=datetime(2026, 1, 1, 23, 30, tzinfo=UTC))) is not None
    assert rules.first_match(CallContext(at=datetime(2026, 1, 1, 5, 59, tzinfo=UTC))) is not None
    assert rules.first_match(CallContext(at=datetime(2026, 1, 1, 12, 0, tzinfo=UTC))) is None


@pytest.mark.parametrize(
    ("broken", "line", "problem"),
    [
        (RULES.replace("mon-fri", "mon-fry"), 3, "unknown weekday 'fry'"),
        (RULES.replace('"09:00-17:00"', '"9am-5pm"'), 3, "must look like 09:00-17:30"),
        (RULES.replace("America/New_York", "Mars/Olympus"), 1, "unknown timezone 'Mars/Olympus'"),
        (RULES.replace("{caller_list: vip, when: open}", "{caller_list: vips}"), 18, "'vips' is not defined"),
        (RULES.replace('{transfer: "101"}', '{teleport: "101"}'), 19, "unknown action 'teleport'"),
        (RULES.replace("match: {did:", "match: {dnis:"), 21, "unknown condition 'dnis'"),
        (RULES.replace("name: after-hours", "name: vip"), 23, "used twice"),
        (RULES.replace("2026-12-25", "2026-13-25"), 6, "not a date"),
        (RULES.replace("  - name: vip\n", "  - name: vip\n  bad: [\n"), 18, "not valid YAML"),
    ],
)
def test_errors_name_the_line_and_the_problem(broken: str, line: int, problem: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rules(broken, "rules.yaml", actions=ACTIONS)
    assert info.value.line == line, str(info.value)
    assert problem in info.value.problem
    assert str(info.value).startswith(f"rules.yaml:{line}: ")


def test_toml_works_the_same_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        'timezone = "Europe/London"\n'
        '[hours]\nmon-fri = "09:00-17:30"\n'
        '[lists]\nvip = ["+447700900*"]\n'
        '[[rules]]\nname = "vip"\nmatch = {caller_list = "vip"}\naction = {transfer = "101"}\n'
        '[[rules]]\nname = "rest"\nmatch = {when = "open"}\naction = {teleport = "1"}\n'
    )
    with pytest.raises(RuleError) as info:
        load_rules(path, actions=ACTIONS)
    assert info.value.line == 13
    assert "teleport" in info.value.problem
    path.write_text(path.read_text().replace("teleport", "queue"))
    rules = load_rules(path, actions=ACTIONS)
    assert [r.line for r in rules.rules] == [6, 10]
    match = rules.first_match(CallContext(caller="+447700900123", at=MON_10AM))
    assert match is not None
    assert match.action == {"transfer": "101"}


def test_a_missing_file_is_explained(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="cannot read the rule file"):
        load_rules(tmp_path / "nope.yaml")
