"""``/xapi/v1``: the configuration API subset the hub uses (reference §5), with the same bearer tokens.

Entity sets: ``Users`` (keys ``Users(5)`` and ``Users(Number='101')``; PATCH ``CurrentProfileName``/``QueueStatus``
answers 204; ``Users(5)/ForwardingProfiles``), ``ActiveCalls``, ``CallHistoryView`` (System Owner role only),
``Recordings``, ``ChatHistoryView``, ``Parkings``; and the function
``ReportCallLogData/Pbx.GetCallLogData(...)`` with all 11 parameters inline: a missing, unknown, repeated or
syntactically malformed parameter is a 404, a value of the wrong format a 500 (both observed). Errors are OData error
bodies. Anything else is a 404, as an unknown OData segment is.

Report filters whose meaning 3CX does not document are the simulator's own (*inferred*): ``sourceType`` and
``destinationType`` 0 = any, else the DN type number; ``callsType`` 0 = all, 1 = answered, 2 = unanswered;
``callTimeFilterType`` 0 = none, else talking time between ``callTimeFilterFrom`` and ``callTimeFilterTo``
(``H:MM:S``); ``hidePcalls`` is accepted and ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hub.simulator.directory import (
    ACTIVE_CALL_SCHEMA,
    CALL_HISTORY_SCHEMA,
    CALL_LOG_SCHEMA,
    CHAT_SCHEMA,
    PARKING_SCHEMA,
    PROFILE_SCHEMA,
    RECORDING_SCHEMA,
    USER_SCHEMA,
    Directory,
)
from hub.simulator.odata import ODataError, Schema, apply, parse_query, project

if TYPE_CHECKING:
    from hub.simulator.app import Simulator

PREFIX = "/xapi/v1/"
_DATETIME = re.compile(
    r"\d{4,}-(0[1-9]|1[012])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,12})?(Z|[+-]\d\d:\d\d)"
)
CALL_LOG_PARAMS: tuple[tuple[str, str], ...] = (
    ("periodFrom", "datetime"), ("periodTo", "datetime"), ("sourceType", "int"), ("sourceFilter", "string"),
    ("destinationType", "int"), ("destinationFilter", "string"), ("callsType", "int"),
    ("callTimeFilterType", "int"), ("callTimeFilterFrom", "string"), ("callTimeFilterTo", "string"),
    ("hidePcalls", "bool"),
)  # fmt: skip
PRESENCE_FIELDS = {"CurrentProfileName", "QueueStatus"}


def _scan(text: str, start: int) -> int:
    """Index of the ``)`` closing the ``(`` at ``start``, skipping quoted strings; -1 when unbalanced."""
    depth, i, quoted = 0, start, False
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "'":
                if i + 1 < len(text) and text[i + 1] == "'":
                    i += 1
                else:
                    quoted = False
        elif ch == "'":
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _segment(text: str) -> tuple[str, str | None, str]:
    """``Name(args)/rest`` -> (Name, args or None, rest)."""
    match = re.match(r"[A-Za-z][A-Za-z0-9_.]*", text)
    if match is None:
        raise ODataError(404, f"Resource not found for the segment '{text}'")
    name, pos = match.group(), match.end()
    args: str | None = None
    if pos < len(text) and text[pos] == "(":
        close = _scan(text, pos)
        if close < 0:
            raise ODataError(404, f"Resource not found for the segment '{text}': unbalanced parentheses")
        args, pos = text[pos + 1 : close], close + 1
    rest = text[pos:]
    if rest and not rest.startswith("/"):
        raise ODataError(404, f"Resource not found for the segment '{text}'")
    return name, args, rest[1:]


def _split_args(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            if quoted and i + 1 < len(text) and text[i + 1] == "'":
                current += "''"
                i += 2
                continue
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    if quoted:
        raise ODataError(404, "a function parameter has an unterminated string literal")
    parts.append(current)
    return parts


def _string_literal(raw: str) -> str | None:
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1].replace("''", "'")
    return None


def parse_function_args(text: str, function: str, params: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Inline function parameters, each required (``name=value``, strings quoted)."""
    values: dict[str, Any] = {}
    types = dict(params)
    for part in _split_args(text) if text.strip() else []:
        name, eq, raw = part.partition("=")
        name, raw = name.strip(), raw.strip()
        if not eq or not raw:
            raise ODataError(404, f"{function}: malformed parameter {part.strip()!r} (expected name=value)")
        if name not in types:
            raise ODataError(404, f"{function}: unknown parameter {name!r}")
        if name in values:
            raise ODataError(404, f"{function}: parameter {name!r} is given twice")
        kind = types[name]
        if kind == "string":
            value = _string_literal(raw)
            if value is None:
                raise ODataError(404, f"{function}: {name} is a string and must be quoted, e.g. {name}=''")
            values[name] = value
        elif kind == "datetime":
            if not _DATETIME.fullmatch(raw):
                raise ODataError(500, f"{function}: {name}={raw} is not an ISO-8601 date-time (2025-03-13T23:00:00Z)")
            values[name] = datetime.fromisoformat(raw)
        elif kind == "int":
            if not re.fullmatch(r"-?\d+", raw):
                raise ODataError(500, f"{function}: {name}={raw} is not an integer")
            values[name] = int(raw)
        else:
            if raw not in {"true", "false"}:
                raise ODataError(500, f"{function}: {name}={raw} is not true or false")
            values[name] = raw == "true"
    missing = [name for name, _ in params if name not in values]
    if missing:
        raise ODataError(404, f"{function}: missing parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return values


def _hms(text: str, name: str) -> timedelta:
    match = re.fullmatch(r"(\d+):(\d{1,2}):(\d{1,2})", text)
    if match is None:
        raise ODataError(500, f"{name}={text!r} is not a time span like '0:00:0' (H:MM:S)")
    hours, minutes, seconds = (int(g) for g in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _duration_s(text: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?", text)
    if match is None:
        return 0.0
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


class XapiRoutes:
    def __init__(self, sim: Simulator, directory: Directory) -> None:
        self.sim = sim
        self.directory = directory
        self.config = sim.config

    def _error(self, request: Request, exc: ODataError) -> Response:
        return self.sim._respond(request, JSONResponse(exc.body(), status_code=exc.status))

    async def handle(self, request: Request) -> Response:
        if not self.sim.tokens.valid(request.headers.get("authorization")):
            return self._error(request, ODataError(401, "Unauthorized: a valid bearer token is required"))
        if not self.config.xapi_enabled:
            return self._error(request, ODataError(403, "3CX Configuration API access is not enabled for this client"))
        try:
            response = await self._dispatch(request)
        except ODataError as exc:
            return self._error(request, exc)
        return self.sim._respond(request, response)

    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path[len(PREFIX) :]
        name, key, rest = _segment(path)
        params = dict(request.query_params)
        method = request.method
        handlers: dict[str, Callable[[], Any]] = {
            "ActiveCalls": lambda: self._collection(params, ACTIVE_CALL_SCHEMA, "ActiveCall",
                                                    self.directory.active_calls()),
            "CallHistoryView": lambda: self._call_history(params),
            "Recordings": lambda: self._collection(params, RECORDING_SCHEMA, "Recording", self.directory.recordings),
            "ChatHistoryView": lambda: self._collection(params, CHAT_SCHEMA, "ChatHistoryView", self.directory.chats),
        }  # fmt: skip
        if name == "Users":
            return await self._users(request, key, rest, params)
        if name == "Parkings":
            self._only(method, "GET", path)
            return self._parkings(key, rest, params)
        if name == "ReportCallLogData" and key is None:
            self._only(method, "GET", path)
            return self._call_log(rest, params)
        if name in handlers and key is None and not rest:
            self._only(method, "GET", path)
            return JSONResponse(handlers[name]())
        raise ODataError(404, f"Resource not found for the segment '{name}'")

    def _only(self, method: str, allowed: str, path: str) -> None:
        if method != allowed:
            raise ODataError(405, f"{method} is not allowed on {path}", code="MethodNotAllowed")

    def _collection(self, params: dict[str, str], schema: Schema, entity: str, rows: list[dict[str, Any]]) -> Any:
        return apply(parse_query(params, schema, entity), rows)

    def _call_history(self, params: dict[str, str]) -> Any:
        if self.config.xapi_role != "system_owner":
            raise ODataError(403, "CallHistoryView needs the System Owner role")
        return self._collection(params, CALL_HISTORY_SCHEMA, "CallHistoryView", self.directory.call_history)

    # ------------------------------------------------------------------ users

    def _user_key(self, key: str) -> Any:
        key = key.strip()
        if re.fullmatch(r"-?\d+", key):
            return self.directory.user(id=int(key))
        name, eq, raw = key.partition("=")
        number = _string_literal(raw.strip())
        if eq and name.strip() == "Number" and number is not None:
            return self.directory.user(number=number)
        raise ODataError(400, f"bad key {key!r}: use Users(<Id>) or Users(Number='<extension>')")

    async def _users(self, request: Request, key: str | None, rest: str, params: dict[str, str]) -> Response:
        method = request.method
        if key is None:
            if rest:
                raise ODataError(404, f"Resource not found for the segment 'Users/{rest}'")
            self._only(method, "GET", "Users")
            rows = [user.row() for user in self.directory.users.values()]
            return JSONResponse(self._collection(params, USER_SCHEMA, "User", rows))
        user = self._user_key(key)
        if rest == "ForwardingProfiles":
            self._only(method, "GET", "ForwardingProfiles")
            return JSONResponse(self._collection(params, PROFILE_SCHEMA, "ForwardingProfile", user.profile_rows()))
        if rest:
            raise ODataError(404, f"Resource not found for the segment '{rest}'")
        if method == "GET":
            query = parse_query(params, USER_SCHEMA, "User", collection=False)
            return JSONResponse(project(user.row(), query.select))
        if method == "PATCH":
            await self._patch_user(request, user)
            return Response(status_code=204)
        raise ODataError(405, f"{method} is not allowed on Users({key})", code="MethodNotAllowed")

    async def _patch_user(self, request: Request, user: Any) -> None:
        try:
            body = json.loads(await request.body() or b"null")
        except json.JSONDecodeError as exc:
            raise ODataError(400, f"the request body is not valid JSON: {exc.msg}") from None
        if not isinstance(body, dict):
            raise ODataError(400, "PATCH needs a JSON object of User properties")
        for name, value in body.items():
            if name not in USER_SCHEMA:
                raise ODataError(400, f"The property '{name}' does not exist on type 'Pbx.User'", target=name)
            if name == "Number" and value != user.number:
                raise ODataError(400, "the Number of an existing user cannot be changed", target="Number")
            if name == "Id" and value != user.id:
                raise ODataError(400, "the Id of a user cannot be changed", target="Id")
            if name not in PRESENCE_FIELDS | {"Number", "Id"}:
                raise ODataError(400, f"the simulator changes only {', '.join(sorted(PRESENCE_FIELDS))}", target=name)
            if not isinstance(value, str):
                raise ODataError(400, f"{name} must be a string", target=name)
        self.directory.set_presence(user.number, profile=body.get("CurrentProfileName"),
                                    queue_status=body.get("QueueStatus"), by="xapi")  # fmt: skip

    # ------------------------------------------------------------------ parkings and reports

    def _parkings(self, key: str | None, rest: str, params: dict[str, str]) -> Response:
        rows = self.directory.parkings()
        if key is None and not rest:
            return JSONResponse(self._collection(params, PARKING_SCHEMA, "Parking", rows))
        if key is None or rest:
            raise ODataError(404, f"Resource not found for the segment '{rest}'")
        key = key.strip()
        number = _string_literal(key.partition("=")[2].strip()) if key.startswith("Number") else None
        found = next((row for row in rows if (number is not None and row["Number"] == number)
                      or (key.isdigit() and row["Id"] == int(key))), None)  # fmt: skip
        if found is None:
            raise ODataError(404, f"No Parking with key {key} was found")
        return JSONResponse(project(found, parse_query(params, PARKING_SCHEMA, "Parking", collection=False).select))

    def _call_log(self, rest: str, params: dict[str, str]) -> Response:
        name, args, tail = _segment(rest) if rest else ("", None, "")
        if name != "Pbx.GetCallLogData" or args is None or tail:
            raise ODataError(404, f"Resource not found for the segment '{rest or 'ReportCallLogData'}'")
        values = parse_function_args(args, name, CALL_LOG_PARAMS)
        rows = [row for row in self.directory.call_log if self._in_report(row, values)]
        return JSONResponse(self._collection(params, CALL_LOG_SCHEMA, "CallLogData", rows))

    def _in_report(self, row: dict[str, Any], v: dict[str, Any]) -> bool:
        started = datetime.fromisoformat(row["StartTime"])
        if not v["periodFrom"] <= started <= v["periodTo"]:
            return False
        for side, kind, text in (("Source", v["sourceType"], v["sourceFilter"]),
                                 ("Destination", v["destinationType"], v["destinationFilter"])):  # fmt: skip
            if kind and row[f"{side}Type"] != kind:
                return False
            fields = (row[f"{side}Dn"], row[f"{side}CallerId"], row[f"{side}DisplayName"])
            if text and not any(text.lower() in (f or "").lower() for f in fields):
                return False
        if (v["callsType"] == 1 and not row["Answered"]) or (v["callsType"] == 2 and row["Answered"]):
            return False
        if v["callTimeFilterType"]:
            low = _hms(v["callTimeFilterFrom"], "callTimeFilterFrom").total_seconds()
            high = _hms(v["callTimeFilterTo"], "callTimeFilterTo").total_seconds()
            if not low <= _duration_s(row["TalkingDuration"]) <= high:
                return False
        return True
