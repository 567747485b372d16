"""The worker's gateway to a real (or simulated) 3CX: each command of D§7 as the Call Control API really does it.

What 3CX cannot do is said, not faked: hold is a park (transferto an orbit), recording is hub-side, messages need a
provider, presence and history need XAPI. Without the piece they need, commands answer ``not_supported`` with the
reason. Queries read XAPI (users, presence, call history, recordings, chat) and Call Control (active calls).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from hub.config import PbxConfig
from hub.pbx.callcontrol import CallControlClient, retrying_until
from hub.pbx.errors import PbxError, PbxNotFound
from hub.pbx.xapi import XapiClient, parse_duration
from hub.worker.gateway import CommandFailure
from hub.worker.messaging import MessagingProvider
from schemas import commands as c
from schemas.common import ErrorCode, LegRef

if TYPE_CHECKING:  # the recorder reads audio through hub.audio, which needs hub.pbx's token types
    from hub.worker.recording import HubRecorder


class CallControlGateway:
    def __init__(
        self,
        client: CallControlClient,
        pbx: PbxConfig,
        messaging: MessagingProvider | None = None,
        xapi: XapiClient | None = None,
        recorder: HubRecorder | None = None,
        call_id_of: Callable[[str, int], Awaitable[str | None]] | None = None,
    ) -> None:
        self._client = client
        self._pbx = pbx
        self._messaging = messaging
        self._xapi = xapi
        self._recorder = recorder
        self._call_id_of = call_id_of  # (pbx, 3CX callid) -> the hub's call_id, from ingest's call-id map

    async def execute(self, command: c.CommandBase) -> dict[str, Any]:
        """A request the PBX refuses (429, 503) is tried again until the command's deadline, never one it took."""
        try:
            with retrying_until(command.deadline.timestamp()):
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
        if isinstance(command, c.SetPresence) and self._xapi is not None:
            return await self._set_presence(self._xapi, command.args.extension, command.args.profile)
        leg = command.leg
        if leg is None or not command.TARGETS_LEG:
            raise _unsupported(command)
        if isinstance(command, c.StartRecording | c.StopRecording) and self._recorder is not None:
            return await self._recording(self._recorder, command, leg)
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

    async def _recording(self, recorder: HubRecorder, command: c.CommandBase, leg: LegRef) -> dict[str, Any]:
        if isinstance(command, c.StopRecording):
            return await recorder.stop(command)
        if leg.dn != self._pbx.client_id:
            raise CommandFailure(
                ErrorCode.NOT_SUPPORTED,
                f"the hub records only legs on its own DN ({self._pbx.client_id}: 3CX streams audio only for legs "
                "the API controls); PBX recordings are listed by get_recordings",
            )
        participant = await self._client.participant(leg.dn, leg.participant_id)
        if participant.get("status") != "Connected":
            status = participant.get("status")
            raise CommandFailure(
                ErrorCode.INVALID_STATE, f"the leg is {status}: a recording starts once it is Connected"
            )
        return await recorder.start(command)

    async def _set_presence(self, xapi: XapiClient, extension: str, profile: str) -> dict[str, Any]:
        """PATCH CurrentProfileName with the PBX's own spelling of the profile, read from ForwardingProfiles (the
        accepted spelling is unverified: "Away" vs a UI label), matched without regard to case or spaces."""
        try:
            user = await xapi.user(extension)
        except PbxNotFound:
            raise CommandFailure(ErrorCode.NOT_FOUND, f"extension {extension} is not a user on this PBX") from None
        profiles = await xapi.forwarding_profiles(int(user["Id"]))
        names = [str(p.get("Name") or "") for p in profiles if p.get("Name")]

        def norm(name: str) -> str:
            return "".join(name.lower().split())

        match = next((n for n in names if norm(n) == norm(profile)), None)
        if match is None:
            custom = {norm(str(p.get("CustomName") or "")): str(p["Name"]) for p in profiles if p.get("CustomName")}
            match = custom.get(norm(profile))
        if match is None:
            raise CommandFailure(ErrorCode.INVALID_ARGUMENT,
                                 f"{profile!r} is not a presence profile of {extension}; use one of: "
                                 + ", ".join(names))  # fmt: skip
        await xapi.set_user(int(user["Id"]), {"CurrentProfileName": match})
        return {"extension": extension, "profile": match, "previous_profile": user.get("CurrentProfileName")}

    async def query(self, query: c.QueryBase) -> tuple[list[dict[str, Any]], int | None]:
        try:
            return await self._query(query)
        except PbxError as exc:
            raise CommandFailure(exc.code, str(exc), pbx_reason=exc.reason) from None

    async def _query(self, query: c.QueryBase) -> tuple[list[dict[str, Any]], int | None]:
        if isinstance(query, c.ActiveCalls):
            calls: dict[int, dict[str, Any]] = {}
            for info in await self._client.dns():
                for p in info.get("participants", []):
                    call = calls.setdefault(int(p.get("callid", 0)), {"pbx_call_id": p.get("callid"), "legs": []})
                    call["legs"].append({"dn": p.get("dn"), "participant_id": p.get("id"), "legid": p.get("legid"),
                                         "status": p.get("status"), "party": p.get("party_caller_id"),
                                         "party_name": p.get("party_caller_name")})  # fmt: skip
            for callid, call in calls.items():
                call["call_id"] = await self._call_id_of(query.pbx_id, callid) if self._call_id_of else None
            return list(calls.values()), len(calls)
        xapi = self._xapi
        if isinstance(query, c.Extensions):
            if xapi is None:
                items = [{"number": d["dn"], "type": d["type"], "devices": d.get("devices", [])}
                         for d in await self._client.dns() if d.get("type") == "Wextension"]  # fmt: skip
            else:
                items = [_user(u) for u in await xapi.users(select=USER_FIELDS)]
            return items[query.args.offset : query.args.offset + query.args.limit], len(items)
        if xapi is None:
            raise CommandFailure(ErrorCode.NOT_SUPPORTED, f"{query.NAME} reads the PBX's configuration API (XAPI), "
                                 "which this API client may not use: tick 3CX Configuration API Access")  # fmt: skip
        if isinstance(query, c.Presence):
            if query.args.extension:
                return [_user(await xapi.user(query.args.extension))], 1
            users = [_user(u) for u in await xapi.users(select=USER_FIELDS)]
            return users, len(users)
        if isinstance(query, c.CallHistory):
            a = query.args
            page = await xapi.call_history(since=a.since, until=a.until, extension=a.extension, limit=a.limit,
                                           skip=a.offset)  # fmt: skip
            return [_segment(r) for r in page.rows], page.count
        if isinstance(query, c.Recordings):
            page = await xapi.recordings(limit=query.args.limit, skip=query.args.offset)
            return [_recording(r) for r in page.rows], page.count
        if isinstance(query, c.ChatHistory):
            page = await xapi.chat_history(since=query.args.since, limit=query.args.limit, skip=query.args.offset)
            return [_chat(r) for r in page.rows], page.count
        raise CommandFailure(ErrorCode.NOT_SUPPORTED, f"{query.NAME} is not supported")


USER_FIELDS = ("Number", "DisplayName", "FirstName", "LastName", "IsRegistered", "CurrentProfileName", "QueueStatus")


def _user(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": row.get("Number"), "name": row.get("DisplayName") or
        " ".join(x for x in (row.get("FirstName"), row.get("LastName")) if x), "registered": row.get("IsRegistered"),
        "profile": row.get("CurrentProfileName"), "queue_status": row.get("QueueStatus"),
    }  # fmt: skip


def _segment(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "segment_id": row.get("SegmentId"), "started_at": row.get("SegmentStartTime"),
        "ended_at": row.get("SegmentEndTime"), "from_dn": row.get("SrcDn"), "from_number": row.get("SrcCallerNumber"),
        "from_name": row.get("SrcDisplayName"), "to_dn": row.get("DstDn"), "to_number": row.get("DstCallerNumber"),
        "to_name": row.get("DstDisplayName"), "answered": row.get("CallAnswered"),
        "talk_seconds": parse_duration(row.get("CallTime")),
    }  # fmt: skip


def _recording(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "recording_id": row.get("Id"), "started_at": row.get("StartTime"), "ended_at": row.get("EndTime"),
        "from": row.get("FromCallerNumber") or row.get("FromDn"), "to": row.get("ToCallerNumber") or row.get("ToDn"),
        "url": row.get("RecordingUrl"), "source": "pbx", "transcription": row.get("Transcription"),
    }  # fmt: skip


def _chat(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "conversation_id": row.get("ConversationId"), "from_number": row.get("FromNo"),
        "from_name": row.get("FromName"), "text": row.get("Message"), "sent_at": row.get("TimeSent"),
        "channel": row.get("ProviderType"), "to": row.get("QueueNumber") or row.get("ChatName"),
    }  # fmt: skip


_UNSUPPORTED: dict[type[c.CommandBase], str] = {
    c.StartRecording: "this worker has no recordings store configured (3CX has no record action: the hub records)",
    c.StopRecording: "this worker has no recordings store configured (3CX has no record action: the hub records)",
    c.SendMessage: "no messaging provider is configured (3CX has no public send-message API)",
    c.SetPresence: "presence is set through the PBX's configuration API (XAPI), which this API client may not use",
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
