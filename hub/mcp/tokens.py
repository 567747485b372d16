"""Bearer tokens for the MCP facade's HTTP transport: created once, stored hashed, revocable.

A token reads ``mlt_<id>_<secret>``. Only the id (public, used in audit as ``mcp:<id>``) and a salted SHA-256 of the
secret are stored, in ``<data_dir>/mcp_tokens.json`` (mode 0600); the full token is shown once, at creation.

Scopes: ``read`` (resources and get_* tools), ``control`` (tools that act on calls; implies read), ``override``
(control a call leased by another agent; implies control). Each token may carry its own dial quota (calls placed per
UTC day), enforced by the facade before make_call reaches the bus.

The store re-reads the file when it changes, so ``masterlinc mcp token revoke`` takes effect in a running server.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TOKEN_PREFIX = "mlt_"  # noqa: S105 - the public prefix of every token, not a secret
STORE_FILE = "mcp_tokens.json"


class Scope(StrEnum):
    READ = "read"
    CONTROL = "control"
    OVERRIDE = "override"


_IMPLIES: dict[Scope, tuple[Scope, ...]] = {
    Scope.READ: (Scope.READ,),
    Scope.CONTROL: (Scope.CONTROL, Scope.READ),
    Scope.OVERRIDE: (Scope.OVERRIDE, Scope.CONTROL, Scope.READ),
}


def expand_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes with what they imply, in a stable order; ValueError naming the allowed ones otherwise."""
    out: set[Scope] = set()
    for raw in scopes:
        try:
            scope = Scope(raw.strip().lower())
        except ValueError:
            allowed = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {raw!r}; use one of: {allowed}") from None
        out.update(_IMPLIES[scope])
    if not out:
        raise ValueError("a token needs at least one scope: read, control or override")
    return [s.value for s in Scope if s in out]


class TokenRecord(BaseModel):
    """What the store keeps of a token: never the secret itself."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str = ""
    scopes: list[str]
    salt: str
    hash: str
    created_at: datetime
    revoked_at: datetime | None = None
    dial_quota_per_day: int | None = Field(default=None, ge=0)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class _StoreFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    tokens: list[TokenRecord] = Field(default_factory=list)


@dataclass(frozen=True)
class Principal:
    """Who is calling a tool: ``issuer`` goes on every command (``mcp:<token id>``)."""

    token_id: str
    scopes: frozenset[str]
    dial_quota_per_day: int | None = None

    @property
    def issuer(self) -> str:
        return f"mcp:{self.token_id}"

    def has(self, scope: Scope) -> bool:
        return scope.value in self.scopes


LOCAL_PRINCIPAL = Principal(
    token_id="local",  # noqa: S106 - an identity, not a secret
    scopes=frozenset(s.value for s in Scope),
)
"""The stdio transport's principal: the user who started the process controls it."""


@dataclass(frozen=True)
class CreatedToken:
    record: TokenRecord
    token: str
    """The full bearer token: shown once, never stored."""


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


class TokenStore:
    """The token file under the data dir. Safe for one writer (the CLI) and many readers (servers)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: _StoreFile | None = None
        self._stamp: tuple[int, int] | None = None

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> TokenStore:
        return cls(data_dir / STORE_FILE)

    # -- reading

    def _load(self) -> _StoreFile:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._cache, self._stamp = _StoreFile(), None
            return self._cache
        stamp = (stat.st_mtime_ns, stat.st_size)
        if self._cache is None or stamp != self._stamp:
            try:
                self._cache = _StoreFile.model_validate_json(self.path.read_bytes())
            except ValueError as exc:
                raise ValueError(f"token store {self.path} is not valid: {exc}") from None
            self._stamp = stamp
        return self._cache

    def records(self, *, include_revoked: bool = True) -> list[TokenRecord]:
        return [t for t in self._load().tokens if include_revoked or t.active]

    def verify(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked token; None otherwise (constant-time comparison of the hash)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        token_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
        if not sep or not secret:
            return None
        for record in self._load().tokens:
            if record.id == token_id:
                if not record.active:
                    return None
                if hmac.compare_digest(record.hash, _digest(record.salt, secret)):
                    return Principal(record.id, frozenset(record.scopes), record.dial_quota_per_day)
                return None
        return None

    # -- writing

    def _save(self, data: _StoreFile) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".mcp_tokens.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(data.model_dump_json(indent=2))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._cache, self._stamp = None, None

    def create(
        self, *, name: str = "", scopes: Iterable[str] = ("read",), dial_quota_per_day: int | None = None
    ) -> CreatedToken:
        if dial_quota_per_day is not None and dial_quota_per_day < 0:
            raise ValueError("the dial quota is a number of calls per day: 0 or more")
        data = self._load().model_copy(deep=True)
        existing = {t.id for t in data.tokens}
        token_id = secrets.token_hex(4)
        while token_id in existing:
            token_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        record = TokenRecord(
            id=token_id,
            name=name,
            scopes=expand_scopes(scopes),
            salt=salt,
            hash=_digest(salt, secret),
            created_at=datetime.now(UTC),
            dial_quota_per_day=dial_quota_per_day,
        )
        data.tokens.append(record)
        self._save(data)
        return CreatedToken(record=record, token=f"{TOKEN_PREFIX}{token_id}_{secret}")

    def revoke(self, token_id: str) -> TokenRecord:
        """Revoke by id (or by name when no id matches); KeyError saying what exists otherwise."""
        data = self._load().model_copy(deep=True)
        matches = [t for t in data.tokens if t.id == token_id] or [t for t in data.tokens if t.name == token_id]
        if len(matches) != 1:
            known = ", ".join(f"{t.id} ({t.name})" if t.name else t.id for t in data.tokens) or "none"
            what = "no token" if not matches else "several tokens"
            raise KeyError(f"{what} with id or name {token_id!r}; tokens: {known}")
        record = matches[0]
        if record.revoked_at is None:
            record.revoked_at = datetime.now(UTC)
            self._save(data)
        return record


def describe(record: TokenRecord) -> dict[str, Any]:
    """A token's public fields, for listing (no hash, no salt)."""
    return {
        "id": record.id,
        "name": record.name,
        "scopes": record.scopes,
        "dial_quota_per_day": record.dial_quota_per_day,
        "created_at": record.created_at.isoformat(),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "issuer": f"mcp:{record.id}",
    }
