"""D§5: a command whose target leg no longer belongs to its call is refused.

3CX participant ids are small and reused: a command aimed at leg 7 of yesterday's call, or sent late, could act on
a stranger's call that now has participant 7. Before a leg command the worker reads the participant and checks
its ``legid`` (when the command gives one) and, through the call-id map ingest keeps in KV, that its 3CX callid still
maps to the command's ``call_id``. Without ingest (no entry for the callid) only the legid can be checked.
"""

from __future__ import annotations

import json

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from hub.pbx.callcontrol import CallControlClient
from hub.pbx.errors import PbxError, PbxNotFound
from hub.worker.gateway import CommandFailure
from schemas import commands as c
from schemas.common import ErrorCode


class LegOwnership:
    def __init__(self, rest: CallControlClient, call_ids: KeyValue | None) -> None:
        self._rest = rest
        self._ids = call_ids
        self.refused = 0

    async def check(self, command: c.CommandBase) -> None:
        leg = command.leg
        if leg is None or command.call_id is None or not command.TARGETS_LEG:
            return
        try:
            participant = await self._rest.participant(leg.dn, leg.participant_id)
        except PbxNotFound:
            if isinstance(command, c.Drop):
                return  # already gone: the drop answers already_gone
            raise CommandFailure(ErrorCode.NOT_FOUND, f"leg {leg.dn}/{leg.participant_id} is gone") from None
        except PbxError as exc:
            raise CommandFailure(exc.code, str(exc), pbx_reason=exc.reason) from None
        legid = participant.get("legid")
        if leg.legid is not None and legid is not None and int(legid) != leg.legid:
            self._refuse(command, f"participant {leg.participant_id} on {leg.dn} is now another leg (legid {legid})")
        owner = await self.call_id_of(command.pbx_id, participant.get("callid"))
        if owner is not None and owner != command.call_id:
            self._refuse(command, f"participant {leg.participant_id} on {leg.dn} now belongs to call {owner}")

    async def call_id_of(self, pbx_id: str, callid: object) -> str | None:
        """The hub's call_id of a live 3CX callid (None without ingest, or once the call ended)."""
        if self._ids is None or not isinstance(callid, int):
            return None
        try:
            entry = await self._ids.get(f"{pbx_id}.{callid}")
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        raw = json.loads(entry.value)
        return None if raw.get("ended") else str(raw.get("call_id"))

    def _refuse(self, command: c.CommandBase, why: str) -> None:
        self.refused += 1
        raise CommandFailure(
            ErrorCode.NOT_FOUND,
            f"{why}, not to call {command.call_id} (3CX reuses participant ids): read the call's legs again",
        )
