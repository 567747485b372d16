"""The dial policy (D§8): which destinations an issuer may call.

Evaluation order, first match wins:
1. an explicit ``deny`` pattern -> denied;
2. an explicit ``allow`` pattern -> allowed;
3. for restricted issuers (MCP tokens by default): emergency, premium-rate and international destinations -> denied;
4. otherwise allowed.

Emergency numbers are denied to assistants on purpose: an assistant that dials 911 by mistake ties up an emergency
line; a person can still dial from their phone. Numbers are normalised first (an outside-line prefix such as ``9``
is stripped), so ``9911`` cannot slip past a rule for ``911``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

# Numbers that are emergency services almost everywhere. Country-specific ones (110, 118, 119, 101-103...) are also
# common extension numbers on a PBX, so they are not defaults: add them with `emergency=` where they apply.
DEFAULT_EMERGENCY = ("911", "112", "999", "000", "933")
DEFAULT_PREMIUM = (
    r"^\+?1?(900|976)\d{7}$",  # NANP premium
    r"^(\+44|0)9\d{8,9}$",  # UK 09
    r"^(\+49|0)900\d+$",  # DE 0900
    r"^(\+33|0)8[9]\d{7}$",  # FR 089
    r"^(\+61|0)?19\d{4,8}$",  # AU 19xx
)


def _without_feature_codes(number: str) -> set[str]:
    """The number and every way of reading feature codes off its front (``*67911`` -> 911; ``*82*911`` -> 911)."""
    seen = {number}
    todo = [number]
    while todo:
        current = todo.pop()
        if current[:1] not in ("*", "#"):
            continue
        stars = len(current) - len(current.lstrip("*#"))
        for digits in (1, 2, 3):
            head = current[: stars + digits]
            if len(head) == stars + digits and head[stars:].isdigit():
                rest = current[stars + digits :].lstrip("*#")
                if rest and rest not in seen:
                    seen.add(rest)
                    todo.append(rest)
    return seen


class Verdict(StrEnum):
    ALLOWED = "allowed"
    DENIED_RULE = "denied_by_rule"
    DENIED_EMERGENCY = "denied_emergency"
    DENIED_PREMIUM = "denied_premium_rate"
    DENIED_INTERNATIONAL = "denied_international"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    number: str
    reason: str

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOWED


@dataclass(frozen=True, kw_only=True)
class DialPolicy:
    """Configured rules; patterns are regular expressions matched against the normalised number."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    emergency: tuple[str, ...] = DEFAULT_EMERGENCY
    premium: tuple[str, ...] = DEFAULT_PREMIUM
    home_country_code: str = "1"
    international_prefixes: tuple[str, ...] = ("011", "00")
    outside_line_prefix: str = ""
    restricted_issuer_prefixes: tuple[str, ...] = ("mcp:",)
    _compiled: dict[str, tuple[re.Pattern[str], ...]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("allow", "deny", "premium"):
            try:
                self._compiled[name] = tuple(re.compile(p) for p in getattr(self, name))
            except re.error as exc:
                raise ValueError(
                    f"dial policy: {name} pattern {exc.pattern!r} is not a regular expression: {exc}"
                ) from None

    def normalise(self, number: str) -> str:
        digits = re.sub(r"[\s().-]", "", number)
        if self.outside_line_prefix and digits.startswith(self.outside_line_prefix) and len(digits) > 3:
            digits = digits[len(self.outside_line_prefix) :]
        return digits

    def is_restricted(self, issuer: str) -> bool:
        return issuer.startswith(self.restricted_issuer_prefixes)

    def check(self, number: str, issuer: str) -> Decision:
        n = self.normalise(number)
        for pattern in self._compiled["deny"]:
            if pattern.search(n):
                return Decision(Verdict.DENIED_RULE, n, f"{n} matches the deny rule {pattern.pattern!r}")
        for pattern in self._compiled["allow"]:
            if pattern.search(n):
                return Decision(Verdict.ALLOWED, n, f"allowed by rule {pattern.pattern!r}")
        if self.is_restricted(issuer):
            raw = re.sub(r"[\s().-]", "", number)  # with the outside-line prefix too: "911" is not "9" + "11"
            if self._reaches_emergency(n) or self._reaches_emergency(raw):
                return Decision(Verdict.DENIED_EMERGENCY, n, f"{n} reaches an emergency number: assistants may not "
                                "dial it")  # fmt: skip
            dialled = _without_feature_codes(n.rstrip("#"))  # *67 before a number still dials it
            if any(p.search(d) for p in self._compiled["premium"] for d in dialled):
                return Decision(Verdict.DENIED_PREMIUM, n, f"{n} is a premium-rate number")
            if any(self._international(d) for d in dialled):
                return Decision(
                    Verdict.DENIED_INTERNATIONAL,
                    n,
                    f"{n} is international (home country +{self.home_country_code}); an operator can allow it "
                    "with a dial-policy allow rule",
                )
        return Decision(Verdict.ALLOWED, n, "no rule restricts it")

    def _reaches_emergency(self, n: str) -> bool:
        """Feature codes before the number (``*67911`` hides the caller id and still dials 911), a send key after it
        (``911#``), a trunk or country prefix (``1911``, ``+1911``) or an international prefix cannot hide one."""
        candidates = _without_feature_codes(n.rstrip("#"))
        candidates |= {c.lstrip("+") for c in candidates}
        for prefix in (f"+{self.home_country_code}", self.home_country_code, *self.international_prefixes):
            candidates |= {c[len(prefix) :] for c in list(candidates) if c.startswith(prefix)}
        return any(c in self.emergency for c in candidates)

    def _international(self, n: str) -> bool:
        if n.startswith("+"):
            return not n[1:].startswith(self.home_country_code)
        return any(n.startswith(p) and len(n) > len(p) + 6 for p in self.international_prefixes)
