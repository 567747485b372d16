"""The worker's gateway to a real (or simulated) 3CX: each command of D§7 as the Call Control API really does it.

What 3CX cannot do is said, not faked: hold is a park (transferto an orbit), recording is hub-side (not yet built
here), messages need a provider, presence needs XAPI. Those commands answer ``not_supported`` with the reason.
"""

from __future__ import annotations

from typing import Any

from hub.config import PbxConfig
from hub.pbx.callcontrol import CallControlClient
from hub.pbx.errors import PbxError, PbxNotFound
from hub.worker.gateway import CommandFailure
from hub.worker.messaging import MessagingProvider
from schemas import commands as c
from schemas.common import ErrorCode


class CallControlGateway:
    def __init__(self, client: CallControlClient, pbx: PbxConfig, messaging: MessagingProvider | None = None) -> None:
        self._client = client
        self._pbx = pbx
        self._messaging = messaging

    async def execute(self, command: c.CommandBase) -> dict[str, Any]:
        try:
            return await self._execute(command)
        except PbxError as exc:
            raise CommandFailure(exc.code, str(exc), pbx_reason=exc.reason) from None

    async def _execute(self, command: c.CommandBase) -> dict[str, Any]:
        if isinstance(command, c.MakeCall):
            return await self._make_call(command.args.from_, command.args.to)
        if isinstance(command, c.Resume):
            return await self._make_call(command.args.to, f"{self._pbx.pickup_code}{command.args.orbit}")
        if isinstance(command, c.SendMessage) and self._messaging is not None:
            return await self._messaging.send(
                message_id=command.command_id, pbx_id=command.pbx_id, to=command.args.to, text=command.args.text
            )
        leg = command.leg
        if leg is None or not command.TARGETS_LEG:
            raise _unsupported(command)
        if isinstance(command, c.Drop):
            try:
                await self._client.action(leg.dn, leg.participant_id, "drop")
            except PbxNotFound:
                return {"already_gone": True}
            return {"already_gone": False}
        if isinstance(command, c.Answer):
            return _leg(await self._client.action(leg.dn, leg.participant_id, "answer"))
        if isinstance(command, c.Divert):
            body = {"destination": command.args.to, "reason": command.args.reason}
            return _leg(await self._client.action(leg.dn, leg.participant_id, "divert", body))
        if isinstance(command, c.RouteTo):
            return _leg(
                await self._client.action(leg.dn, leg.participant_id, "routeto", {"destination": command.args.to})
            )
        if isinstance(command, c.Transfer):
            if command.args.summary:
                data = {"attacheddata": {"summary": command.args.summary}}
                await self._client.action(leg.dn, leg.participant_id, "attach_participant_data", data)
            result = await self._client.action(
                leg.dn, leg.participant_id, "transferto", {"destination": command.args.to}
            )
            return {**_leg(result), "warm": bool(command.args.summary)}
        if isinstance(command, c.Park):
            orbit = self._pbx.park_orbit
            await self._client.action(leg.dn, leg.participant_id, "transferto", {"destination": orbit})
            return {"orbit": orbit}
        raise _unsupported(command)

    async def _make_call(self, source: str, destination: str) -> dict[str, Any]:
        """From a device of the source DN (re-reading devices once when the id went stale), else the DN form."""
        devices = await self._client.devices(source)
        registered = [d for d in devices if d.get("user_agent")] or devices
        if registered:
            try:
                result = await self._client.makecall(source, destination, device_id=registered[0]["device_id"])
            except PbxNotFound:
                devices = await self._client.devices(source)
                fresh = [d for d in devices if d.get("user_agent")] or devices
                if fresh:
                    result = await self._client.makecall(source, destination, device_id=fresh[0]["device_id"])
                else:
                    result = await self._client.makecall(source, destination)
        else:
            result = await self._client.makecall(source, destination)
        return _leg(result)

    async def reconcile(self, command: c.CommandBase) -> dict[str, Any] | None:
        """After a worker died mid-command: only a drop can be proven from state (the leg is gone)."""
        if isinstance(command, c.Drop) and command.leg is not None:
            try:
                await self._client.participant(command.leg.dn, command.leg.participant_id)
            except PbxNotFound:
                return {"already_gone": True, "reconciled": True}
            except PbxError:
                return None
        return None

    async def query(self, query: c.QueryBase) -> tuple[list[dict[str, Any]], int | None]:
        try:
            if isinstance(query, c.ActiveCalls):
                items = [p for dn in await self._client.dns() for p in dn.get("participants", [])]
                return items, len(items)
            if isinstance(query, c.Extensions):
                items = [{"number": d["dn"], "type": d["type"], "devices": d.get("devices", [])}
                         for d in await self._client.dns() if d.get("type") == "Wextension"]  # fmt: skip
                page = items[query.args.offset : query.args.offset + query.args.limit]
                return page, len(items)
        except PbxError as exc:
            raise CommandFailure(exc.code, str(exc), pbx_reason=exc.reason) from None
        raise CommandFailure(ErrorCode.NOT_SUPPORTED, f"{query.NAME} needs the XAPI client, which is not built yet")


_UNSUPPORTED: dict[type[c.CommandBase], str] = {
    c.StartRecording: "hub-side recording is not built yet (3CX has no record action)",
    c.StopRecording: "hub-side recording is not built yet (3CX has no record action)",
    c.SendMessage: "no messaging provider is configured (3CX has no public send-message API)",
    c.SetPresence: "presence needs the XAPI client, which is not built yet",
}


def _unsupported(command: c.CommandBase) -> CommandFailure:
    return CommandFailure(ErrorCode.NOT_SUPPORTED, _UNSUPPORTED.get(type(command), f"{command.NAME} is not supported"))


def _leg(result: dict[str, Any]) -> dict[str, Any]:
    participant = result.get("result") or {}
    return {
        "participant_id": participant.get("id"),
        "dn": participant.get("dn"),
        "status": participant.get("status"),
        "pbx_call_id": participant.get("callid"),
    }
