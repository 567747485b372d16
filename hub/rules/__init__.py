"""One rule loader for the coordinator (who handles a call) and the routing agent (where it goes).

Rules are YAML or TOML; every value keeps its source position, so an error names the file, the line and the problem.
"""

from hub.rules.loader import RuleError, load_rules, parse_rules
from hub.rules.model import CallContext, Match, Rule, RuleSet, Schedule

__all__ = ["CallContext", "Match", "Rule", "RuleError", "RuleSet", "Schedule", "load_rules", "parse_rules"]
