"""The call-control port over the hub's commands (:class:`hub.sdk.CommandClient` -> ML_COMMANDS -> the worker).

Every command targets the one call and leg the session owns. Idempotency keys are derived from the call, the leg and
the action's ordinal, so a command re-sent after a lost reply is answered from the worker's idempotency store rather
than run twice. A transfer with a summary is D§7's warm transfer (a handoff event and attached data, then transferto).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol, TypeVar

from agents.basma.ports import CallInfo, ControlResult
from schemas import commands as c
from schemas.common import utcnow

CommandT = TypeVar("CommandT", bound=c.CommandBase)


class CommandSender(Protocol):
    async def send(self, command: c.CommandBase, *, wait: float | None = None) -> c.CommandResult: ...


class HubCallControl:
    def __init__(self, client: CommandSender, call: CallInfo, *, deadline_s: float = 10.0) -> None:
        self._client = client
        self._call = call
        self._deadline = timedelta(seconds=deadline_s)
        self._ordinal = 0

    def _command(self, cls: type[CommandT], action: str, args: dict[str, object] | None = None) -> CommandT:
        self._ordinal += 1
        leg = self._call.leg
        fields: dict[str, object] = {
            "pbx_id": self._call.pbx_id,
            "call_id": self._call.call_id,
            "leg": leg.model_dump(),
            "issued_by": f"agent:{self._call.agent}",
            "idempotency_key": f"{self._call.agent}:{self._call.call_id}:{leg.participant_id}:{action}:{self._ordinal}",
            "deadline": utcnow() + self._deadline,
        }
        if args is not None:
            fields["args"] = args
        return cls.model_validate(fields)

    async def _send(self, command: c.CommandBase) -> ControlResult:
        result = await self._client.send(command)
        if result.ok:
            return ControlResult(ok=True, message=str(result.result) if result.result else "")
        assert result.error is not None
        return ControlResult(ok=False, code=str(result.error.code), message=result.error.message)

    async def transfer(self, to: str, summary: str | None) -> ControlResult:
        return await self._send(self._command(c.Transfer, "transfer", {"to": to, "summary": summary}))

    async def park(self) -> ControlResult:
        return await self._send(self._command(c.Park, "park"))

    async def drop(self) -> ControlResult:
        return await self._send(self._command(c.Drop, "drop"))

    async def send_message(self, to: str, text: str) -> ControlResult:
        return await self._send(self._command(c.SendMessage, "send_message", {"to": to, "text": text}))
