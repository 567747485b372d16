"""The call-control port over the agent SDK: every command goes through the :class:`hub.sdk.Context` of the event
that gave Basma the call (``agent.assigned`` or ``agent.handed_off``), so it is issued as ``agent:basma``, targets
the owned call and leg, and has an id derived from that event and a purpose.

Purposes are ``<action>.<n>`` (the n-th action of that kind in the session): a redelivered event that starts the
session again repeats the same ids, so the worker answers with the stored result instead of acting twice, while a
second attempt after a failed one gets an id of its own. A transfer is ``ctx.handoff(to_extension=...)``: D§7's
warm transfer (``agent.handed_off`` with the summary and context, attach_participant_data, then transferto, then
the lease is released). A park releases the lease once the call sits in the orbit; a drop ends the call, and the
runtime releases the lease at ``call.ended``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from agents.basma.ports import ControlResult
from hub.sdk import Context, Drop, NotOwnerError, Park, SendMessage, SendMessageArgs
from schemas.commands import CommandResult
from schemas.common import LegRef


def _translated(result: CommandResult | None) -> ControlResult:
    if result is None:  # only a handoff to an agent returns None; Basma hands calls to people
        return ControlResult(ok=True)
    if result.ok:
        return ControlResult(ok=True, message=str(result.result) if result.result else "")
    if result.error is None:
        return ControlResult(ok=False, code="outcome_unknown", message="the command failed without an error")
    return ControlResult(ok=False, code=str(result.error.code), message=result.error.message)


class SdkCallControl:
    def __init__(self, ctx: Context, leg: LegRef) -> None:
        self._ctx = ctx
        self._leg = leg
        self._actions: Counter[str] = Counter()

    def _purpose(self, action: str) -> str:
        self._actions[action] += 1
        return f"{action}.{self._actions[action]}"

    async def transfer(self, to: str, summary: str | None, context: Mapping[str, Any] | None = None) -> ControlResult:
        try:
            result = await self._ctx.handoff(
                to_extension=to, summary=summary or "", context=context, purpose=self._purpose("handoff")
            )
        except NotOwnerError as exc:
            return ControlResult(ok=False, code="forbidden", message=str(exc))
        return _translated(result)

    async def park(self) -> ControlResult:
        result = _translated(await self._ctx.send(Park, leg=self._leg, purpose=self._purpose("park")))
        if result.ok:
            await self._ctx.release("parked")
        return result

    async def drop(self) -> ControlResult:
        return _translated(await self._ctx.send(Drop, leg=self._leg, purpose=self._purpose("drop")))

    async def send_message(self, to: str, text: str) -> ControlResult:
        args = SendMessageArgs(to=to, text=text)
        return _translated(await self._ctx.send(SendMessage, args=args, purpose=self._purpose("send_message")))
