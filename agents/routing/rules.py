"""Routing rules: where each call goes, in the shared rule format (:mod:`hub.rules`), with the routing agent's own
sections.

    timezone: Europe/London
    hours: {mon-fri: "09:00-17:30"}
    holidays: {2026-12-25: Christmas Day}
    lists:
      vip: ["+4420795*"]                   # caller-id lists: exact numbers or globs
      blocked: ["+44909*"]
    dids:                                  # DID mapping: the number dialled -> an action
      "+442079460000": {menu: main}
      "+44207946001*": {queue: "8001"}
    menus:
      main:
        prompt: prompts/main.wav           # relative to this file; or {tone: 440, ms: 400}; none: a tone
        invalid: prompts/invalid.wav       # optional: played after a key that is not an option
        timeout_s: 5                       # silence after the prompt before it is played again
        attempts: 3                        # plays in all, then `otherwise`
        options: {"1": {queue: "8000"}, "2": {transfer: "102"}, "0": {transfer: "100"}}
        otherwise: {voicemail: "100"}
    rules:                                 # first match wins
      - name: blocked
        match: {caller_list: blocked}
        action: {reject: true}
      - name: vip
        match: {caller_list: vip}
        action: {transfer: {to: "101", overflow: "8000", after_s: 20}}
      - name: closed
        match: {when: closed}
        action: {voicemail: "100"}
    default: {menu: main}                  # required: when no rule and no DID matches
    fallback: "100"                        # optional: where a call goes when routing it failed

Order: ``rules`` (first match), then ``dids``, then ``default``. Actions: ``transfer``, ``queue`` and ``voicemail``
take a number, or ``{to, overflow, after_s}`` (overflow: when the destination has not answered ``after_s`` seconds
after the call was routed there, route it to ``overflow``, a queue or a voicemail number); ``reject: true`` drops the
call; ``menu: NAME`` plays a DTMF menu. Voicemail is a number like any other: 3CX documents no REST voicemail
action, so use the number that reaches the mailbox on your PBX.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agents.routing.prompts import Prompt, PromptError, load_wav, tone_prompt
from hub.rules import CallContext, RuleError, RuleSet, load_rules, parse_rules

ACTIONS = frozenset({"transfer", "queue", "voicemail", "reject", "menu"})
SECTIONS = ("menus", "dids", "fallback")
DESTINATION_RE = re.compile(r"\+?[0-9*#]{1,31}")
DIGIT_RE = re.compile(r"[0-9*#]")
Path_ = tuple[str | int, ...]
RouteKind = Literal["transfer", "queue", "voicemail"]


@dataclass(frozen=True)
class Route:
    """Send the call to a number; with ``overflow``, to that one when ``to`` has not answered within ``after_s``."""

    kind: RouteKind
    to: str
    overflow: str | None = None
    after_s: float = 20.0


@dataclass(frozen=True)
class Reject:
    """Drop the call (blocked callers)."""


@dataclass(frozen=True)
class PlayMenu:
    name: str


Action = Route | Reject | PlayMenu


@dataclass(frozen=True)
class Menu:
    name: str
    prompt: Prompt
    options: Mapping[str, Action]
    otherwise: Action | None
    invalid: Prompt | None = None
    timeout_s: float = 5.0
    attempts: int = 3


@dataclass(frozen=True)
class Decision:
    """Where a call goes and why: ``rule`` is the rule's name, ``did <pattern>``, ``default`` or a menu's key."""

    rule: str
    action: Action
    reason: str = ""


def action_name(action: Action) -> str:
    if isinstance(action, Route):
        return action.kind
    return "reject" if isinstance(action, Reject) else "menu"


def destination(action: Action) -> str | None:
    if isinstance(action, Route):
        return action.to
    return action.name if isinstance(action, PlayMenu) else None


@dataclass(frozen=True)
class RoutingRules:
    rules: RuleSet
    actions: Mapping[str, Action]  # rule name -> action
    dids: tuple[tuple[str, Action], ...]
    default: Action
    menus: Mapping[str, Menu] = field(default_factory=dict)
    fallback: str | None = None

    @property
    def source(self) -> str:
        return self.rules.source

    @classmethod
    def parse(cls, text: str, source: str = "<rules>", *, base_dir: Path | None = None) -> RoutingRules:
        rules = parse_rules(text, source, actions=ACTIONS, sections=SECTIONS)
        return _Builder(rules, base_dir or Path(source).parent).build()

    @classmethod
    def load(cls, path: Path) -> RoutingRules:
        rules = load_rules(path, actions=ACTIONS, sections=SECTIONS)
        return _Builder(rules, path.parent).build()

    def decide(self, ctx: CallContext) -> Decision:
        rule = self.rules.first_match(ctx)
        if rule is not None:
            return Decision(rule.name, self.actions[rule.name], f"rule {rule.name} (line {rule.line})")
        for pattern, action in self.dids:
            if ctx.did and fnmatch.fnmatchcase(ctx.did, pattern):
                return Decision(f"did {pattern}", action, f"the number dialled {ctx.did} is mapped")
        return Decision("default", self.default, "no rule matched")


class _Builder:
    """Validates the routing parts of a parsed rule file; every error names the line."""

    def __init__(self, rules: RuleSet, base_dir: Path) -> None:
        self.rules = rules
        self.base_dir = base_dir
        self.menu_names: set[str] = set()

    def error(self, path: Path_, problem: str) -> RuleError:
        return RuleError(self.rules.source, self.rules.line(*path), problem)

    def build(self) -> RoutingRules:
        raw_menus = self.rules.sections.get("menus", {})
        if not isinstance(raw_menus, dict):
            raise self.error(("menus",), "'menus' maps a menu name to its prompt, options and timeouts")
        self.menu_names = {str(name) for name in raw_menus}
        menus = {str(name): self._menu(str(name), raw) for name, raw in raw_menus.items()}
        actions = {
            rule.name: self.action(rule.action, ("rules", index, "action"))
            for index, rule in enumerate(self.rules.rules)
        }
        if self.rules.default is None:
            raise self.error(("rules",), "routing rules need a 'default' action: where calls go when no rule matches")
        default = self.action(self.rules.default, ("default",))
        raw_dids = self.rules.sections.get("dids", {})
        if not isinstance(raw_dids, dict):
            raise self.error(("dids",), 'dids maps a dialled number (or a glob such as "+4420794*") to an action')
        dids = tuple((self._did(str(k), ("dids", k)), self.action(v, ("dids", k))) for k, v in raw_dids.items())
        fallback = self.rules.sections.get("fallback")
        if fallback is not None:
            fallback = self.number(fallback, ("fallback",), "fallback")
        return RoutingRules(self.rules, actions, dids, default, menus, fallback)

    # ------------------------------------------------------------------ values

    def number(self, value: Any, path: Path_, what: str) -> str:
        text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
        if DESTINATION_RE.fullmatch(text) is None:
            raise self.error(path, f'{what} must be a number such as "101", "8000" or "+15550100", not {value!r}')
        return text

    def _did(self, pattern: str, path: Path_) -> str:
        if not re.fullmatch(r"\+?[0-9*?\[\]-]{1,40}", pattern):
            raise self.error(path, f'{pattern!r} is not a dialled number or glob (quote it: "+15550100", "+1555*")')
        return pattern

    def action(self, raw: Any, path: Path_) -> Action:
        if not isinstance(raw, dict) or len(raw) != 1:
            raise self.error(path, 'an action is a mapping with exactly one key, e.g. {transfer: "101"}')
        ((key, value),) = raw.items()
        where = (*path, key)
        if key not in ACTIONS:
            raise self.error(where, f"unknown action {key!r}; use one of {', '.join(sorted(ACTIONS))}")
        if key == "reject":
            if value is not True:
                raise self.error(where, "write reject: true")
            return Reject()
        if key == "menu":
            if not isinstance(value, str) or value not in self.menu_names:
                known = ", ".join(sorted(self.menu_names)) or "none"
                raise self.error(where, f"menu {value!r} is not defined under 'menus' (defined: {known})")
            return PlayMenu(value)
        kind: RouteKind = key  # one of transfer, queue, voicemail (checked above)
        if not isinstance(value, dict):
            return Route(kind, self.number(value, where, key))
        for option in value:
            if option not in {"to", "overflow", "after_s"}:
                raise self.error((*where, option), f"unknown {key} option {option!r}; use to, overflow and after_s")
        if "to" not in value:
            raise self.error(where, f'{key} needs a number: {{to: "101"}}')
        to = self.number(value["to"], (*where, "to"), key)
        overflow = value.get("overflow")
        if overflow is not None:
            overflow = self.number(overflow, (*where, "overflow"), "overflow")
        after = value.get("after_s", 20)
        if isinstance(after, bool) or not isinstance(after, int | float) or not 1 <= after <= 600:
            raise self.error((*where, "after_s"), f"after_s is seconds between 1 and 600, not {after!r}")
        if "after_s" in value and overflow is None:
            raise self.error((*where, "after_s"), "after_s needs an overflow number to go to")
        return Route(kind, to, overflow, float(after))

    def _prompt(self, raw: Any, path: Path_) -> Prompt:
        try:
            if raw is None:
                return tone_prompt()
            if isinstance(raw, dict):
                unknown = set(raw) - {"tone", "ms"}
                if unknown:
                    raise self.error(path, f"a tone prompt has tone (Hz) and ms, not {', '.join(sorted(unknown))}")
                hz, ms = raw.get("tone", 440), raw.get("ms", 400)
                if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (hz, ms)):
                    raise self.error(path, "tone and ms are numbers, e.g. {tone: 440, ms: 400}")
                return tone_prompt(float(hz), float(ms))
            if not isinstance(raw, str) or not raw.lower().endswith(".wav"):
                raise self.error(path, f"a prompt is a .wav file or {{tone: 440, ms: 400}}, not {raw!r}")
            file = Path(raw)
            return load_wav(file if file.is_absolute() else self.base_dir / file)
        except PromptError as exc:
            raise self.error(path, str(exc)) from None

    def _menu(self, name: str, raw: Any) -> Menu:
        path: Path_ = ("menus", name)
        if not isinstance(raw, dict):
            raise self.error(path, f"menu {name!r} is a mapping with prompt, options, timeout_s, attempts, otherwise")
        known = {"prompt", "invalid", "options", "otherwise", "timeout_s", "attempts"}
        for key in raw:
            if key not in known:
                raise self.error((*path, key), f"unknown menu key {key!r}; use {', '.join(sorted(known))}")
        options_raw = raw.get("options")
        if not isinstance(options_raw, dict) or not options_raw:
            raise self.error((*path, "options"), f'menu {name!r} needs options: {{"1": {{queue: "8000"}}, ...}}')
        options: dict[str, Action] = {}
        for digit, value in options_raw.items():
            key = str(digit)
            if DIGIT_RE.fullmatch(key) is None:
                raise self.error((*path, "options", digit), f"menu option {key!r} must be one key: 0-9, * or #")
            options[key] = self.action(value, (*path, "options", digit))
        timeout = raw.get("timeout_s", 5)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0.1 <= timeout <= 120:
            raise self.error((*path, "timeout_s"), f"timeout_s is seconds between 0.1 and 120, not {timeout!r}")
        attempts = raw.get("attempts", 3)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 10:
            raise self.error((*path, "attempts"), f"attempts is a whole number from 1 to 10, not {attempts!r}")
        otherwise = raw.get("otherwise")
        return Menu(
            name=name,
            prompt=self._prompt(raw.get("prompt"), (*path, "prompt")),
            invalid=self._prompt(raw["invalid"], (*path, "invalid")) if raw.get("invalid") is not None else None,
            options=options,
            otherwise=self.action(otherwise, (*path, "otherwise")) if otherwise is not None else None,
            timeout_s=float(timeout),
            attempts=attempts,
        )
