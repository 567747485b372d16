"""What the worker needs from the PBX side, as a Protocol: the 3CX implementation lives with the adapter's REST client.

Errors: a gateway raises :class:`CommandFailure` with one of D§7's codes; anything else it raises is a bug and is
reported as ``pbx_unavailable`` with the exception's text, never as a traceback to the issuer.
"""

from __future__ import annotations

from typing import Any, Protocol

from schemas.commands import CommandBase, QueryBase
from schemas.common import CommandError, ErrorCode


class CommandFailure(Exception):
    """A command could not be carried out; ``code`` is one of D§7's error codes."""

    def __init__(self, code: ErrorCode, message: str, pbx_reason: str | None = None) -> None:
        self.code = code
        self.message = message
        self.pbx_reason = pbx_reason
        super().__init__(f"{code}: {message}")

    def as_error(self) -> CommandError:
        return CommandError(code=self.code, message=self.message, pbx_reason=self.pbx_reason)


class PbxGateway(Protocol):
    async def execute(self, command: CommandBase) -> dict[str, Any]:
        """Carry out the command on the PBX; return the result data."""
        ...

    async def reconcile(self, command: CommandBase) -> dict[str, Any] | None:
        """After a worker died mid-command: read PBX state and say whether the command took effect (None: unknown)."""
        ...

    async def query(self, query: QueryBase) -> tuple[list[dict[str, Any]], int | None]:
        """Answer a query: the items and, when known, the total."""
        ...
