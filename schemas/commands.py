"""Commands and queries (D§7): what agents and assistants ask the PBX worker to do or read.

A command travels on ``ml.cmd.<pbx>.<name>`` (the ML_COMMANDS work queue); the worker answers with a
:class:`CommandResult` and publishes command accepted / succeeded / failed events. A query travels on
``ml.qry.<pbx>.<name>`` (request/reply) and is answered with a :class:`QueryResult`.

Each command names what it *really* does on 3CX in its docstring: 3CX has no hold, no record and no send-message API.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from schemas.common import CommandError, LegRef, Model, UtcDateTime, utcnow
from schemas.identity import new_command_id
from schemas.tokens import PbxId, Token

DEFAULT_DEADLINE = timedelta(seconds=10)

PhoneNumber = Annotated[
    str,
    Field(
        min_length=1,
        max_length=32,
        pattern=r"^\+?[0-9*#]{1,31}$",
        description="Digits, optionally a leading '+', '*' and '#' for feature codes. No spaces or punctuation.",
    ),
]
Extension = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[0-9A-Za-z*#_-]{1,16}$")]


def _default_deadline() -> datetime:
    return utcnow() + DEFAULT_DEADLINE


class CommandBase(Model):
    """The command envelope (D§2)."""

    NAME: ClassVar[str]
    TARGETS_LEG: ClassVar[bool] = True

    command_id: Token = Field(default_factory=new_command_id)
    pbx_id: PbxId
    call_id: Token | None = None
    leg: LegRef | None = None
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    issued_by: Annotated[str, Field(min_length=1, max_length=200)]
    issued_at: UtcDateTime = Field(default_factory=utcnow)
    deadline: UtcDateTime = Field(default_factory=_default_deadline)
    correlation_id: Token | None = None
    override: bool = Field(
        default=False,
        description="The issuer holds the override scope: it may control a call another agent leases. Honoured only "
        "for issuers the worker trusts to say so (by default the MCP facade, which sets it for override tokens).",
    )

    @model_validator(mode="after")
    def _needs_target(self) -> CommandBase:
        if self.TARGETS_LEG and (self.leg is None or self.call_id is None):
            raise ValueError(f"{self.NAME} targets a leg: give both call_id and leg (dn, participant_id)")
        return self

    @property
    def effective_idempotency_key(self) -> str:
        return self.idempotency_key or self.command_id


class MakeCallArgs(Model):
    from_: Extension = Field(
        alias="from", description="The extension (its phone rings first) or the hub's route point."
    )
    to: PhoneNumber
    attached_data: dict[str, str] = Field(default_factory=dict)


class MakeCall(CommandBase):
    """POST /callcontrol/{dn}/devices/{device}/makecall (devices re-read once on 404), else {dn}/makecall."""

    NAME = "make_call"
    TARGETS_LEG = False
    type: Literal["make_call"] = "make_call"
    args: MakeCallArgs


class NoArgs(Model):
    pass


class Answer(CommandBase):
    """participants/{id}/answer: only a direct_control device or a route-point leg (else not_supported)."""

    NAME = "answer"
    type: Literal["answer"] = "answer"
    args: NoArgs = Field(default_factory=NoArgs)


class DivertArgs(Model):
    to: PhoneNumber
    reason: str = "None"


class Divert(CommandBase):
    """participants/{id}/divert: only while the leg rings (route-point legs arrive Connected: use transfer)."""

    NAME = "divert"
    type: Literal["divert"] = "divert"
    args: DivertArgs


class DestinationArgs(Model):
    to: PhoneNumber


class RouteTo(CommandBase):
    """participants/{id}/routeto: adds a route for a ringing or connected leg, which stays until delivery."""

    NAME = "route_to"
    type: Literal["route_to"] = "route_to"
    args: DestinationArgs


class TransferArgs(Model):
    to: PhoneNumber
    summary: Annotated[str, Field(max_length=2000)] | None = Field(
        default=None, description="Warm transfer: a handoff event and attached data carry this summary first."
    )


class Transfer(CommandBase):
    """participants/{id}/transferto: only a Connected leg. With a summary it is D§7's warm transfer."""

    NAME = "transfer"
    type: Literal["transfer"] = "transfer"
    args: TransferArgs


class Drop(CommandBase):
    """participants/{id}/drop: any state; a leg already gone is success (already_gone)."""

    NAME = "drop"
    type: Literal["drop"] = "drop"
    args: NoArgs = Field(default_factory=NoArgs)


class Park(CommandBase):
    """3CX has no hold: transferto a configurable park orbit. Only a Connected leg."""

    NAME = "park"
    type: Literal["park"] = "park"
    args: NoArgs = Field(default_factory=NoArgs)


class ResumeArgs(Model):
    orbit: Extension
    to: Extension = Field(description="The extension that picks the call up (it dials the pickup code).")


class Resume(CommandBase):
    """makecall from ``to`` to the configurable pickup code of the orbit."""

    NAME = "resume"
    TARGETS_LEG = False
    type: Literal["resume"] = "resume"
    args: ResumeArgs


class StartRecording(CommandBase):
    """Hub-side: the leg's audio stream to WAV (legs on the hub's own DN only; else not_supported)."""

    NAME = "start_recording"
    type: Literal["start_recording"] = "start_recording"
    args: NoArgs = Field(default_factory=NoArgs)


class StopRecording(CommandBase):
    """Stops a hub-side recording and publishes recording.stopped with the file's location."""

    NAME = "stop_recording"
    type: Literal["stop_recording"] = "stop_recording"
    args: NoArgs = Field(default_factory=NoArgs)


class SendMessageArgs(Model):
    to: PhoneNumber
    text: Annotated[str, Field(min_length=1, max_length=1600)]


class SendMessage(CommandBase):
    """Through a configured messaging provider (3CX has no public send API); none configured -> not_supported."""

    NAME = "send_message"
    TARGETS_LEG = False
    type: Literal["send_message"] = "send_message"
    args: SendMessageArgs


class SetPresenceArgs(Model):
    extension: Extension
    profile: Annotated[str, Field(min_length=1, max_length=64)]


class SetPresence(CommandBase):
    """XAPI PATCH Users CurrentProfileName, with the name read from the user's ForwardingProfiles."""

    NAME = "set_presence"
    TARGETS_LEG = False
    type: Literal["set_presence"] = "set_presence"
    args: SetPresenceArgs


Command = Annotated[
    MakeCall
    | Answer
    | Divert
    | RouteTo
    | Transfer
    | Drop
    | Park
    | Resume
    | StartRecording
    | StopRecording
    | SendMessage
    | SetPresence,
    Field(discriminator="type"),
]

COMMAND_TYPES: tuple[type[CommandBase], ...] = (
    MakeCall,
    Answer,
    Divert,
    RouteTo,
    Transfer,
    Drop,
    Park,
    Resume,
    StartRecording,
    StopRecording,
    SendMessage,
    SetPresence,
)
COMMAND_CLASSES: dict[str, type[CommandBase]] = {cls.NAME: cls for cls in COMMAND_TYPES}


class CommandResult(Model):
    """The worker's answer to a command."""

    command_id: str
    ok: bool
    result: dict[str, Any] = Field(default_factory=dict)
    error: CommandError | None = None
    duplicate: bool = Field(default=False, description="True when an earlier result for the same key was returned.")

    @model_validator(mode="after")
    def _error_iff_failed(self) -> CommandResult:
        if self.ok == (self.error is not None):
            raise ValueError("a result carries an error exactly when ok is false")
        return self


# --------------------------------------------------------------------------- queries


class QueryBase(Model):
    NAME: ClassVar[str]

    query_id: Token = Field(default_factory=new_command_id)
    pbx_id: PbxId
    issued_by: str = "anonymous"
    deadline: UtcDateTime = Field(default_factory=_default_deadline)


class Page(Model):
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class ActiveCalls(QueryBase):
    NAME = "active_calls"
    type: Literal["active_calls"] = "active_calls"
    args: NoArgs = Field(default_factory=NoArgs)


class CallHistoryArgs(Page):
    since: UtcDateTime | None = None
    until: UtcDateTime | None = None
    extension: Extension | None = None

    @model_validator(mode="after")
    def _window(self) -> CallHistoryArgs:
        if self.since and self.until and self.since > self.until:
            raise ValueError("since is after until: swap them or widen the window")
        return self


class CallHistory(QueryBase):
    NAME = "call_history"
    type: Literal["call_history"] = "call_history"
    args: CallHistoryArgs = Field(default_factory=CallHistoryArgs)


class Extensions(QueryBase):
    NAME = "extensions"
    type: Literal["extensions"] = "extensions"
    args: Page = Field(default_factory=Page)


class PresenceArgs(Model):
    extension: Extension | None = None


class Presence(QueryBase):
    NAME = "presence"
    type: Literal["presence"] = "presence"
    args: PresenceArgs = Field(default_factory=PresenceArgs)


class RecordingsArgs(Page):
    call_id: Token | None = None


class Recordings(QueryBase):
    NAME = "recordings"
    type: Literal["recordings"] = "recordings"
    args: RecordingsArgs = Field(default_factory=RecordingsArgs)


class ChatHistoryArgs(Page):
    since: UtcDateTime | None = None


class ChatHistory(QueryBase):
    NAME = "chat_history"
    type: Literal["chat_history"] = "chat_history"
    args: ChatHistoryArgs = Field(default_factory=ChatHistoryArgs)


Query = Annotated[
    ActiveCalls | CallHistory | Extensions | Presence | Recordings | ChatHistory,
    Field(discriminator="type"),
]
QUERY_TYPES: tuple[type[QueryBase], ...] = (ActiveCalls, CallHistory, Extensions, Presence, Recordings, ChatHistory)
QUERY_CLASSES: dict[str, type[QueryBase]] = {cls.NAME: cls for cls in QUERY_TYPES}


class QueryResult(Model):
    query_id: str
    ok: bool
    items: list[dict[str, Any]] = Field(default_factory=list)
    total: int | None = None
    error: CommandError | None = None
