"""The simulator's HTTP and websocket surface: /connect/token, the Call Control API (REST, websocket, participant
audio streams) and the XAPI subset, as 3CX V20 answers them.

Only the documented endpoints exist; anything else (``/hold``, ``/record/start``...) is a 404, as on a real PBX.
Call Control and XAPI can each be switched off (403), as on an unlicensed PBX or an integration without that box.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import itertools
import json
import random
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from hub.simulator.auth import TokenIssuer
from hub.simulator.clock import SimClock
from hub.simulator.directory import Directory
from hub.simulator.driving import driving_routes
from hub.simulator.engine import CallEngine, ChangeKind, Leg, SimError
from hub.simulator.faults import Faults, retry_after_header
from hub.simulator.media import Media, Utterance
from hub.simulator.sound import Synthesizer, read_wav, tone_synthesizer
from hub.simulator.streams import StreamRoutes
from hub.simulator.xapi import XapiRoutes

EVENT_TYPE = {"upsert": 0, "remove": 1, "dtmf": 2}
ACTIONS = {"drop", "answer", "divert", "routeto", "transferto", "attach_participant_data"}


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"reasontext": reason}, status_code=status)


class Simulator:
    """Ties the engine to HTTP: auth, routes, websocket fan-out, repeated upserts, media, the XAPI directory."""

    def __init__(self, engine: CallEngine, *, synthesizer: Synthesizer = tone_synthesizer) -> None:
        self.engine = engine
        self.config = engine.config
        self.clock = engine.clock if isinstance(engine.clock, SimClock) else SimClock()
        self.tokens = TokenIssuer(self.config, engine.clock)
        self._connections: set[_Connection] = set()
        self._global_seq = itertools.count(1)
        self._random = random.Random(self.config.seed)
        self.frames_sent = 0  # websocket frames queued to open connections (tests wait for the hub to read them)
        engine.subscribe(self._on_change)
        self.media = Media(engine)
        self.directory = Directory(engine)
        self.synthesizer = synthesizer
        self.streams = StreamRoutes(self)
        self.xapi = XapiRoutes(self, self.directory)
        self.faults = Faults(self)
        self._held = 0  # frames held back by a reorder fault
        self.client_connected = asyncio.Event()  # set by the first websocket client
        self._flush_timer: asyncio.TimerHandle | None = None
        self.app = Starlette(
            routes=[
                Route("/connect/token", self.token, methods=["POST"]),
                Route("/callcontrol", self.list_dns, methods=["GET"]),
                Route("/callcontrol/{dn}", self.get_dn, methods=["GET"]),
                Route("/callcontrol/{dn}/devices", self.get_devices, methods=["GET"]),
                Route("/callcontrol/{dn}/devices/{device:path}/makecall", self.makecall, methods=["POST"]),
                Route("/callcontrol/{dn}/devices/{device:path}", self.get_device, methods=["GET"]),
                Route("/callcontrol/{dn}/makecall", self.makecall, methods=["POST"]),
                Route("/callcontrol/{dn}/participants", self.get_participants, methods=["GET"]),
                Route("/callcontrol/{dn}/participants/{pid:int}", self.get_participant, methods=["GET"]),
                Route("/callcontrol/{dn}/participants/{pid:int}/stream", self.streams.get, methods=["GET"]),
                Route("/callcontrol/{dn}/participants/{pid:int}/stream", self.streams.post, methods=["POST"]),
                Route("/callcontrol/{dn}/participants/{pid:int}/{action}", self.action, methods=["POST"]),
                WebSocketRoute("/callcontrol/ws", self.websocket),
                Route("/xapi/v1/{rest:path}", self.xapi.handle, methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
                Mount("/_sim", routes=driving_routes(self)),
            ]
        )
        self.asgi: ASGIApp = _FaultLayer(self, self.app)  # what uvicorn serves: faults in front of the routes

    async def say(
        self, participant_id: int, text: str | None = None, *, pcm: bytes | None = None, wav: Path | None = None,
        label: str = "",
    ) -> Utterance:  # fmt: skip
        """The remote party of a Connected leg speaks: ``text`` through the synthesizer, raw s16le 8 kHz ``pcm``,
        or a ``wav`` file."""
        if sum(x is not None for x in (text, pcm, wav)) != 1:
            raise ValueError("say() takes exactly one of text, pcm or wav")
        if text is not None:
            produced = self.synthesizer(text)
            audio = await produced if inspect.isawaitable(produced) else produced
            label = label or text
        elif wav is not None:
            audio = read_wav(wav)
            label = label or wav.name
        else:
            audio = pcm or b""
        return self.media.say(participant_id, bytes(audio), label=label)

    # ------------------------------------------------------------------ helpers

    def _journal(self, request: Request, status: int) -> None:
        self.engine.journal.add(
            self.engine.clock(),
            "request",
            detail={"method": request.method, "path": request.url.path, "status": status},
        )

    def _authorized(self, request: Request) -> JSONResponse | None:
        if not self.tokens.valid(request.headers.get("authorization")):
            return _error(401, "Unauthorized")
        if not self.config.call_control_enabled:
            return _error(403, "3CX Call Control API access is not enabled for this client")
        return None

    def _scope(self, dn: str) -> JSONResponse | None:
        if not self.config.visible(dn):
            return _error(403, f"DN {dn} is not in this application's scope")
        return None

    def _finalstatus(self, ok: bool) -> str | int:
        if self.config.finalstatus == "number":
            return 1 if ok else -1
        return "Success" if ok else "Failed"

    def _result(self, leg: Leg | None) -> dict[str, Any]:
        return {"finalstatus": self._finalstatus(True), "reason": "None", "result": leg.wire() if leg else None,
                "reasontext": ""}  # fmt: skip

    async def _guard(self, request: Request, dn: str) -> JSONResponse | None:
        return self._authorized(request) or self._scope(dn)

    def _respond(self, request: Request, response: Response) -> Response:
        self._journal(request, response.status_code)
        return response

    # ------------------------------------------------------------------ routes

    async def token(self, request: Request) -> Response:
        form = await request.form()
        if form.get("grant_type") != "client_credentials":
            return self._respond(request, JSONResponse({"error": "unsupported_grant_type"}, status_code=400))
        issued = self.tokens.issue(str(form.get("client_id", "")), str(form.get("client_secret", "")))
        if issued is None:
            body = {"error": "invalid_client", "error_description": "invalid client_id or client_secret"}
            return self._respond(request, JSONResponse(body, status_code=400))
        self.enforce_token_revocation()
        return self._respond(request, JSONResponse(issued))

    async def list_dns(self, request: Request) -> Response:
        if (denied := self._authorized(request)) is not None:
            return self._respond(request, denied)
        return self._respond(request, JSONResponse([self._dninfo(dn) for dn in self.engine.visible_dns()]))

    def _dninfo(self, dn: str) -> dict[str, Any]:
        return {
            "dn": dn,
            "type": self.engine.dn_type(dn),
            "devices": self.engine.devices(dn),
            "participants": [leg.wire() for leg in self.engine.participants(dn)],
        }

    async def get_dn(self, request: Request) -> Response:
        dn = request.path_params["dn"]
        if (denied := await self._guard(request, dn)) is not None:
            return self._respond(request, denied)
        return self._respond(request, JSONResponse(self._dninfo(dn)))

    async def get_devices(self, request: Request) -> Response:
        dn = request.path_params["dn"]
        if (denied := await self._guard(request, dn)) is not None:
            return self._respond(request, denied)
        return self._respond(request, JSONResponse(self.engine.devices(dn)))

    async def get_device(self, request: Request) -> Response:
        dn = request.path_params["dn"]
        if (denied := await self._guard(request, dn)) is not None:
            return self._respond(request, denied)
        device = unquote(request.path_params["device"])
        found = next((d for d in self.engine.devices(dn) if d["device_id"] == device), None)
        if found is None:
            return self._respond(request, _error(404, f"device {device} not found on {dn}"))
        return self._respond(request, JSONResponse(found))

    async def get_participants(self, request: Request) -> Response:
        dn = request.path_params["dn"]
        if (denied := await self._guard(request, dn)) is not None:
            return self._respond(request, denied)
        return self._respond(request, JSONResponse([leg.wire() for leg in self.engine.participants(dn)]))

    async def get_participant(self, request: Request) -> Response:
        dn = request.path_params["dn"]
        if (denied := await self._guard(request, dn)) is not None:
            return self._respond(request, denied)
        try:
            leg = self.engine.participant(dn, request.path_params["pid"])
        except SimError as exc:
            return self._respond(request, _error(exc.status, exc.reason))
        return self._respond(request, JSONResponse(leg.wire()))

    async def _json_body(self, request: Request) -> dict[str, Any] | None:
        if "application/json" not in request.headers.get("content-type", ""):
            return None
        try:
            body = json.loads(await request.body() or b"null")
        except json.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    async def makecall(self, request: Request) -> Response:
        dn = request.path_params["dn"]
        if (denied := await self._guard(request, dn)) is not None:
            return self._respond(request, denied)
        if "device" in request.path_params:
            device = unquote(request.path_params["device"])
            if all(d["device_id"] != device for d in self.engine.devices(dn)):
                return self._respond(request, _error(404, f"device {device} not found on {dn}"))
        body = await self._json_body(request)
        if body is None or not body.get("destination"):
            return self._respond(request, _error(400, "a JSON body with a destination is required"))
        call = self.engine.place_call(dn, str(body["destination"]))
        own = next((leg for leg in self.engine.legs_of(call.callid) if leg.dn == dn), None)
        if own is None:
            own = next(iter(self.engine.legs_of(call.callid)), None)
        return self._respond(request, JSONResponse(self._result(own)))

    async def action(self, request: Request) -> Response:
        dn, pid, action = request.path_params["dn"], request.path_params["pid"], request.path_params["action"]
        if (denied := await self._guard(request, dn)) is not None:
            return self._respond(request, denied)
        if action not in ACTIONS:
            return self._respond(request, _error(404, "Not Found"))
        body = await self._json_body(request)
        if body is None:
            if self.config.actions_need_json == "reject":
                return self._respond(request, _error(415, "participant actions need Content-Type: application/json"))
            return self._respond(request, JSONResponse(self._result(None)))  # accepted, and silently nothing happens
        try:
            leg = self.engine.participant(dn, pid)
            result = self._apply(action, leg, body)
        except SimError as exc:
            return self._respond(request, _error(exc.status, exc.reason))
        return self._respond(request, JSONResponse(self._result(result)))

    def _apply(self, action: str, leg: Leg, body: dict[str, Any]) -> Leg | None:
        destination = str(body.get("destination") or "")
        if action in {"divert", "routeto", "transferto"} and not destination:
            raise SimError(400, f"{action} needs a destination")
        if action == "drop":
            snapshot = dataclasses.replace(leg)
            self.engine.drop(leg.id)
            return snapshot
        if action == "answer":
            if not (leg.direct_control or leg.dn == self.config.client_id):
                raise SimError(422, "answer needs a uaCSTA device (direct_control) or a route point participant")
            return self.engine.answer(leg.id)
        if action == "divert":
            self.engine.divert(leg.id, destination, str(body.get("reason") or "None"))
            return leg
        if action == "routeto":
            return self.engine.route_to(leg.id, destination) or leg
        if action == "transferto":
            self.engine.transfer(leg.id, destination)
            return leg
        data = body.get("attacheddata") or {}
        if not isinstance(data, dict):
            raise SimError(400, "attacheddata must be an object of strings")
        return self.engine.attach_data(leg.id, {str(k): str(v) for k, v in data.items()})

    # ------------------------------------------------------------------ websocket

    async def websocket(self, websocket: WebSocket) -> None:
        refused = self.faults.ws_refused()
        if refused is not None:
            self._ws_journal("refused", status=refused)
            body = {"reasontext": "Unauthorized" if refused == 401 else "Service Unavailable"}
            await websocket.send_denial_response(JSONResponse(body, status_code=refused))
            return
        if not self.tokens.valid(websocket.headers.get("authorization")):
            self._ws_journal("refused", status=401)
            await websocket.send_denial_response(JSONResponse({"reasontext": "Unauthorized"}, status_code=401))
            return
        if not self.config.call_control_enabled:
            denied = JSONResponse({"reasontext": "3CX Call Control API access is not enabled"}, status_code=403)
            await websocket.send_denial_response(denied)
            return
        await websocket.accept()
        connection = _Connection(websocket, self, websocket.headers.get("authorization", ""))
        self._connections.add(connection)
        self.client_connected.set()
        self._ws_journal("connected", connections=len(self._connections))
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)
            self._ws_journal("closed", connections=len(self._connections))

    def _ws_journal(self, action: str, **detail: Any) -> None:
        self.engine.journal.add(self.clock(), "ws", detail={"action": action, **detail})

    def _on_change(self, kind: ChangeKind, leg: Leg, attached: dict[str, Any] | None) -> None:
        entity = f"/callcontrol/{leg.dn}/participants/{leg.id}"
        copies = self.faults.frame_copies() if self._connections else 1
        window = self.faults.reorder_window() if self._connections else 1
        for connection in list(self._connections):
            connection.push(EVENT_TYPE[kind], entity, attached, copies=copies, hold=window > 1)
        if window > 1 and self._connections:
            self._held += 1
            if self._held >= window:
                self.flush_reordered()
            elif self._flush_timer is None:
                self._flush_timer = asyncio.get_running_loop().call_later(0.2, self.flush_reordered)

    def flush_reordered(self) -> None:
        """Deliver frames a reorder fault held back, newest first."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._held:
            return
        for connection in list(self._connections):
            connection.release()
        self.faults.reordered(self._held)
        self._held = 0

    def enforce_token_revocation(self) -> None:
        """With ``revoked_token_closes_websocket``, a socket whose token no longer works is closed."""
        if not self.config.revoked_token_closes_websocket:
            return
        for connection in list(self._connections):
            if not self.tokens.valid(connection.authorization):
                connection.close()

    def next_sequence(self, connection: _Connection) -> int:
        if self.config.sequence == "global":
            return next(self._global_seq)
        step = self._random.randint(1, 3) if self.config.sequence == "gaps" else 1
        connection.sequence += step
        return connection.sequence

    REPEAT_SLICES = 10

    def repeat_upserts(self, slice_: int | None = None) -> None:
        """3CX re-sends Upserts for live participants (every ~0.75 s, reference §3). Each participant repeats on
        its own phase (one of ``REPEAT_SLICES`` slices of the period), as a PBX's per-participant timers would,
        rather than all at once; ``slice_`` None repeats every participant now."""
        for leg in list(self.engine.legs.values()):
            if self.config.visible(leg.dn) and (slice_ is None or leg.id % self.REPEAT_SLICES == slice_):
                self._on_change("upsert", leg, None)

    async def repeater(self) -> None:
        interval = self.config.repeat_upserts_s
        if interval is None:
            return
        tick = 0
        while True:
            await self.clock.sleep(interval / self.REPEAT_SLICES)
            self.repeat_upserts(tick % self.REPEAT_SLICES)
            tick += 1

    def close_websockets(self) -> int:
        """Close every websocket (the hub must reconnect and resync); returns how many were open."""
        connections = list(self._connections)
        for connection in connections:
            connection.close()
        return len(connections)

    def send_raw(self, frames: list[str | bytes]) -> int:
        """Queue raw frames on every open websocket (fault injection); returns how many connections got them."""
        connections = [c for c in self._connections if not c.closing]
        for connection in connections:
            for frame in frames:
                self.frames_sent += 1
                connection.queue.put_nowait(frame)
        return len(connections)

    async def drop_websockets(self) -> int:
        return self.close_websockets()

    @property
    def websocket_count(self) -> int:
        return len(self._connections)


class _FaultLayer:
    """REST faults (latency, 5xx/429 bursts) in front of every route but the driving API."""

    def __init__(self, sim: Simulator, app: ASGIApp) -> None:
        self.sim = sim
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/_sim"):
            await self.app(scope, receive, send)
            return
        delay, fault = self.sim.faults.rest_fault(path)
        if delay:
            await self.sim.clock.sleep(delay)
        if fault is None:
            await self.app(scope, receive, send)
            return
        message = "Too Many Requests" if fault.status == 429 else "injected fault"
        body: dict[str, Any] = (
            {"error": {"code": str(fault.status), "message": message, "target": None, "details": []}}
            if path.startswith("/xapi/") else {"reasontext": message}
        )  # fmt: skip
        headers = {"Retry-After": retry_after_header(fault.retry_after)} if fault.retry_after is not None else None
        self.sim.engine.journal.add(self.sim.clock(), "request", detail={"method": scope.get("method", ""),
                                    "path": path, "status": fault.status, "fault": True})  # fmt: skip
        await JSONResponse(body, status_code=fault.status, headers=headers)(scope, receive, send)


class _Connection:
    def __init__(self, websocket: WebSocket, sim: Simulator, authorization: str) -> None:
        self.websocket = websocket
        self.sim = sim
        self.authorization = authorization
        self.sequence = 0
        self.closing = False
        self.queue: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.held: list[str] = []

    def push(
        self, event_type: int, entity: str, attached: dict[str, Any] | None, *, copies: int = 1, hold: bool = False
    ) -> None:
        if self.closing:
            return  # nothing goes out after the close frame
        event = {"event_type": event_type, "entity": entity, "attached_data": attached}
        frame = json.dumps({"sequence": self.sim.next_sequence(self), "event": event})
        for _ in range(copies):
            if hold:
                self.held.append(frame)
            else:
                self.sim.frames_sent += 1
                self.queue.put_nowait(frame)

    def release(self) -> None:
        for frame in reversed(self.held):
            self.sim.frames_sent += 1
            self.queue.put_nowait(frame)
        self.held.clear()

    def close(self) -> None:
        self.closing = True
        self.queue.put_nowait(None)

    async def run(self) -> None:
        receiver = asyncio.create_task(self._drain_incoming())
        try:
            while True:
                frame = await self.queue.get()
                if frame is None:
                    with contextlib.suppress(Exception):
                        await self.websocket.close(code=1001)
                    return
                if isinstance(frame, bytes):
                    await self.websocket.send_bytes(frame)
                else:
                    await self.websocket.send_text(frame)
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver

    async def _drain_incoming(self) -> None:
        """Clients may send requests; the simulator (like the official sample) uses the socket for events only."""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                await self.websocket.receive_text()
