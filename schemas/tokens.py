"""Subject tokens: every piece of a NATS subject is validated, never built from raw input (D§3).

A token is ``[A-Za-z0-9_-]+``: no dots (they split subjects), no ``*`` or ``>`` (wildcards), no spaces. A pbx id is
narrower, ``[a-z0-9-]+``, because operators type it in configuration.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")
PBX_ID_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62})")
MAX_TOKEN_LEN = 128


class InvalidTokenError(ValueError):
    """A value cannot be used as a subject token. ``what`` names the field, ``value`` is the offending input."""

    def __init__(self, what: str, value: object, rule: str) -> None:
        self.what = what
        self.value = value
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        super().__init__(f"{what} {shown} is not a valid subject token: {rule}")


def check_token(value: str, what: str = "token") -> str:
    """Return ``value`` if it is a safe subject token, else raise :class:`InvalidTokenError` saying why."""
    if not isinstance(value, str):
        raise InvalidTokenError(what, value, "it must be a string")
    if not value:
        raise InvalidTokenError(what, value, "it is empty")
    if len(value) > MAX_TOKEN_LEN:
        raise InvalidTokenError(what, value, f"it is longer than {MAX_TOKEN_LEN} characters")
    if TOKEN_RE.fullmatch(value) is None:
        bad = sorted({c for c in value if TOKEN_RE.fullmatch(c) is None})
        shown = "".join(bad).replace(" ", "<space>")
        raise InvalidTokenError(
            what, value, f"use only letters, digits, '_' and '-' (found {shown!r}; dots and wildcards are not allowed)"
        )
    return value


def check_pbx_id(value: str) -> str:
    """A pbx id is a configured short name: lowercase letters, digits and '-', starting with a letter or digit."""
    if not isinstance(value, str) or PBX_ID_RE.fullmatch(value) is None:
        raise InvalidTokenError(
            "pbx id", value, "use 1-63 lowercase letters, digits and '-', starting with a letter or digit"
        )
    return value


Token = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$", min_length=1, max_length=MAX_TOKEN_LEN)]
"""A string field that must be a valid subject token (checked in pydantic-core: the recorder validates every event)."""

PbxId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
"""A pbx id field."""
