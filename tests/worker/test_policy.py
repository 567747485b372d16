"""The dial policy: defaults protect assistants from emergency, premium-rate and international numbers."""

from __future__ import annotations

import pytest

from hub.worker.policy import DialPolicy, Verdict

MCP = "mcp:tok_1"
AGENT = "agent:routing"


@pytest.mark.parametrize(
    ("number", "verdict"),
    [
        ("911", Verdict.DENIED_EMERGENCY),
        ("112", Verdict.DENIED_EMERGENCY),
        ("+19005551234", Verdict.DENIED_PREMIUM),
        ("19765551234", Verdict.DENIED_PREMIUM),
        ("+442071234567", Verdict.DENIED_INTERNATIONAL),
        ("011442071234567", Verdict.DENIED_INTERNATIONAL),
        ("+15551230000", Verdict.ALLOWED),
        ("101", Verdict.ALLOWED),
    ],
)
def test_defaults_for_assistants(number: str, verdict: Verdict) -> None:
    assert DialPolicy().check(number, MCP).verdict is verdict


def test_agents_are_not_restricted_by_default() -> None:
    policy = DialPolicy()
    assert policy.check("+442071234567", AGENT).allowed
    assert policy.check("911", AGENT).allowed


def test_an_outside_line_prefix_cannot_hide_an_emergency_number() -> None:
    policy = DialPolicy(outside_line_prefix="9")
    assert policy.check("9911", MCP).verdict is Verdict.DENIED_EMERGENCY
    assert policy.check("9 (900) 555-1234", MCP).verdict is Verdict.DENIED_PREMIUM


def test_explicit_allow_opens_a_country_and_deny_beats_allow() -> None:
    policy = DialPolicy(allow=(r"^\+44",), deny=(r"^\+4420",))
    assert policy.check("+441612345678", MCP).allowed
    decision = policy.check("+442071234567", MCP)
    assert decision.verdict is Verdict.DENIED_RULE
    assert "deny rule" in decision.reason


def test_a_broken_pattern_is_reported_with_the_pattern() -> None:
    with pytest.raises(ValueError, match=r"deny pattern '\(' is not a regular expression"):
        DialPolicy(deny=("(",))


def test_international_denial_says_how_to_allow_it() -> None:
    assert "allow rule" in DialPolicy().check("+33123456789", MCP).reason


def test_common_extension_numbers_are_not_taken_for_emergency_numbers() -> None:
    for extension in ("102", "110", "118", "119"):
        assert DialPolicy().check(extension, MCP).allowed
    assert DialPolicy(emergency=("110",)).check("110", MCP).verdict is Verdict.DENIED_EMERGENCY
