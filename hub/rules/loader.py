"""Loading rule files (YAML or TOML) with source positions, and errors that name the line and the problem.

File shape (YAML shown; TOML is the same data)::

    timezone: Europe/London
    hours: {mon-fri: "09:00-17:30", sat: "10:00-13:00"}
    holidays: {2026-12-25: Christmas Day}
    lists: {vip: ["+15550100", "+1555011*"]}
    rules:
      - name: vip
        match: {caller_list: vip, when: open}
        action: {transfer: "101"}
    default: {queue: "8000"}
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from hub.rules.model import WEEKDAYS, Match, Rule, RuleSet, Schedule, Window

Path_ = tuple[str | int, ...]
MATCH_KEYS = {"caller", "caller_list", "did", "queue", "when"}
WHEN_VALUES = {"open", "closed", "holiday"}


@dataclass
class RuleError(ValueError):
    """A problem in a rule file: ``source:line: problem``."""

    source: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.problem}"


class Positions:
    """Where each value of the parsed document came from (1-based lines). Public: the scenario and policy
    loaders report their errors by line with it too."""

    def __init__(self, source: str, lines: dict[Path_, int], fallback: int = 1) -> None:
        self.source = source
        self._lines = lines
        self._fallback = fallback

    def line(self, path: Path_) -> int:
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return self._fallback

    def error(self, path: Path_, problem: str) -> RuleError:
        return RuleError(self.source, self.line(path), problem)


def _from_yaml_node(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _from_yaml_node(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_from_yaml_node(item, (*path, i), lines) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def parse_yaml(text: str, source: str) -> tuple[Any, Positions]:
    """YAML data with the line of every value; a syntax error is a :class:`RuleError` naming its line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise RuleError(source, (mark.line + 1) if mark else 1, f"not valid YAML: {exc.problem}") from None
    lines: dict[Path_, int] = {}
    data = {} if node is None else _from_yaml_node(node, (), lines)
    return data, Positions(source, lines)


# the former private names, for code written against them
_Positions = Positions
_parse_yaml = parse_yaml

_TOML_TABLE = re.compile(r"\[\s*([^\[\]]+?)\s*\]")
_TOML_KEY = re.compile(r"""\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_+*#-]+))\s*=""")


def _parse_toml(text: str, source: str) -> tuple[Any, Positions]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise RuleError(source, int(match[1]) if match else 1, f"not valid TOML: {exc}") from None
    lines: dict[Path_, int] = {}
    table: Path_ = ()
    arrays: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[[") and stripped.endswith("]]"):  # an array of tables: [[rules]]
            name = stripped[2:-2].strip()
            arrays[name] = arrays.get(name, -1) + 1
            table = (name, arrays[name])
            lines.setdefault(table, number)
            continue
        header = _TOML_TABLE.fullmatch(stripped)
        if header:  # a table: [menus.main]
            table = tuple(part.strip().strip("\"'") for part in header[1].split("."))
            for depth in range(1, len(table) + 1):
                lines.setdefault(table[:depth], number)
            continue
        key = _TOML_KEY.match(line)
        if key:
            name = next(g for g in key.groups() if g is not None)
            lines.setdefault((*table, name), number)
    return data, Positions(source, lines)


def parse_rules(
    text: str, source: str = "<rules>", *, actions: Collection[str] | None = None, sections: Collection[str] = ()
) -> RuleSet:
    """Parse and validate a rule document. ``actions`` is the vocabulary of action keys the caller understands;
    ``sections`` are extra top-level sections it understands, returned as parsed in ``RuleSet.sections`` for it to
    validate (``RuleSet.line`` gives their lines)."""
    is_toml = source.endswith(".toml")
    data, pos = _parse_toml(text, source) if is_toml else parse_yaml(text, source)
    if not isinstance(data, dict):
        raise pos.error((), "the top level must be a mapping with 'rules' (and optionally timezone, hours, ...)")
    known = {"timezone", "hours", "holidays", "lists", "rules", "default", "menus", *sections}
    for key in data:
        if key not in known:
            raise pos.error((key,), f"unknown section {key!r}; known: {', '.join(sorted(known))}")
    schedule = _schedule(data, pos)
    lists = _lists(data.get("lists", {}), pos)
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise pos.error(("rules",), "'rules' must be a non-empty list of rules")
    rules = tuple(_rule(r, i, pos, lists, schedule, actions) for i, r in enumerate(raw_rules))
    names = [r.name for r in rules]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise pos.error(("rules", i, "name"), f"rule name {name!r} is used twice; names must be unique")
    default = data.get("default")
    if default is not None:
        _action(default, ("default",), pos, actions)
    extra = {name: data[name] for name in sections if name in data}
    return RuleSet(
        source=source, rules=rules, schedule=schedule, lists=lists, default=default, sections=extra, positions=pos
    )


def load_rules(path: Path, *, actions: Collection[str] | None = None, sections: Collection[str] = ()) -> RuleSet:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RuleError(str(path), 0, f"cannot read the rule file: {exc.strerror}") from None
    return parse_rules(text, str(path), actions=actions, sections=sections)


def _schedule(data: dict[str, Any], pos: Positions) -> Schedule | None:
    if "hours" not in data and "holidays" not in data:
        return None
    tz_name = data.get("timezone")
    if not isinstance(tz_name, str):
        raise pos.error(("timezone",), "business hours need a 'timezone' such as Europe/London or America/New_York")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise pos.error(("timezone",), f"unknown timezone {tz_name!r} (use an IANA name like Europe/London)") from None
    hours: dict[int, tuple[Window, ...]] = {}
    raw_hours = data.get("hours", {})
    if not isinstance(raw_hours, dict):
        raise pos.error(("hours",), "'hours' maps days to time ranges, e.g. mon-fri: \"09:00-17:30\"")
    for days, ranges in raw_hours.items():
        for day in _days(str(days), ("hours", days), pos):
            items = ranges if isinstance(ranges, list) else [ranges]
            hours[day] = hours.get(day, ()) + tuple(_window(r, ("hours", days), pos) for r in items)
    holidays: dict[date, str] = {}
    raw_holidays = data.get("holidays", {})
    if isinstance(raw_holidays, list):
        raw_holidays = dict.fromkeys(raw_holidays, "")
    if not isinstance(raw_holidays, dict):
        raise pos.error(("holidays",), "'holidays' maps dates (YYYY-MM-DD) to names")
    for when, name in raw_holidays.items():
        try:
            holiday = when if isinstance(when, date) else date.fromisoformat(str(when))
        except ValueError:
            raise pos.error(("holidays", when), f"holiday {when!r} is not a date (YYYY-MM-DD)") from None
        holidays[holiday] = str(name or "")
    return Schedule(timezone=tz, hours=hours, holidays=holidays)


def _days(spec: str, path: Path_, pos: Positions) -> list[int]:
    out: list[int] = []
    for part in spec.lower().replace(" ", "").split(","):
        ends = part.split("-")
        for end in ends:
            if end not in WEEKDAYS:
                raise pos.error(path, f"unknown weekday {end!r}; use {', '.join(WEEKDAYS)} or ranges like mon-fri")
        first, last = WEEKDAYS.index(ends[0]), WEEKDAYS.index(ends[-1])
        if len(ends) > 2 or last < first:
            raise pos.error(path, f"weekday range {part!r} must go forward, like mon-fri")
        out.extend(range(first, last + 1))
    return out


def _window(spec: Any, path: Path_, pos: Positions) -> Window:
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", str(spec))
    if not match:
        raise pos.error(path, f"time range {spec!r} must look like 09:00-17:30")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
        raise pos.error(path, f"time range {spec!r} has an impossible time")
    return Window(time(h1, m1), time(0, 0) if h2 == 24 else time(h2, m2))


def _strings(value: Any, path: Path_, pos: Positions, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str | int) or isinstance(item, bool):
            raise pos.error(path, f'{what} must be text (quote numbers like "+15550100"), not {item!r}')
    return tuple(str(i) for i in items)


def _lists(raw: Any, pos: Positions) -> dict[str, frozenset[str]]:
    if not isinstance(raw, dict):
        raise pos.error(("lists",), "'lists' maps a list name to caller numbers or patterns")
    return {str(k): frozenset(_strings(v, ("lists", k), pos, "list entries")) for k, v in raw.items()}


def _rule(
    raw: Any,
    index: int,
    pos: Positions,
    lists: dict[str, frozenset[str]],
    schedule: Schedule | None,
    actions: Collection[str] | None,
) -> Rule:
    path: Path_ = ("rules", index)
    if not isinstance(raw, dict):
        raise pos.error(path, "each rule is a mapping with name, match and action")
    for key in raw:
        if key not in {"name", "match", "action"}:
            raise pos.error((*path, key), f"unknown rule key {key!r}; a rule has name, match and action")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise pos.error(path, "a rule needs a 'name'")
    match_raw = raw.get("match", {})
    if not isinstance(match_raw, dict):
        raise pos.error((*path, "match"), "'match' is a mapping of conditions")
    for key in match_raw:
        if key not in MATCH_KEYS:
            raise pos.error((*path, "match", key), f"unknown condition {key!r}; use {', '.join(sorted(MATCH_KEYS))}")
    caller_lists = _strings(match_raw.get("caller_list", []), (*path, "match", "caller_list"), pos, "caller_list")
    for list_name in caller_lists:
        if list_name not in lists:
            raise pos.error(
                (*path, "match", "caller_list"),
                f"caller_list {list_name!r} is not defined under 'lists' (defined: {', '.join(lists) or 'none'})",
            )
    when = match_raw.get("when")
    if when is not None:
        if when not in WHEN_VALUES:
            raise pos.error((*path, "match", "when"), f"when must be one of {', '.join(sorted(WHEN_VALUES))}")
        if schedule is None:
            raise pos.error((*path, "match", "when"), "'when' needs business hours: add 'timezone' and 'hours'")
    match = Match(
        callers=_strings(match_raw.get("caller", []), (*path, "match", "caller"), pos, "caller"),
        caller_lists=caller_lists,
        dids=_strings(match_raw.get("did", []), (*path, "match", "did"), pos, "did"),
        queues=_strings(match_raw.get("queue", []), (*path, "match", "queue"), pos, "queue"),
        when=when,
    )
    action = _action(raw.get("action"), (*path, "action"), pos, actions)
    return Rule(name=name, match=match, action=action, line=pos.line(path))


def _action(raw: Any, path: Path_, pos: Positions, actions: Collection[str] | None) -> dict[str, Any]:
    if not isinstance(raw, dict) or len(raw) != 1:
        allowed = f" ({', '.join(sorted(actions))})" if actions else ""
        raise pos.error(path, f'an action is a mapping with exactly one key{allowed}, e.g. {{transfer: "101"}}')
    key = next(iter(raw))
    if actions is not None and key not in actions:
        raise pos.error((*path, key), f"unknown action {key!r}; use one of {', '.join(sorted(actions))}")
    return dict(raw)
