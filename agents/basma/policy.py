"""The offline brain: a deterministic receptionist policy in YAML (greet, ask, confirm, route).

    greeting: "Thank you for calling Example. How can I help?"
    confirm: true                 # confirm a spoken request before routing (keys route at once)
    max_attempts: 2               # requests not understood before the fallback
    prompts:                      # all optional; {destination} is replaced by the destination's name
      retry: "Sorry, I didn't catch that. You can say billing or support, or press 1 or 2."
      confirm: "You'd like {destination}, is that right?"
      routing: "Putting you through to {destination} now."
    yes: [yes, yeah, correct]     # optional word lists for the confirmation
    no: [no, nope, wrong]
    destinations:
      - name: billing
        keywords: [billing, invoice, payment]
        dtmf: "1"
        transfer: "201"           # one action: transfer (a number), park, drop, or send_message (a text)
      - name: opening hours
        keywords: [hours, open]
        send_message: "We are open 9:00-17:00, Monday to Friday."
        say: "We are open from nine to five, Monday to Friday. I've sent you a text with the hours."
    fallback: {say: "Let me put you through to reception.", transfer: "100"}

Errors name the file and line (the YAML positions come from :mod:`hub.rules.loader`).
"""

from __future__ import annotations

import re
import string
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.basma.brain import CallerPressed, CallerSaid, CallStarted, Destination, Heard, Toolbox, Turn
from agents.basma.errors import PolicyError
from agents.basma.text import words
from hub.rules.loader import Positions, RuleError, parse_yaml

_Path = tuple[str | int, ...]
NUMBER = re.compile(r"^\+?[0-9*#]{1,31}$")
ACTIONS = ("transfer", "park", "drop", "send_message")
DEFAULT_PROMPTS = {
    "retry": "Sorry, I didn't catch that. Could you say again where you would like to be put through?",
    "confirm": "You'd like {destination}, is that right?",
    "routing": "Putting you through to {destination} now.",
    "ask": "All right. Where would you like to be put through?",
    "anything_else": "Is there anything else I can help you with?",
    "goodbye": "Thank you for calling. Goodbye.",
    "failed": "Sorry, I could not put you through just now.",
}
DEFAULT_YES = ("yes", "yeah", "yep", "correct", "right", "sure", "please", "ok", "okay")
DEFAULT_NO = ("no", "nope", "wrong", "not", "don't", "incorrect")


@dataclass(frozen=True)
class Route:
    name: str
    action: str
    value: str = ""
    keywords: tuple[str, ...] = ()
    dtmf: str | None = None
    say: str | None = None
    then: str = "ask"
    description: str = ""


@dataclass(frozen=True)
class Policy:
    source: str
    greeting: str
    routes: tuple[Route, ...]
    fallback: Route | None
    confirm: bool = True
    max_attempts: int = 2
    prompts: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    yes: tuple[str, ...] = DEFAULT_YES
    no: tuple[str, ...] = DEFAULT_NO

    def destinations(self) -> dict[str, Destination]:
        """The humans a call can be transferred to, by name (also the LLM's transfer targets)."""
        out = {
            r.name: Destination(r.name, r.value, r.description, r.keywords)
            for r in self.routes
            if r.action == "transfer"
        }
        if self.fallback is not None and self.fallback.action == "transfer":
            out.setdefault(self.fallback.name, Destination(self.fallback.name, self.fallback.value, "the fallback"))
        return out

    def match(self, text: str) -> Route | None:
        """The route whose keywords (or name) the text mentions most; the first in the file on a tie."""
        said = " " + " ".join(words(text)) + " "
        best, best_score = None, 0
        for route in self.routes:
            score = sum(1 for k in (route.name, *route.keywords) if f" {' '.join(words(k))} " in said)
            if score > best_score:
                best, best_score = route, score
        return best

    def by_dtmf(self, digit: str) -> Route | None:
        return next((r for r in self.routes if r.dtmf == digit), None)

    def answer(self, text: str) -> bool | None:
        said = set(words(text))
        if said & set(self.no):
            return False
        if said & set(self.yes):
            return True
        return None


def _error(pos: Positions, path: _Path, problem: str) -> PolicyError:
    return PolicyError(pos.source, pos.line(path), problem)


def _text(data: Mapping[str, Any], key: str, path: _Path, pos: Positions, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise _error(pos, path, f"{key!r} is required (a sentence Basma says)")
        return None
    if not isinstance(value, str) or not value.strip():
        raise _error(pos, (*path, key), f"{key!r} must be non-empty text")
    return value.strip()


def _word_list(value: Any, path: _Path, pos: Positions, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if not isinstance(item, str | int) or isinstance(item, bool) or not words(str(item)):
            raise _error(pos, path, f"{what} must be words (text), not {item!r}")
        out.append(str(item).lower())
    return tuple(out)


def _route(raw: Any, path: _Path, pos: Positions, *, fallback: bool = False) -> Route:
    allowed = {"name", "keywords", "dtmf", "say", "then", "description", *ACTIONS}
    if not isinstance(raw, dict):
        raise _error(pos, path, 'a destination is a mapping with name, keywords and one action (transfer: "201")')
    for key in raw:
        if key not in allowed:
            raise _error(pos, (*path, key), f"unknown key {key!r}; a destination has {', '.join(sorted(allowed))}")
    name = raw.get("name", "fallback" if fallback else None)
    if not isinstance(name, str) or not name.strip():
        raise _error(pos, path, "a destination needs a 'name'")
    chosen = [a for a in ACTIONS if a in raw]
    if len(chosen) != 1:
        found = ", ".join(chosen) or "none"
        raise _error(
            pos, path, f"destination {name!r} needs exactly one action of {', '.join(ACTIONS)} (found {found})"
        )
    action = chosen[0]
    value = raw[action]
    if action == "transfer":
        if not isinstance(value, str | int) or isinstance(value, bool) or not NUMBER.match(str(value)):
            raise _error(
                pos, (*path, action), f'transfer needs a number or extension in quotes like "201", not {value!r}'
            )
    elif action == "send_message":
        if not isinstance(value, str) or not value.strip():
            raise _error(pos, (*path, action), "send_message needs the text to send")
    elif value is not True:
        raise _error(pos, (*path, action), f"write '{action}: true' for this action")
    dtmf = raw.get("dtmf")
    if dtmf is not None and (not isinstance(dtmf, str | int) or not re.fullmatch(r"[0-9*#]", str(dtmf))):
        raise _error(pos, (*path, "dtmf"), f'dtmf must be one key in quotes ("1", "*" or "#"), not {dtmf!r}')
    then = raw.get("then", "ask")
    if then not in ("ask", "drop"):
        raise _error(pos, (*path, "then"), "then must be 'ask' (ask if there is anything else) or 'drop' (hang up)")
    return Route(
        name=name.strip(),
        action=action,
        value="" if value is True else str(value).strip(),
        keywords=_word_list(raw.get("keywords", []), (*path, "keywords"), pos, "keywords"),
        dtmf=None if dtmf is None else str(dtmf),
        say=_text(raw, "say", path, pos),
        then=then,
        description=_text(raw, "description", path, pos) or "",
    )


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        data, pos = parse_yaml(text, source)
    except RuleError as exc:
        raise PolicyError(exc.source, exc.line, exc.problem) from None
    known = {"greeting", "confirm", "max_attempts", "prompts", "yes", "no", "destinations", "fallback"}
    if not isinstance(data, dict):
        raise _error(pos, (), "the policy is a mapping with greeting and destinations")
    for key in data:
        if key not in known:
            raise _error(pos, (key,), f"unknown section {key!r}; known: {', '.join(sorted(known))}")
    greeting = _text(data, "greeting", (), pos, required=True)
    raw_routes = data.get("destinations")
    if not isinstance(raw_routes, list) or not raw_routes:
        raise _error(pos, ("destinations",), "'destinations' must be a non-empty list")
    routes = tuple(_route(r, ("destinations", i), pos) for i, r in enumerate(raw_routes))
    seen: dict[str, int] = {}
    keys: dict[str, str] = {}
    for i, route in enumerate(routes):
        if route.name in seen:
            raise _error(pos, ("destinations", i, "name"), f"destination {route.name!r} is named twice")
        seen[route.name] = i
        if route.dtmf is not None:
            if route.dtmf in keys:
                raise _error(pos, ("destinations", i, "dtmf"), f"key {route.dtmf} already goes to {keys[route.dtmf]!r}")
            keys[route.dtmf] = route.name
    fallback = None if data.get("fallback") is None else _route(data["fallback"], ("fallback",), pos, fallback=True)
    confirm = data.get("confirm", True)
    if not isinstance(confirm, bool):
        raise _error(pos, ("confirm",), "confirm must be true or false")
    attempts = data.get("max_attempts", 2)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 10:
        raise _error(pos, ("max_attempts",), "max_attempts must be a whole number from 1 to 10")
    prompts = dict(DEFAULT_PROMPTS)
    raw_prompts = data.get("prompts", {})
    if not isinstance(raw_prompts, dict):
        raise _error(pos, ("prompts",), f"'prompts' maps prompt names ({', '.join(DEFAULT_PROMPTS)}) to text")
    for key, value in raw_prompts.items():
        if key not in DEFAULT_PROMPTS:
            raise _error(pos, ("prompts", key), f"unknown prompt {key!r}; known: {', '.join(DEFAULT_PROMPTS)}")
        if not isinstance(value, str) or not value.strip():
            raise _error(pos, ("prompts", key), f"prompt {key!r} must be non-empty text")
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        if fields - {"destination"}:
            raise _error(pos, ("prompts", key), f"prompt {key!r} may only use {{destination}}, not {sorted(fields)}")
        prompts[key] = value.strip()
    return Policy(
        source=source,
        greeting=greeting or "",
        routes=routes,
        fallback=fallback,
        confirm=confirm,
        max_attempts=attempts,
        prompts=prompts,
        yes=_word_list(data.get("yes", list(DEFAULT_YES)), ("yes",), pos, "yes words"),
        no=_word_list(data.get("no", list(DEFAULT_NO)), ("no",), pos, "no words"),
    )


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(str(path), 0, f"cannot read the policy file: {exc.strerror}") from None
    return parse_policy(text, str(path))


def summarize(dialogue: Sequence[Turn], limit: int = 400) -> str:
    """What the caller asked for, in their words (the warm-transfer summary when the brain gives none)."""
    said = [t.text for t in dialogue if t.role == "caller" and not t.dtmf]
    keys = "".join(t.text for t in dialogue if t.role == "caller" and t.dtmf)
    parts = []
    if said:
        parts.append('Caller said: "' + " / ".join(said) + '"')
    if keys:
        parts.append(f"pressed {keys}")
    text = "; ".join(parts) or "Caller said nothing"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PolicyBrain:
    """One call's receptionist: state is per call, the :class:`Policy` is shared."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._pending: Route | None = None
        self._misses = 0

    def _prompt(self, key: str, route: Route | None = None) -> str:
        return self.policy.prompts[key].format(destination=route.name if route else "")

    async def respond(self, dialogue: Sequence[Turn], heard: Heard, tools: Toolbox) -> AsyncGenerator[str, None]:
        if isinstance(heard, CallStarted):
            yield self.policy.greeting
            return
        route: Route | None
        if isinstance(heard, CallerPressed):
            route = self.policy.by_dtmf(heard.digits[-1:])
            if route is None:
                async for text in self._missed(dialogue, tools):
                    yield text
                return
            async for text in self._route(route, dialogue, tools):
                yield text
            return
        assert isinstance(heard, CallerSaid)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            answer = self.policy.answer(heard.text)
            other = self.policy.match(heard.text)
            if answer is True and (other is None or other == pending):
                async for text in self._route(pending, dialogue, tools):
                    yield text
                return
            if other is not None and other != pending:
                route = other
            elif answer is False:
                yield self._prompt("ask")
                return
            else:
                self._pending = pending
                yield self._prompt("confirm", pending)
                return
        else:
            route = self.policy.match(heard.text)
        if route is None:
            async for text in self._missed(dialogue, tools):
                yield text
            return
        if self.policy.confirm:
            self._pending = route
            yield self._prompt("confirm", route)
            return
        async for text in self._route(route, dialogue, tools):
            yield text

    async def _missed(self, dialogue: Sequence[Turn], tools: Toolbox) -> AsyncIterator[str]:
        self._misses += 1
        if self._misses >= self.policy.max_attempts and self.policy.fallback is not None:
            async for text in self._route(self.policy.fallback, dialogue, tools):
                yield text
            return
        yield self._prompt("retry")

    async def _route(self, route: Route, dialogue: Sequence[Turn], tools: Toolbox) -> AsyncIterator[str]:
        self._misses = 0
        if route.action == "transfer":
            yield route.say or self._prompt("routing", route)
            summary = f"Caller asked for {route.name}. {summarize(dialogue)}"
            result = await tools.transfer(route.name, summary)
            if not result.ok:
                yield self._prompt("failed")
                yield self._prompt("anything_else")
            return
        if route.action == "send_message":
            result = await tools.send_message(route.value)
            if route.say:
                yield route.say
            if not result.ok:
                yield self._prompt("failed")
            if route.then == "drop":
                yield self._prompt("goodbye")
                await tools.drop()
            else:
                yield self._prompt("anything_else")
            return
        yield route.say or self._prompt("goodbye")
        if route.action == "park":
            await tools.park()
        else:
            await tools.drop()
