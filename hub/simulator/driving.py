"""The driving API over HTTP, under ``/_sim`` (not a 3CX path; no auth: the simulator is a test tool).

For a simulator running as its own process (``masterlinc sim``); in-process tests use ``SimHandle`` instead.

| method, path | body | effect |
|---|---|---|
| GET ``/_sim/faults`` | | active faults |
| POST ``/_sim/faults/{kind}`` | the fault's parameters | inject (see ``faults.py``) |
| DELETE ``/_sim/faults`` | | end every active fault |
| POST ``/_sim/calls`` | ``{from, to, caller_name?, did?}`` | place a call; returns its callid and legs |
| POST ``/_sim/calls/{callid}/hangup`` · ``/dtmf`` ``{digits}`` · ``/answer_remote`` | | the remote party acts |
| POST ``/_sim/participants/{id}/answer`` | | the person at the phone picks up |
| POST ``/_sim/presence`` | ``{number, profile?, queue_status?, registered?}`` | presence change |
| POST ``/_sim/chat`` | ``{from_no, message, ...}`` | a chat message arrives |
| GET ``/_sim/journal?since=N`` | | journal entries from index N |
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.simulator.engine import SimError
from hub.simulator.odata import ODataError

if TYPE_CHECKING:
    from hub.simulator.app import Simulator

Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Callable[[Request, dict[str, Any]], Awaitable[Any]]) -> Handler:
    async def endpoint(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            return JSONResponse({"error": f"the body is not JSON: {exc.msg}"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        try:
            result = await handler(request, body)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except SimError as exc:
            return JSONResponse({"error": exc.reason}, status_code=exc.status)
        except ODataError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return JSONResponse(result)

    return endpoint


def driving_routes(sim: Simulator) -> list[Route]:
    engine = sim.engine

    async def faults(request: Request, body: dict[str, Any]) -> Any:
        if request.method == "DELETE":
            sim.faults.clear()
        return sim.faults.active()

    async def inject(request: Request, body: dict[str, Any]) -> Any:
        sim.faults.inject(request.path_params["kind"], **body)
        return sim.faults.active()

    async def place(request: Request, body: dict[str, Any]) -> Any:
        if not body.get("from") or not body.get("to"):
            raise ValueError("a call needs 'from' and 'to'")
        call = engine.place_call(str(body["from"]), str(body["to"]), caller_name=str(body.get("caller_name", "")),
                                 did=str(body.get("did", "")))  # fmt: skip
        return {"callid": call.callid, "legs": [leg.wire() for leg in engine.legs_of(call.callid)]}

    async def call_action(request: Request, body: dict[str, Any]) -> Any:
        callid, action = request.path_params["callid"], request.path_params["action"]
        if callid not in engine.calls:
            raise SimError(404, f"no call {callid}")
        if action == "hangup":
            engine.hangup(callid)
        elif action == "dtmf":
            engine.send_dtmf(callid, str(body.get("digits", "")))
        elif action == "answer_remote":
            engine.answer_remote(callid)
        else:
            raise SimError(404, f"unknown call action {action!r}; use hangup, dtmf or answer_remote")
        return {"callid": callid}

    async def answer(request: Request, body: dict[str, Any]) -> Any:
        return engine.answer(request.path_params["pid"]).wire()

    async def presence(request: Request, body: dict[str, Any]) -> Any:
        number = str(body.pop("number", ""))
        user = sim.directory.set_presence(number, **body)
        return user.row()

    async def chat(request: Request, body: dict[str, Any]) -> Any:
        return sim.directory.add_chat_message(**body)

    async def journal(request: Request, body: dict[str, Any]) -> Any:
        since = int(request.query_params.get("since", "0"))
        return [dataclasses.asdict(e) for e in engine.journal.entries[since:]]

    return [
        Route("/faults", _guarded(faults), methods=["GET", "DELETE"]),
        Route("/faults/{kind}", _guarded(inject), methods=["POST"]),
        Route("/calls", _guarded(place), methods=["POST"]),
        Route("/calls/{callid:int}/{action}", _guarded(call_action), methods=["POST"]),
        Route("/participants/{pid:int}/answer", _guarded(answer), methods=["POST"]),
        Route("/presence", _guarded(presence), methods=["POST"]),
        Route("/chat", _guarded(chat), methods=["POST"]),
        Route("/journal", _guarded(journal), methods=["GET"]),
    ]
