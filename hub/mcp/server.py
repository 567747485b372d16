"""The MCP server: tools and resources as thin adapters over the bus's commands and queries (D§7).

Nothing here talks to the PBX. Each tool builds one typed command (``schemas.commands``) or query and hands it to the
:class:`~hub.mcp.backend.Backend`; the worker carries it out. Tool texts say what really happens on 3CX: hold is a
park, recording is hub-side, messages go through a provider.

| tool            | command / query                                        | scope   |
|-----------------|--------------------------------------------------------|---------|
| make_call       | make_call                                              | control |
| answer_call     | answer                                                 | control |
| transfer_call   | divert (leg ringing) / transfer (connected; warm)      | control |
| hold_call       | park                                                   | control |
| resume_call     | resume                                                 | control |
| drop_call       | drop                                                   | control |
| record_call     | start_recording                                        | control |
| stop_recording  | stop_recording                                         | control |
| send_message    | send_message                                           | control |
| set_presence    | set_presence                                           | control |
| get_call_logs   | call_history                                           | read    |
| get_extensions  | extensions                                             | read    |
| get_presence    | presence                                               | read    |
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.mcp.backend import Backend
from hub.mcp.live import ACTIVE_CALLS, CALL_HISTORY, EXTENSIONS, MESSAGES, LegacySubscriptions
from hub.mcp.tokens import LOCAL_PRINCIPAL, Principal, Scope
from schemas import commands as c
from schemas.common import CommandError, ErrorCode, LegRef, LegStatus

Profile = Literal["full", "read-only"]
PROFILES: tuple[str, ...] = ("full", "read-only")

READ_TOOLS = frozenset({"get_call_logs", "get_extensions", "get_presence"})
CONTROL_TOOLS = frozenset(
    {
        "make_call",
        "answer_call",
        "transfer_call",
        "hold_call",
        "resume_call",
        "drop_call",
        "record_call",
        "stop_recording",
        "send_message",
        "set_presence",
    }
)
ALL_TOOLS = READ_TOOLS | CONTROL_TOOLS

INSTRUCTIONS = """\
MasterLinc controls a 3CX phone system through its event bus. Calls are named by the hub's call_id (read
3cx://active-calls). 3CX has no hold (hold_call parks the call), no recording API (record_call records hub-side, on
the hub's own route point only) and no message-sending API (send_message goes through the hub's messaging provider).
Every action takes an optional idempotency_key: repeat a call with the same key to learn the outcome of an earlier
attempt without acting twice. Errors carry a code (invalid_state, not_supported, policy_denied, pbx_unavailable, ...)
and say what to do next."""

# --------------------------------------------------------------------------- argument types

CallId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The hub's call id (a 26-character ULID from 3cx://active-calls or an event), "
        "not 3CX's small numeric callid.",
    ),
]
ExtensionArg = Annotated[
    str,
    Field(
        min_length=1,
        max_length=16,
        pattern=r"^[0-9A-Za-z*#_-]{1,16}$",
        description="A 3CX extension number (DN), e.g. 101.",
    ),
]
PhoneArg = Annotated[
    str,
    Field(
        min_length=1,
        max_length=32,
        pattern=r"^\+?[0-9*#]{1,31}$",
        description="A number to dial: digits, an optional leading '+', '*' and '#' for feature codes; "
        "no spaces or punctuation. E.g. +14155550100 or 102.",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=200,
        description="Optional. A repeat with the same key (same issuer, within 24 h) returns the first outcome "
        "instead of acting twice; a different action under the same key is refused (idempotency_conflict). "
        "Omit it for a new key per call.",
    ),
]


class LegArg(BaseModel):
    """One leg of a call, as events and 3cx://calls/{call_id} show it."""

    model_config = ConfigDict(extra="forbid")

    dn: ExtensionArg = Field(description="The DN the leg is on (the monitored extension or route point).")
    participant_id: int = Field(ge=0, description="3CX's participant id of the leg on that DN.")


LegOption = Annotated[
    LegArg | None,
    Field(
        description="Optional. Which leg to act on; needed only when the call has several legs that fit. "
        "Without it the facade picks the only fitting leg it has seen in the call's events.",
    ),
]

# --------------------------------------------------------------------------- outputs


class ErrorInfo(BaseModel):
    code: str = Field(description="One of D§7's codes, e.g. invalid_state, not_supported, policy_denied.")
    message: str = Field(description="What went wrong and what to do about it.")
    retryable: bool = Field(description="True when the same call may succeed later (rate_limited, pbx_unavailable).")
    pbx_reason: str | None = Field(default=None, description="3CX's own reason text, when it gave one.")


class ActionResult(BaseModel):
    """The outcome of an action tool."""

    ok: bool
    operation: str = Field(description="The hub command that was sent (e.g. divert or transfer for transfer_call).")
    command_id: str | None = Field(default=None, description="The command's id in the audit log (None: not sent).")
    call_id: str | None = None
    duplicate: bool = Field(default=False, description="True when an earlier outcome for this key was returned.")
    result: dict[str, Any] = Field(default_factory=dict, description="What the worker reported.")
    error: ErrorInfo | None = None


class QueryOutput(BaseModel):
    """The outcome of a read tool."""

    ok: bool
    items: list[dict[str, Any]] = Field(default_factory=list)
    total: int | None = Field(default=None, description="The total number of items, when the PBX says.")
    error: ErrorInfo | None = None


ActionReturn = Annotated[CallToolResult, ActionResult]
QueryReturn = Annotated[CallToolResult, QueryOutput]


def _error_info(error: CommandError) -> ErrorInfo:
    return ErrorInfo(
        code=error.code.value, message=error.message, retryable=error.retryable, pbx_reason=error.pbx_reason
    )


def _action_result(outcome: ActionResult) -> CallToolResult:
    if outcome.ok:
        head = f"{outcome.operation}: done" + (" (earlier outcome, same idempotency key)" if outcome.duplicate else "")
    else:
        assert outcome.error is not None
        head = f"{outcome.operation} failed: {outcome.error.code}: {outcome.error.message}"
    body = outcome.model_dump(mode="json")
    return CallToolResult(
        content=[TextContent(type="text", text=f"{head}\n{json.dumps(body)}")],
        structured_content=body,
        is_error=not outcome.ok,
    )


def _query_result(output: QueryOutput) -> CallToolResult:
    body = output.model_dump(mode="json")
    if output.ok:
        text = json.dumps(body)
    else:
        assert output.error is not None
        text = f"{output.error.code}: {output.error.message}"
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=body, is_error=not output.ok
    )


def _refused(operation: str, code: ErrorCode, message: str, call_id: str | None = None) -> CallToolResult:
    error = CommandError(code=code, message=message)
    return _action_result(ActionResult(ok=False, operation=operation, call_id=call_id, error=_error_info(error)))


# --------------------------------------------------------------------------- who is calling


class FacadeAccessToken(AccessToken):
    """An AccessToken carrying the facade's principal fields."""

    dial_quota_per_day: int | None = None


def principal_from_access(token: AccessToken) -> Principal:
    quota = token.dial_quota_per_day if isinstance(token, FacadeAccessToken) else None
    return Principal(token_id=token.client_id, scopes=frozenset(token.scopes), dial_quota_per_day=quota)


def _principal(ctx: Context, default: Principal | None) -> Principal | None:
    request = None
    try:
        request = ctx.request_context.request
    except ValueError:
        request = None
    scope = getattr(request, "scope", None)
    if isinstance(scope, dict):
        user = scope.get("user")
        if isinstance(user, AuthenticatedUser):
            return principal_from_access(user.access_token)
    token = get_access_token()
    if token is not None:
        return principal_from_access(token)
    return default


# --------------------------------------------------------------------------- actionable validation errors

_HINTS: dict[str, str] = {
    "to": "a number to dial: digits with an optional leading '+' (e.g. +14155550100 or 102), no spaces or dashes",
    "from_extension": "the extension whose phone places the call, e.g. 101",
    "to_extension": "an extension number, e.g. 101",
    "extension": "an extension number, e.g. 101",
    "call_id": "the hub's call id from 3cx://active-calls (letters, digits, '-' and '_')",
    "text": "the message text, 1 to 1600 characters",
    "profile": "a presence profile name of that user, e.g. Available, Away, Out of office (1 to 64 characters)",
    "idempotency_key": "any string of 1 to 200 characters, or leave it out",
    "warm_summary": "at most 2000 characters for the person taking the call",
    "limit": "a page size from 1 to 1000",
    "offset": "0 or more",
    "since": "an ISO 8601 time, e.g. 2025-01-31T09:00:00Z",
    "until": "an ISO 8601 time, after since",
    "orbit": "the park orbit the call waits in, e.g. SP0 (shown by hold_call)",
    "leg": "an object {dn, participant_id} from 3cx://calls/{call_id}",
}


def explain_validation(tool: str, exc: ValidationError) -> str:
    """One line per bad argument: which, what was given, what is accepted."""
    lines = [f"Invalid arguments for {tool}; fix these and call again:"]
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if not str(p).endswith("Arguments")]
        name = loc[0] if loc else "arguments"
        where = ".".join(loc) or "arguments"
        given = err.get("input")
        shown = "missing" if err.get("type") == "missing" else f"got {given!r}"[:120]
        hint = _HINTS.get(name.split(".")[0])
        if hint is None and name.startswith("leg"):
            hint = _HINTS["leg"]
        lines.append(f"- {where}: {shown}; {err.get('msg', 'invalid')}" + (f". Expected {hint}." if hint else "."))
    return "\n".join(lines)


# --------------------------------------------------------------------------- the server


@dataclass(frozen=True, kw_only=True)
class FacadeConfig:
    pbx_id: str
    profile: Profile = "full"
    default_principal: Principal | None = LOCAL_PRINCIPAL
    """Used when a request carries no token: the local user on stdio and in-process; None over HTTP."""


class FacadeServer(MCPServer[Any]):
    """MCPServer whose argument errors say what to fix (the SDK's pydantic text names types, not remedies)."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(explain_validation(name, cause)) from cause
            raise


@dataclass
class Facade:
    """What :func:`build_server` returns: the MCP server and the legacy-subscription forwarder to run beside it."""

    server: FacadeServer
    legacy: LegacySubscriptions
    backend: Backend
    config: FacadeConfig


def build_server(
    backend: Backend,
    config: FacadeConfig,
    *,
    token_verifier: TokenVerifier | None = None,
    issuer_url: str = "http://127.0.0.1",
) -> Facade:
    """The MCP server for one PBX. Configure logging first (``hub.logs.setup_logging``): MCPServer otherwise does."""
    auth = (
        AuthSettings(issuer_url=issuer_url, resource_server_url=None, required_scopes=[Scope.READ.value])
        if token_verifier is not None
        else None
    )
    server = FacadeServer(
        "masterlinc",
        title="MasterLinc (3CX)",
        instructions=INSTRUCTIONS,
        version="0.1.0",
        token_verifier=token_verifier,
        auth=auth,
        subscriptions=backend.updates,
    )
    legacy = LegacySubscriptions(backend.updates)
    legacy.install(server)
    tools = _Tools(backend, config)
    for name, fn, hints, description in tools.table():
        if config.profile == "read-only" and name not in READ_TOOLS:
            continue
        server.add_tool(fn, name=name, description=description, annotations=hints)
    _register_resources(server, backend, config)
    return Facade(server=server, legacy=legacy, backend=backend, config=config)


_READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)


def _act(*, destructive: bool, idempotent: bool, title: str) -> ToolAnnotations:
    return ToolAnnotations(
        title=title,
        read_only_hint=False,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=True,
    )


class _Tools:
    def __init__(self, backend: Backend, config: FacadeConfig) -> None:
        self.backend = backend
        self.config = config

    # ------------------------------------------------------------------ plumbing

    def _who(self, ctx: Context, operation: str, scope: Scope) -> Principal | CallToolResult:
        principal = _principal(ctx, self.config.default_principal)
        if principal is None:
            return _refused(operation, ErrorCode.UNAUTHORIZED, "no bearer token: send Authorization: Bearer <token>")
        if not principal.has(scope):
            return _refused(
                operation,
                ErrorCode.FORBIDDEN,
                f"this token lacks the {scope.value!r} scope; create one with "
                f"`masterlinc mcp token create --scope {scope.value}`",
            )
        return principal

    def _leg(
        self, call_id: str, leg: LegArg | None, statuses: tuple[str, ...] | None, operation: str
    ) -> tuple[LegRef, str | None] | CallToolResult:
        """The leg to act on and its last seen status (None when unknown), or a refusal saying what to pass."""
        call = self.backend.calls.get(call_id)
        if leg is not None:
            state = call.legs.get((leg.dn, leg.participant_id)) if call is not None else None
            legid = state.legid if state is not None else None
            return LegRef(dn=leg.dn, participant_id=leg.participant_id, legid=legid), (state.status if state else None)
        if call is None or not call.legs:
            return _refused(
                operation,
                ErrorCode.NOT_FOUND,
                f"call {call_id} has no known legs: it ended, or began before this facade started. Read "
                f"3cx://calls/{call_id} or 3cx://active-calls and pass `leg` {{dn, participant_id}} explicitly",
                call_id,
            )
        legs = list(call.legs.values())
        fitting = [s for s in legs if statuses is None or s.status in statuses]
        listed = "; ".join(s.describe() for s in legs)
        if not fitting:
            wanted = " or ".join(statuses or ())
            return _refused(
                operation,
                ErrorCode.INVALID_STATE,
                f"no leg of call {call_id} is {wanted} (legs: {listed})",
                call_id,
            )
        if len(fitting) > 1:
            return _refused(
                operation,
                ErrorCode.INVALID_ARGUMENT,
                f"call {call_id} has several legs this could act on: {listed}. Pass `leg` {{dn, participant_id}}",
                call_id,
            )
        chosen = fitting[0]
        return LegRef(dn=chosen.dn, participant_id=chosen.participant_id, legid=chosen.legid), chosen.status

    def _envelope(self, principal: Principal, key: str | None, call_id: str | None = None) -> dict[str, Any]:
        return {
            "pbx_id": self.config.pbx_id,
            "issued_by": principal.issuer,
            "idempotency_key": key,
            "call_id": call_id,
            "override": principal.has(Scope.OVERRIDE),  # the worker's lease guard honours it for mcp: issuers
        }

    async def _send(self, operation: str, command: c.CommandBase) -> CallToolResult:
        result = await self.backend.send(command)
        return _action_result(
            ActionResult(
                ok=result.ok,
                operation=command.NAME,
                command_id=result.command_id,
                call_id=command.call_id,
                duplicate=result.duplicate,
                result=result.result,
                error=_error_info(result.error) if result.error is not None else None,
            )
        )

    async def _leg_command(
        self,
        ctx: Context,
        operation: str,
        cls: type[c.CommandBase],
        call_id: str,
        leg: LegArg | None,
        statuses: tuple[str, ...] | None,
        key: str | None,
        args: dict[str, Any] | None = None,
    ) -> CallToolResult:
        who = self._who(ctx, operation, Scope.CONTROL)
        if isinstance(who, CallToolResult):
            return who
        picked = self._leg(call_id, leg, statuses, operation)
        if isinstance(picked, CallToolResult):
            return picked
        fields = {**self._envelope(who, key, call_id), "leg": picked[0]}
        if args is not None:
            fields["args"] = args
        return await self._send(operation, cls.model_validate(fields))

    async def _query(self, ctx: Context, operation: str, query: c.QueryBase) -> CallToolResult:
        who = self._who(ctx, operation, Scope.READ)
        if isinstance(who, CallToolResult):
            return _query_result(QueryOutput(ok=False, error=ErrorInfo.model_validate(who.structured_content["error"])))
        result = await self.backend.query(query.model_copy(update={"issued_by": who.issuer}))
        return _query_result(
            QueryOutput(
                ok=result.ok,
                items=result.items,
                total=result.total,
                error=_error_info(result.error) if result.error is not None else None,
            )
        )

    # ------------------------------------------------------------------ the tools

    def table(self) -> list[tuple[str, Callable[..., Awaitable[CallToolResult]], ToolAnnotations, str]]:
        return [
            (
                "make_call",
                self.make_call,
                _act(destructive=False, idempotent=False, title="Place a call"),
                "Place a call through 3CX Call Control (makecall): the phone of `from_extension` rings first and, "
                "once picked up, 3CX dials `to` (from the hub's route point, the hub's own leg places it). "
                "Emergency, premium-rate and international numbers are refused to assistants by the hub's dial "
                "policy (policy_denied), and a token may have a daily dial quota.",
            ),
            (
                "answer_call",
                self.answer_call,
                _act(destructive=False, idempotent=True, title="Answer a ringing call"),
                "Answer a ringing leg (3CX participants/{id}/answer). 3CX can answer only legs on the hub's route "
                "point or on phones that allow direct control; others give not_supported.",
            ),
            (
                "transfer_call",
                self.transfer_call,
                _act(destructive=True, idempotent=False, title="Transfer a call"),
                "Move a call to another number. While the leg still rings this is a 3CX divert; once connected it "
                "is a blind transfer (transferto). Calls arriving on the hub's route point are already connected, so "
                "they are transferred. With `warm_summary` (connected calls only) the summary is published as a "
                "handoff event and attached to the call first; 3CX has no consultation call, so nobody hears it.",
            ),
            (
                "hold_call",
                self.hold_call,
                _act(destructive=False, idempotent=True, title="Park a call (3CX has no hold)"),
                "3CX's Call Control API has no hold. This parks the connected call: a transfer to the hub's "
                "configured park orbit (default SP0; the orbit is configuration, not verified on every 3CX). "
                "The caller hears the park's music. Bring the call back with resume_call.",
            ),
            (
                "resume_call",
                self.resume_call,
                _act(destructive=False, idempotent=False, title="Pick up a parked call"),
                "Pick a parked call up: 3CX rings `to_extension`, which then dials the configured pickup code of the "
                "park orbit (configuration, not verified on every 3CX). The orbit comes from the hold_call event "
                "unless given.",
            ),
            (
                "drop_call",
                self.drop_call,
                _act(destructive=True, idempotent=True, title="Hang up a leg"),
                "Hang up one leg of a call (3CX participants/{id}/drop). A leg that is already gone counts as "
                "success (result already_gone).",
            ),
            (
                "record_call",
                self.record_call,
                _act(destructive=False, idempotent=True, title="Start a hub-side recording"),
                "Start recording on the hub, not on 3CX: the hub writes the leg's audio stream to a WAV file. Only "
                "connected legs on the hub's own route point can be recorded; 3CX's own recordings are set up on the "
                "PBX and cannot be started through its API (not_supported, with the reason).",
            ),
            (
                "stop_recording",
                self.stop_recording,
                _act(destructive=False, idempotent=True, title="Stop a hub-side recording"),
                "Stop a hub-side recording started with record_call; the result and a recording.stopped event "
                "give the file's location.",
            ),
            (
                "send_message",
                self.send_message,
                _act(destructive=False, idempotent=False, title="Send a text message"),
                "Send a text message through the hub's configured messaging provider (a signed webhook, or "
                "log-only). 3CX has no public API to send chat or SMS, so this does not go through 3CX; with no "
                "provider configured the answer is not_supported.",
            ),
            (
                "set_presence",
                self.set_presence,
                _act(destructive=False, idempotent=True, title="Set an extension's presence"),
                "Set a user's presence profile (3CX XAPI: the user's current forwarding profile). Profile names are "
                "the user's forwarding profiles, e.g. Available, Away, Out of office; an unknown name gives "
                "invalid_argument with the valid ones.",
            ),
            (
                "get_call_logs",
                self.get_call_logs,
                _READ,
                "Read the PBX's call history (3CX XAPI call log), paginated; optionally for one extension and a time "
                "window.",
            ),
            (
                "get_extensions",
                self.get_extensions,
                _READ,
                "List the PBX's extensions (users) with their numbers and names, paginated.",
            ),
            (
                "get_presence",
                self.get_presence,
                _READ,
                "Read the presence (current profile, registration) of one extension, or of all when none is given.",
            ),
        ]

    async def make_call(
        self,
        from_extension: ExtensionArg,
        to: PhoneArg,
        ctx: Context,
        idempotency_key: IdempotencyKey = None,
    ) -> ActionReturn:
        who = self._who(ctx, "make_call", Scope.CONTROL)
        if isinstance(who, CallToolResult):
            return who
        command = c.MakeCall.model_validate(
            {**self._envelope(who, idempotency_key), "args": {"from": from_extension, "to": to}}
        )
        if who.dial_quota_per_day is not None:
            if not self.backend.available:
                return await self._send("make_call", command)  # answers pbx_unavailable
            allowed, used = await self.backend.take_dial(who.token_id, who.dial_quota_per_day)
            if not allowed:
                return _refused(
                    "make_call",
                    ErrorCode.POLICY_DENIED,
                    f"this token's dial quota is used up ({used} of {who.dial_quota_per_day} calls today, UTC); "
                    "an operator can raise it with a new token",
                )
        return await self._send("make_call", command)

    async def answer_call(
        self, call_id: CallId, ctx: Context, leg: LegOption = None, idempotency_key: IdempotencyKey = None
    ) -> ActionReturn:
        return await self._leg_command(
            ctx, "answer_call", c.Answer, call_id, leg, (LegStatus.RINGING.value,), idempotency_key
        )

    async def transfer_call(
        self,
        call_id: CallId,
        to: PhoneArg,
        ctx: Context,
        leg: LegOption = None,
        warm_summary: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=2000,
                description="Optional. Makes it a warm transfer (connected calls only): a short summary for the "
                "person taking the call, published as a handoff event and attached to the call first.",
            ),
        ] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> ActionReturn:
        who = self._who(ctx, "transfer_call", Scope.CONTROL)
        if isinstance(who, CallToolResult):
            return who
        picked = self._leg(call_id, leg, (LegStatus.RINGING.value, LegStatus.CONNECTED.value), "transfer_call")
        if isinstance(picked, CallToolResult):
            return picked
        leg_ref, status = picked
        fields = {**self._envelope(who, idempotency_key, call_id), "leg": leg_ref}
        if status == LegStatus.RINGING.value:
            if warm_summary is not None:
                return _refused(
                    "transfer_call",
                    ErrorCode.INVALID_STATE,
                    "a warm transfer needs a connected call, and this leg is still ringing: answer it first, or "
                    "leave out warm_summary to divert it",
                    call_id,
                )
            return await self._send("transfer_call", c.Divert.model_validate({**fields, "args": {"to": to}}))
        # Connected, or unknown for an explicit leg: transferto (the worker answers invalid_state if it is not).
        args: dict[str, Any] = {"to": to, "summary": warm_summary}
        return await self._send("transfer_call", c.Transfer.model_validate({**fields, "args": args}))

    async def hold_call(
        self, call_id: CallId, ctx: Context, leg: LegOption = None, idempotency_key: IdempotencyKey = None
    ) -> ActionReturn:
        return await self._leg_command(
            ctx, "hold_call", c.Park, call_id, leg, (LegStatus.CONNECTED.value,), idempotency_key
        )

    async def resume_call(
        self,
        call_id: CallId,
        to_extension: ExtensionArg,
        ctx: Context,
        orbit: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=16,
                pattern=r"^[0-9A-Za-z*#_-]{1,16}$",
                description="Optional. The park orbit (default: the one the call was parked in, from its events).",
            ),
        ] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> ActionReturn:
        who = self._who(ctx, "resume_call", Scope.CONTROL)
        if isinstance(who, CallToolResult):
            return who
        if orbit is None:
            call = self.backend.calls.get(call_id)
            orbit = call.parked_orbit if call is not None else None
        if orbit is None:
            return _refused(
                "resume_call",
                ErrorCode.INVALID_STATE,
                f"call {call_id} is not known to be parked; pass `orbit` (from the call.parked event in "
                f"3cx://calls/{call_id}) if it was parked elsewhere",
                call_id,
            )
        command = c.Resume.model_validate(
            {**self._envelope(who, idempotency_key, call_id), "args": {"orbit": orbit, "to": to_extension}}
        )
        return await self._send("resume_call", command)

    async def drop_call(
        self, call_id: CallId, ctx: Context, leg: LegOption = None, idempotency_key: IdempotencyKey = None
    ) -> ActionReturn:
        return await self._leg_command(ctx, "drop_call", c.Drop, call_id, leg, None, idempotency_key)

    async def record_call(
        self, call_id: CallId, ctx: Context, leg: LegOption = None, idempotency_key: IdempotencyKey = None
    ) -> ActionReturn:
        return await self._leg_command(
            ctx, "record_call", c.StartRecording, call_id, leg, (LegStatus.CONNECTED.value,), idempotency_key
        )

    async def stop_recording(
        self, call_id: CallId, ctx: Context, leg: LegOption = None, idempotency_key: IdempotencyKey = None
    ) -> ActionReturn:
        return await self._leg_command(
            ctx, "stop_recording", c.StopRecording, call_id, leg, (LegStatus.CONNECTED.value,), idempotency_key
        )

    async def send_message(
        self,
        to: PhoneArg,
        text: Annotated[str, Field(min_length=1, max_length=1600, description="The message, 1 to 1600 characters.")],
        ctx: Context,
        idempotency_key: IdempotencyKey = None,
    ) -> ActionReturn:
        who = self._who(ctx, "send_message", Scope.CONTROL)
        if isinstance(who, CallToolResult):
            return who
        command = c.SendMessage.model_validate(
            {**self._envelope(who, idempotency_key), "args": {"to": to, "text": text}}
        )
        return await self._send("send_message", command)

    async def set_presence(
        self,
        extension: ExtensionArg,
        profile: Annotated[
            str, Field(min_length=1, max_length=64, description="The profile name, e.g. Available or Away.")
        ],
        ctx: Context,
        idempotency_key: IdempotencyKey = None,
    ) -> ActionReturn:
        who = self._who(ctx, "set_presence", Scope.CONTROL)
        if isinstance(who, CallToolResult):
            return who
        command = c.SetPresence.model_validate(
            {**self._envelope(who, idempotency_key), "args": {"extension": extension, "profile": profile}}
        )
        return await self._send("set_presence", command)

    async def get_call_logs(
        self,
        ctx: Context,
        since: Annotated[datetime | None, Field(description="Only calls from this time (ISO 8601).")] = None,
        until: Annotated[datetime | None, Field(description="Only calls until this time (ISO 8601).")] = None,
        extension: Annotated[ExtensionArg | None, Field(description="Only calls of this extension.")] = None,
        limit: Annotated[int, Field(ge=1, le=1000, description="Page size, 1 to 1000.")] = 100,
        offset: Annotated[int, Field(ge=0, description="Items to skip.")] = 0,
    ) -> QueryReturn:
        if since is not None and until is not None and since > until:
            return _query_result(
                QueryOutput(
                    ok=False,
                    error=ErrorInfo(
                        code="invalid_argument",
                        message="since is after until: swap them or widen the window",
                        retryable=False,
                    ),
                )
            )
        args = {"since": since, "until": until, "extension": extension, "limit": limit, "offset": offset}
        query = c.CallHistory.model_validate({"pbx_id": self.config.pbx_id, "args": args})
        return await self._query(ctx, "get_call_logs", query)

    async def get_extensions(
        self,
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=1000, description="Page size, 1 to 1000.")] = 100,
        offset: Annotated[int, Field(ge=0, description="Items to skip.")] = 0,
    ) -> QueryReturn:
        query = c.Extensions.model_validate({"pbx_id": self.config.pbx_id, "args": {"limit": limit, "offset": offset}})
        return await self._query(ctx, "get_extensions", query)

    async def get_presence(
        self,
        ctx: Context,
        extension: Annotated[ExtensionArg | None, Field(description="One extension; all when left out.")] = None,
    ) -> QueryReturn:
        query = c.Presence.model_validate({"pbx_id": self.config.pbx_id, "args": {"extension": extension}})
        return await self._query(ctx, "get_presence", query)


# --------------------------------------------------------------------------- resources


def _register_resources(server: MCPServer[Any], backend: Backend, config: FacadeConfig) -> None:
    pbx = config.pbx_id

    async def read(query: c.QueryBase) -> str:
        result = await backend.query(query)
        if result.error is not None:
            raise ResourceError(f"{result.error.code.value}: {result.error.message}")
        return json.dumps({"items": result.items, "total": result.total}, default=str)

    @server.resource(
        ACTIVE_CALLS,
        name="active-calls",
        title="Active calls",
        description="Calls in progress on the PBX with their legs (dn, participant_id, status). Subscribe for "
        "updates: every call event notifies it.",
        mime_type="application/json",
    )
    async def active_calls() -> str:
        return await read(c.ActiveCalls(pbx_id=pbx))

    @server.resource(
        CALL_HISTORY,
        name="call-history",
        title="Call history",
        description="The latest 100 calls from the PBX's call log (get_call_logs pages further). Updated when a "
        "call ends.",
        mime_type="application/json",
    )
    async def call_history() -> str:
        return await read(c.CallHistory(pbx_id=pbx))

    @server.resource(
        EXTENSIONS,
        name="extensions",
        title="Extensions",
        description="The PBX's extensions (first 1000).",
        mime_type="application/json",
    )
    async def extensions() -> str:
        return await read(c.Extensions(pbx_id=pbx, args=c.Page(limit=1000)))

    @server.resource(
        MESSAGES,
        name="messages",
        title="Messages",
        description="Recent chat and SMS messages from 3CX's chat history (read-only: sending goes through the "
        "hub's provider, see send_message).",
        mime_type="application/json",
    )
    async def messages() -> str:
        return await read(c.ChatHistory(pbx_id=pbx))

    @server.resource(
        "3cx://calls/{call_id}",
        name="call-timeline",
        title="A call's timeline",
        description="Every event of one call (legs ringing, answered, transfers, commands, recordings), oldest "
        "first, from the hub's event stream.",
        mime_type="application/json",
    )
    async def call_timeline(call_id: str) -> str:
        if not call_id.replace("-", "").replace("_", "").isalnum() or len(call_id) > 64:
            raise ResourceError(f"{call_id!r} is not a call id: use the call_id from 3cx://active-calls")
        events = await backend.call_timeline(call_id)
        if events is None:
            raise ResourceError("pbx_unavailable: the hub's bus (NATS) is not reachable; retry shortly")
        return json.dumps({"call_id": call_id, "events": events}, default=str)

    @server.resource(
        "3cx://extensions/{number}/presence",
        name="extension-presence",
        title="An extension's presence",
        description="The current presence profile and registration of one extension. Updated on presence changes.",
        mime_type="application/json",
    )
    async def extension_presence(number: str) -> str:
        try:
            query = c.Presence.model_validate({"pbx_id": pbx, "args": {"extension": number}})
        except ValidationError:
            raise ResourceError(f"{number!r} is not an extension number (e.g. 101)") from None
        return await read(query)
