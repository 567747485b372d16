"""Finding an agent by name: the built-in ones (``agents/``), then installed packages that declare one in the
``masterlinc.agents`` entry-point group::

    # the third-party package's pyproject.toml
    [project.entry-points."masterlinc.agents"]
    hello = "hello_agent:agent"          # an hub.sdk.Agent, or a function returning one

The entry point's name must be the agent's name (the name other agents, rules and leases know it by); a factory may
return a variant named ``<name>-<something>`` (a dry run that must not share the real agent's calls).

A factory that takes one parameter gets the :class:`AgentOptions` of ``masterlinc agent run`` (settings, ``--rules``,
``--dry-run``, ``--backfill``); an agent that takes no options refuses them with a clear error.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from hub.sdk.agent import Agent

if TYPE_CHECKING:
    from hub.config import Settings

ENTRY_POINT_GROUP = "masterlinc.agents"

BUILTIN: dict[str, str] = {
    "basma": "agents.basma.agent:create",
    "template": "agents.template:agent",
    "routing": "agents.routing:build",
    "crm": "agents.crm:build",
}
"""Built-in agents: name -> ``module:attribute``."""


class AgentNotFoundError(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        shown = ", ".join(known) or "none"
        super().__init__(
            f"no agent named {name!r}; known agents: {shown}. Third-party agents are found when their package is "
            f"installed and declares the entry point group {ENTRY_POINT_GROUP!r}"
        )


class AgentLoadError(ImportError):
    """An agent was found but could not be loaded; the message says from where and why."""


class AgentOptionsError(ValueError):
    """The options given to ``agent run`` do not suit the agent (or its factory refused them, saying why)."""


@dataclass(frozen=True, kw_only=True)
class AgentOptions:
    """What ``masterlinc agent run`` hands an agent factory. Agents read their own settings section from
    ``settings``; ``rules`` and ``dry_run`` are for agents that take them (the routing agent)."""

    settings: Settings | None = None
    rules: Path | None = None
    dry_run: bool = False
    backfill: bool = False

    @property
    def given(self) -> list[str]:
        """The agent-specific options that were set, as the command line spells them."""
        return [flag for flag, on in (("--rules", self.rules is not None), ("--dry-run", self.dry_run)) if on]


@dataclass(frozen=True)
class AgentSource:
    name: str
    target: str  # module:attribute
    origin: str  # "built-in" or the distribution that declares it


def _entry_points() -> list[EntryPoint]:
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def available() -> list[AgentSource]:
    """Every agent that ``masterlinc agent run`` can start (built-ins win over a package using the same name)."""
    found = {name: AgentSource(name, target, "built-in") for name, target in BUILTIN.items()}
    for ep in _entry_points():
        if ep.name not in found:
            dist = ep.dist.name if ep.dist is not None else "unknown package"
            found[ep.name] = AgentSource(ep.name, ep.value, dist)
    return sorted(found.values(), key=lambda s: s.name)


def load_agent(name: str, options: AgentOptions | None = None) -> Agent:
    sources = {s.name: s for s in available()}
    source = sources.get(name)
    if source is None:
        raise AgentNotFoundError(name, sorted(sources))
    try:
        obj = _resolve(source.target)
    except Exception as exc:
        raise AgentLoadError(f"agent {name!r} ({source.origin}, {source.target}) failed to load: {exc}") from exc
    options = options or AgentOptions()
    takes_options = callable(obj) and not isinstance(obj, Agent) and bool(inspect.signature(obj).parameters)
    if options.given and not takes_options:
        raise AgentOptionsError(f"agent {name!r} takes no options ({', '.join(options.given)})")
    if not isinstance(obj, Agent) and callable(obj):
        try:
            obj = obj(options) if takes_options else obj()
        except ValueError as exc:  # the factory refused its options or settings; its message says why
            raise AgentOptionsError(f"agent {name!r}: {exc}") from None
    if not isinstance(obj, Agent):
        raise AgentLoadError(
            f"agent {name!r} ({source.origin}) points at {source.target}, a {type(obj).__name__}: it must be a "
            "hub.sdk.Agent or a function returning one"
        )
    if obj.name != name and not obj.name.startswith(f"{name}-"):
        raise AgentLoadError(
            f"the entry point {name!r} ({source.origin}) gives an agent named {obj.name!r}: rename one so they match"
        )
    return obj


def _resolve(target: str) -> object:
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name.strip())
    obj: object = module
    for part in attribute.strip().split(".") if attribute.strip() else ["agent"]:
        obj = getattr(obj, part)
    return obj
