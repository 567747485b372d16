"""The worker's lease check (D§8): only a leased call's owner, the coordinator, or an issuer trusted to override may
control it. Filled into ``Worker(lease_check=...)``; a refusal is ``forbidden`` with who owns the call and what to do.

Issuers on the bus are what commands say they are (``agent:<name>``, ``mcp:<token id>``): restrict who may publish
on ``ml.cmd.>`` with NATS permissions where that matters. ``override`` on a command is honoured only for issuers
matching ``override_issuers`` (by default the MCP facade, which sets it only for tokens with the override scope).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from nats.js import JetStreamContext

from hub.bus.kv import CALL_LEASES, open_bucket
from hub.sdk.agent import COORDINATOR, issuer
from hub.sdk.leases import LeaseStore
from hub.worker.gateway import CommandFailure
from schemas.commands import CommandBase
from schemas.common import ErrorCode


class LeaseGuard:
    def __init__(self, js: JetStreamContext, *, override_issuers: Sequence[str] = ("mcp:*",)) -> None:
        self._js = js
        self._store: LeaseStore | None = None
        self._override = tuple(override_issuers)
        self.refused = 0

    async def _leases(self) -> LeaseStore:
        if self._store is None:
            self._store = LeaseStore(await open_bucket(self._js, CALL_LEASES))
        return self._store

    def may_override(self, command: CommandBase) -> bool:
        return command.override and any(fnmatch.fnmatchcase(command.issued_by, p) for p in self._override)

    async def __call__(self, command: CommandBase) -> bool:
        if command.call_id is None or command.issued_by == issuer(COORDINATOR):
            return True
        try:
            held = await (await self._leases()).get(command.pbx_id, command.call_id)
        except Exception as exc:  # fail closed: an unknown owner must not be overridden by accident
            raise CommandFailure(
                ErrorCode.PBX_UNAVAILABLE, f"cannot read the lease of call {command.call_id}: {exc}; retry shortly"
            ) from None
        if held is None:
            return True
        lease = held.lease
        if command.issued_by == issuer(lease.agent) or self.may_override(command):
            return True
        self.refused += 1
        state = "its lease expired and it is being sent to the safe route" if lease.state == "expired" else ""
        raise CommandFailure(
            ErrorCode.FORBIDDEN,
            f"call {command.call_id} is owned by agent {lease.agent!r} (lease until "
            f"{lease.until.isoformat(timespec='seconds')}){'; ' + state if state else ''}: only its owner "
            f"(issued_by {issuer(lease.agent)!r}) or an issuer with the override scope may control it. Ask the owner "
            "to hand the call off, or wait until it releases it",
        )
