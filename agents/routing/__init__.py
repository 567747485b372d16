"""The routing agent: where each call goes, by rules (caller lists, DIDs, hours and holidays, DTMF menus, overflow).

``masterlinc agent run routing --rules FILE [--dry-run]`` runs it (rules: :mod:`agents.routing.rules`; without a
file, the packaged ``default_rules.yaml``); the coordinator's rules assign calls to it (``action: {assign:
routing}``). The rule file is re-read when it changes or on SIGHUP; a bad new file is refused with its line and the
rules in force stay.
"""

from __future__ import annotations

from pathlib import Path

from agents.routing.agent import AGENT_NAME, DRY_RUN_NAME, AudioOpener, RoutingAgent, RoutingConfig
from agents.routing.menu import MenuResult, run_menu
from agents.routing.prompts import Prompt, PromptError, load_wav, tone_prompt
from agents.routing.reload import RulesSource
from agents.routing.rules import Decision, Menu, PlayMenu, Reject, Route, RoutingRules
from hub.logs import get_logger
from hub.sdk import Agent
from hub.sdk.discovery import AgentOptions

log = get_logger(__name__)
DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")

__all__ = [
    "AGENT_NAME",
    "DRY_RUN_NAME",
    "AudioOpener",
    "Decision",
    "Menu",
    "MenuResult",
    "PlayMenu",
    "Prompt",
    "PromptError",
    "Reject",
    "Route",
    "RoutingAgent",
    "RoutingConfig",
    "RoutingRules",
    "RulesSource",
    "build",
    "load_wav",
    "run_menu",
    "tone_prompt",
]


def build(options: AgentOptions) -> Agent:
    """The agent ``masterlinc agent run routing`` starts: rules from ``--rules``, else ML_ROUTING__RULES_FILE, else
    the packaged defaults."""
    settings = options.settings
    path: Path | None = options.rules or (settings.routing.rules_file if settings is not None else None)
    if path is None:
        log.warning("no routing rules given (--rules, ML_ROUTING__RULES_FILE): the packaged defaults apply")
        path = DEFAULT_RULES
    source = RulesSource.from_file(path)  # RuleError (a ValueError) names the line
    config = RoutingConfig(
        dry_run=options.dry_run,
        route_points={p.id: p.client_id for p in settings.pbxs} if settings is not None else {},
        safe_routes=_safe_routes(options),
        watch_interval_s=settings.routing.watch_interval_s if settings is not None else 1.0,
        audio_connect_s=settings.routing.audio_connect_s if settings is not None else 10.0,
        sighup=True,
    )
    return RoutingAgent(source, config, pbxs=settings.pbxs if settings is not None else ()).agent


def _safe_routes(options: AgentOptions) -> dict[str, str]:
    settings = options.settings
    if settings is None:
        return {}
    coordinator = settings.coordinator
    return {p.id: route for p in settings.pbxs if (route := coordinator.safe_route_for(p.id)) is not None}
