"""``/callcontrol/{dn}/participants/{id}/stream``: participant audio over HTTP (reference §4).

GET streams what the remote party says, raw s16le 8 kHz mono, paced in real time (on the simulator's clock) for as
long as the leg is up; the response ends when the leg goes away. POST takes a chunked ``application/octet-stream``
body and plays it into the leg's playout buffer. Both answer 404 or 424 (``stream_before_connected``) before the
leg is Connected, and 403 for a leg the application does not control (``stream_scope``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from hub.simulator.engine import Leg, SimError
from hub.simulator.media import LegMedia

if TYPE_CHECKING:
    from hub.simulator.app import Simulator


class StreamRoutes:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.engine = sim.engine
        self.config = sim.config
        self.open_streams = 0

    def _leg(self, dn: str, pid: int) -> Leg:
        leg = self.engine.participant(dn, pid)
        if self.config.stream_scope == "route_point" and leg.dn != self.config.client_id:
            raise SimError(
                403, f"participant {pid} is not controlled by this application (only route point legs stream)"
            )
        if leg.status != "Connected":
            raise SimError(self.config.stream_before_connected, f"participant {pid} is {leg.status}: no media yet")
        return leg

    async def _prepare(self, request: Request) -> tuple[Leg, str] | Response:
        dn, pid = request.path_params["dn"], request.path_params["pid"]
        if (denied := await self.sim._guard(request, dn)) is not None:
            return denied
        try:
            leg = self._leg(dn, pid)
        except SimError as exc:
            return JSONResponse({"reasontext": exc.reason}, status_code=exc.status)
        return leg, request.headers.get("authorization", "")

    def _alive(self, leg: Leg, authorization: str) -> bool:
        if self.engine.legs.get(leg.id) is not leg:
            return False
        return not (self.config.revoked_token_ends_streams and not self.sim.tokens.valid(authorization))

    async def get(self, request: Request) -> Response:
        prepared = await self._prepare(request)
        if isinstance(prepared, Response):
            return self.sim._respond(request, prepared)
        leg, authorization = prepared
        try:  # before the response starts: a leg whose media just ended is a 404, not a broken stream
            media = self.sim.media.live(leg.id)
        except SimError as exc:
            return self.sim._respond(request, JSONResponse({"reasontext": exc.reason}, status_code=exc.status))
        self.sim._journal(request, 200)
        return StreamingResponse(self._frames(leg, media, authorization), media_type="application/octet-stream")

    async def _frames(self, leg: Leg, media: LegMedia, authorization: str) -> AsyncIterator[bytes]:
        clock = self.sim.clock
        size = self.config.stream_chunk_bytes
        offset = media.inbound.position(clock())
        self.sim.media.record(leg, "stream_opened", direction="get", offset=offset)
        self.open_streams += 1
        reason = "leg_ended"
        try:
            while True:
                await clock.sleep_until(media.inbound.time_of(offset + size))
                if not self._alive(leg, authorization):
                    reason = "leg_ended" if self.engine.legs.get(leg.id) is not leg else "token_revoked"
                    return
                yield media.inbound.render(offset, size)
                offset += size
        finally:
            self.open_streams -= 1
            self.sim.media.record(leg, "stream_closed", direction="get", reason=reason, offset=offset)

    async def post(self, request: Request) -> Response:
        prepared = await self._prepare(request)
        if isinstance(prepared, Response):
            return self.sim._respond(request, prepared)
        leg, authorization = prepared
        playout = self.sim.media.live(leg.id).playout
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        if self.config.post_audio_needs_chunked and not chunked:
            discarded = len(await request.body())
            self.sim.media.record(leg, "audio_discarded", reason="not chunked", bytes=discarded)
            return self.sim._respond(request, Response(status_code=200))
        stream = playout.open_stream()
        self.sim.media.record(leg, "stream_opened", direction="post", stream=stream)
        self.open_streams += 1
        received, reason = 0, "body_ended"
        try:
            async for chunk in request.stream():
                if not self._alive(leg, authorization):
                    reason = "leg_ended" if self.engine.legs.get(leg.id) is not leg else "token_revoked"
                    break
                received += len(chunk)
                playout.feed(chunk, self.sim.clock(), stream)
        except ClientDisconnect:  # the sender went away mid-body (an agent killed or stopped): nothing to answer
            reason = "sender_gone"
            return Response(status_code=499)
        finally:
            self.open_streams -= 1
            self.sim.media.record(leg, "stream_closed", direction="post", stream=stream, reason=reason,
                                    bytes=received)  # fmt: skip
        # the leg went away mid-body: answer and close the connection, so the sender stops writing
        headers = {"Connection": "close"} if reason != "body_ended" else None
        return self.sim._respond(request, Response(status_code=200, headers=headers))
