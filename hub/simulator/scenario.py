"""Scenario files: who calls whom and when, who answers, DTMF, transfers, parks, hang-ups, speech, faults, load.

Validated with errors that name the line (the rule loader's YAML positions, ``file:line: problem``)::

    name: billing call, transferred and parked
    speed: 10                 # simulated time runs 10x (optional; leave it out when there is audio)
    config: {repeat_upserts_s: 0.75}   # SimConfig overrides, used by ``masterlinc sim --scenario``
    steps:
      - call: {from: "+15550100", to: "800", caller_name: Dana, did: "+15551000", as: dana}
      - say: {call: dana, text: "I want to pay my bill"}
        after: 0.5            # seconds after the previous step (default 0)
      - dtmf: {call: dana, digits: "2"}
      - transfer: {call: dana, to: "101"}      # the call's Connected leg (or the one on dn:) moves to 101
      - answer: {call: dana, dn: "101"}
        at: 12                # seconds from the start (steps stay in time order)
      - park: {call: dana, orbit: SP1}
      - pickup: {orbit: SP1, by: "102", as: dana2}   # resume: 102 dials the pickup code
      - wait: 30
      - hangup: {call: dana2}
      - fault: {kind: rest_errors, status: 503, count: 3}
      - presence: {number: "101", profile: Away}
      - chat: {from: "+15550100", message: "running late"}
      - load: {calls: 50, rate: 5, hold: 20, duration: 60}

``say`` takes ``text`` (through the synthesizer), ``wav`` (a path, relative to the scenario file) or
``tone: {hz, ms}``; ``divert`` and ``route_to`` take ``{call, to, dn?}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.rules.loader import Path_, Positions, RuleError, parse_yaml
from hub.simulator.faults import FAULT_KINDS


class ScenarioError(RuleError):
    """A problem in a scenario file, or a step the simulator refused while running it: ``source:line: problem``."""


@dataclass(frozen=True)
class Step:
    at: float  # seconds of simulated time from the start
    action: str
    args: dict[str, Any]
    line: int


@dataclass(frozen=True)
class Scenario:
    source: str
    name: str
    steps: tuple[Step, ...]
    speed: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    base_dir: Path = Path()

    @property
    def length_s(self) -> float:
        return self.steps[-1].at if self.steps else 0.0


Check = Callable[[Any], bool]


def _text(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v >= 0


def _positive(v: Any) -> bool:
    return _number(v) and v > 0


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _flag(v: Any) -> bool:
    return isinstance(v, bool)


_WHAT: dict[Check, str] = {
    _text: 'text (quote numbers, e.g. "101")', _number: "a number >= 0", _positive: "a number > 0",
    _count: "a whole number >= 1", _flag: "true or false",
}  # fmt: skip

# action -> (required keys, optional keys), each key with its check
ACTIONS: dict[str, tuple[dict[str, Check], dict[str, Check]]] = {
    "call": ({"from": _text, "to": _text}, {"caller_name": _text, "did": _text, "as": _text}),
    "answer": ({"call": _text}, {"dn": _text}),
    "answer_remote": ({"call": _text}, {}),
    "dtmf": ({"call": _text, "digits": _text}, {}),
    "transfer": ({"call": _text, "to": _text}, {"dn": _text}),
    "divert": ({"call": _text, "to": _text}, {"dn": _text, "reason": _text}),
    "route_to": ({"call": _text, "to": _text}, {"dn": _text}),
    "park": ({"call": _text}, {"dn": _text, "orbit": _text}),
    "pickup": ({"orbit": _text, "by": _text}, {"as": _text}),
    "hangup": ({"call": _text}, {}),
    "say": ({"call": _text}, {"dn": _text, "text": _text, "wav": _text, "tone": lambda v: isinstance(v, dict),
                             "label": _text}),
    "presence": ({"number": _text}, {"profile": _text, "queue_status": _text, "registered": _flag}),
    "chat": ({"from": _text, "message": _text}, {"from_name": _text, "queue_number": _text, "provider_type": _text}),
    "fault": ({"kind": _text}, {"status": _count, "count": _count, "seconds": _positive, "retry_after": _number,
                                "paths": _text, "delay_s": _positive, "window": _count}),
    "load": ({"calls": _count, "rate": _positive, "hold": _positive}, {"duration": _positive, "to": _text}),
}  # fmt: skip
_TIMING = {"at", "after"}
_DIGITS = set("0123456789*#ABCD")


def _error(pos: Positions, path: Path_, problem: str) -> ScenarioError:
    return ScenarioError(pos.source, pos.line(path), problem)


def parse_scenario(text: str, source: str = "<scenario>", *, base_dir: Path | None = None) -> Scenario:
    try:
        data, pos = parse_yaml(text, source)
    except RuleError as exc:
        raise ScenarioError(exc.source, exc.line, exc.problem) from None
    if not isinstance(data, dict):
        raise _error(pos, (), "a scenario is a mapping with 'steps' (and optionally name, speed, config)")
    for key in data:
        if key not in {"name", "speed", "config", "steps"}:
            raise _error(pos, (key,), f"unknown section {key!r}; a scenario has name, speed, config and steps")
    speed = data.get("speed")
    if speed is not None and not _positive(speed):
        raise _error(pos, ("speed",), f"speed must be a number > 0 (1 = real time), not {speed!r}")
    config = data.get("config", {})
    if not isinstance(config, dict):
        raise _error(pos, ("config",), "config maps SimConfig fields to values")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise _error(pos, ("steps",), "'steps' must be a non-empty list of steps")
    steps: list[Step] = []
    calls: set[str] = set()
    now = 0.0
    for index, raw in enumerate(raw_steps):
        step = _step(raw, ("steps", index), pos, now, calls, base_dir)
        now = step.at
        steps.append(step)
    return Scenario(source=source, name=str(data.get("name") or source), steps=tuple(steps),
                    speed=float(speed) if speed is not None else None, config=config,
                    base_dir=base_dir or Path())  # fmt: skip


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(str(path), 0, f"cannot read the scenario: {exc.strerror}") from None
    return parse_scenario(text, str(path), base_dir=path.parent)


def _step(raw: Any, path: Path_, pos: Positions, now: float, calls: set[str], base_dir: Path | None) -> Step:
    if not isinstance(raw, dict):
        raise _error(pos, path, "each step is a mapping with one action, e.g. {hangup: {call: dana}}")
    if "wait" in raw:
        extra = set(raw) - {"wait"}
        if extra:
            raise _error(pos, (*path, sorted(extra)[0]), "a wait step has only 'wait: <seconds>'")
        if not _positive(raw["wait"]):
            raise _error(pos, (*path, "wait"), f"wait needs a number of seconds > 0, not {raw['wait']!r}")
        return Step(now + float(raw["wait"]), "wait", {}, pos.line(path))
    actions = [k for k in raw if k not in _TIMING]
    if len(actions) != 1:
        found = ", ".join(actions) or "none"
        raise _error(pos, path, f"a step has exactly one action (found: {found}); actions: {', '.join(ACTIONS)}, wait")
    action = actions[0]
    if action not in ACTIONS:
        raise _error(pos, (*path, action), f"unknown action {action!r}; use one of {', '.join(ACTIONS)}, wait")
    at = _timing(raw, path, pos, now)
    args = raw[action]
    apath: Path_ = (*path, action)
    if not isinstance(args, dict):
        raise _error(pos, apath, f"{action} takes a mapping of arguments, e.g. {action}: {{call: dana}}")
    required, optional = ACTIONS[action]
    for key in required:
        if key not in args:
            raise _error(pos, apath, f"{action} needs {key!r}")
    for key, value in args.items():
        check = required.get(key) or optional.get(key)
        if check is None:
            known = ", ".join([*required, *optional])
            raise _error(pos, (*apath, key), f"unknown argument {key!r} for {action}; it takes {known}")
        if not check(value):
            raise _error(pos, (*apath, key), f"{action}.{key} must be {_WHAT.get(check, 'a mapping')}, not {value!r}")
    _semantics(action, args, apath, pos, calls, base_dir)
    return Step(at, action, dict(args), pos.line(path))


def _timing(raw: dict[str, Any], path: Path_, pos: Positions, now: float) -> float:
    if "at" in raw and "after" in raw:
        raise _error(pos, (*path, "after"), "a step has 'at' (from the start) or 'after' (the previous step), not both")
    if "at" in raw:
        if not _number(raw["at"]):
            raise _error(pos, (*path, "at"), f"at must be seconds from the start (a number >= 0), not {raw['at']!r}")
        if raw["at"] < now:
            raise _error(pos, (*path, "at"), f"at {raw['at']} is before the previous step ({now:g} s): keep time order")
        return float(raw["at"])
    after = raw.get("after", 0)
    if not _number(after):
        raise _error(pos, (*path, "after"), f"after must be a number of seconds >= 0, not {after!r}")
    return now + float(after)


def _semantics(action: str, args: dict[str, Any], apath: Path_, pos: Positions, calls: set[str],
               base_dir: Path | None) -> None:  # fmt: skip
    ref = args.get("call")
    if ref is not None and ref not in calls:
        defined = ", ".join(sorted(calls)) or "none yet"
        raise _error(pos, (*apath, "call"), f"call {ref!r} is not defined by an earlier step's 'as' ({defined})")
    if action in {"call", "pickup"} and "as" in args:
        if args["as"] in calls:
            raise _error(pos, (*apath, "as"), f"the name {args['as']!r} is already used by an earlier call")
        calls.add(args["as"])
    if action == "dtmf" and not set(args["digits"]) <= _DIGITS:
        raise _error(pos, (*apath, "digits"), f"digits are 0-9, *, # and A-D, not {args['digits']!r}")
    if action == "say":
        sources = [k for k in ("text", "wav", "tone") if k in args]
        if len(sources) != 1:
            raise _error(pos, apath, "say takes exactly one of text, wav or tone")
        if "wav" in args and base_dir is not None and not (base_dir / args["wav"]).is_file():
            raise _error(pos, (*apath, "wav"), f"no such WAV file: {base_dir / args['wav']}")
        if "tone" in args:
            tone = args["tone"]
            if set(tone) - {"hz", "ms"} or not (_positive(tone.get("hz")) and _positive(tone.get("ms"))):
                raise _error(pos, (*apath, "tone"), "tone is {hz: <frequency>, ms: <length>}, both > 0")
    if action == "fault" and args["kind"] not in FAULT_KINDS:
        raise _error(pos, (*apath, "kind"), f"unknown fault {args['kind']!r}; use one of {', '.join(FAULT_KINDS)}")
    if action == "presence" and not ({"profile", "queue_status", "registered"} & set(args)):
        raise _error(pos, apath, "presence changes at least one of profile, queue_status, registered")
    if action == "presence" and args.get("queue_status", "LoggedIn") not in {"LoggedIn", "LoggedOut"}:
        raise _error(pos, (*apath, "queue_status"), "queue_status is LoggedIn or LoggedOut")
