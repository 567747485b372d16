"""Assignment rules on the shared loader: candidates in order, safe routes, ignore, and errors that name the line."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.coordinator import AssignmentRules, Decision
from hub.rules import CallContext, RuleError
from tests.agents.support import CLI, cli_env

RULES = """\
timezone: Europe/London
hours: {mon-fri: "09:00-17:30"}
lists: {vip: ["+4420795*"]}
rules:
  - name: vip
    match: {caller_list: vip}
    action: {assign: [voice-vip, voice]}
  - name: night
    match: {when: closed}
    action: {safe_route: "8000"}
  - name: staff
    match: {caller: "1??"}
    action: {ignore: true}
default: {assign: voice}
"""

MON_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
MON_NIGHT = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ctx", "decision"),
    [
        (CallContext(caller="+442079500001", at=MON_NIGHT), Decision(rule="vip", agents=("voice-vip", "voice"))),
        (CallContext(caller="+15550100", at=MON_NIGHT), Decision(rule="night", safe_route="8000")),
        (CallContext(caller="101", at=MON_NOON), Decision(rule="staff", ignore=True)),
        (CallContext(caller="+15550100", at=MON_NOON), Decision(rule="default", agents=("voice",))),
    ],
)
def test_the_first_matching_rule_decides_who_handles_the_call(ctx: CallContext, decision: Decision) -> None:
    assert AssignmentRules.parse(RULES, "assign.yaml").decide(ctx) == decision


def test_toml_rules_read_the_same() -> None:
    toml = '[[rules]]\nname = "all"\nmatch = {}\naction = { assign = ["a", "b"] }\n'
    rules = AssignmentRules.parse(toml, "assign.toml")
    assert rules.decide(CallContext(caller="+1")) == Decision(rule="all", agents=("a", "b"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "rules:\n  - name: a\n    match: {}\n    action: {assign: [good, 'bad name']}\n",
            "assign.yaml:2: rule 'a': 'bad name' is not an agent name",
        ),
        (
            "rules:\n  - name: a\n    match: {}\n    action: {safe_route: reception}\n",
            "assign.yaml:2: rule 'a': safe_route must be a number",
        ),
        (
            "rules:\n  - name: a\n    match: {}\n    action: {queue: '8000'}\n",
            "unknown action 'queue'; use one of assign",
        ),
        ("rules:\n  - name: a\n    match: {}\n    action: {ignore: false}\n", "write ignore: true"),
        (
            "rules:\n  - name: a\n    match: {}\n    action: {ignore: true}\ndefault: {assign: []}\n",
            "assign.yaml:5: rule 'default': assign needs at least one agent name",
        ),
    ],
)
def test_bad_rules_name_the_line_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        AssignmentRules.parse(text, "assign.yaml")
    assert message in str(caught.value)


def test_masterlinc_coordinator_refuses_bad_rules_with_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "assign.yaml"
    bad.write_text("rules:\n  - name: a\n    match: {}\n    action: {assign: 'two words'}\n")
    env = cli_env("nats://127.0.0.1:1", ML_DATA_DIR=str(tmp_path))
    run = subprocess.run(
        [*CLI, "coordinator", "--rules", str(bad)], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert f"bad assignment rules: {bad}:2: rule 'a': 'two words' is not an agent name" in run.stderr
