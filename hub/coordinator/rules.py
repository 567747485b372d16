"""Assignment rules: which agent handles which inbound call, in the shared rule format (:mod:`hub.rules`).

    timezone: Europe/London
    hours: {mon-fri: "09:00-17:30"}
    rules:
      - name: vip
        match: {caller_list: vip}
        action: {assign: [voice-vip, voice]}     # candidates in order: escalation goes down the list
      - name: night
        match: {when: closed}
        action: {safe_route: "8000"}             # no agent: straight to this queue or extension
      - name: internal
        match: {caller: "1??"}
        action: {ignore: true}                   # the coordinator leaves these calls alone
    default: {assign: voice}

The coordinator decides *who* handles a call; the routing agent decides *where* it goes, from the same loader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.rules import CallContext, RuleError, RuleSet, load_rules, parse_rules
from schemas.tokens import TOKEN_RE

ACTIONS = frozenset({"assign", "safe_route", "ignore"})
DESTINATION_RE = re.compile(r"\+?[0-9*#]{1,31}")


@dataclass(frozen=True)
class Decision:
    rule: str
    agents: tuple[str, ...] = ()
    safe_route: str | None = None
    ignore: bool = False


class AssignmentRules:
    def __init__(self, rules: RuleSet, default_line: int = 0) -> None:
        self.rules = rules
        self._decisions = {r.name: _decision(r.name, r.action, rules.source, r.line) for r in rules.rules}
        self._default = (
            _decision("default", rules.default, rules.source, default_line) if rules.default is not None else None
        )

    @classmethod
    def parse(cls, text: str, source: str = "<rules>") -> AssignmentRules:
        return cls(parse_rules(text, source, actions=ACTIONS), _default_line(text))

    @classmethod
    def load(cls, path: Path) -> AssignmentRules:
        rules = load_rules(path, actions=ACTIONS)
        return cls(rules, _default_line(path.read_text()))

    def decide(self, ctx: CallContext) -> Decision | None:
        rule = self.rules.first_match(ctx)
        if rule is not None:
            return self._decisions[rule.name]
        return self._default


def _default_line(text: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(r"\s*default\s*[:=]", line):
            return number
    return 0


def _decision(name: str, action: Mapping[str, Any], source: str, line: int) -> Decision:
    ((key, value),) = action.items()
    if key == "assign":
        names = value if isinstance(value, list) else [value]
        if not names:
            raise RuleError(source, line, f"rule {name!r}: assign needs at least one agent name")
        for agent in names:
            if not isinstance(agent, str) or TOKEN_RE.fullmatch(agent) is None:
                raise RuleError(
                    source, line, f"rule {name!r}: {agent!r} is not an agent name (letters, digits, '_' and '-')"
                )
        return Decision(rule=name, agents=tuple(names))
    if key == "safe_route":
        target = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
        if DESTINATION_RE.fullmatch(target) is None:
            raise RuleError(
                source, line, f'rule {name!r}: safe_route must be a number such as "8000" or "100", not {value!r}'
            )
        return Decision(rule=name, safe_route=target)
    if value is not True:
        raise RuleError(source, line, f"rule {name!r}: write ignore: true")
    return Decision(rule=name, ignore=True)
