"""Live state for the facade: the calls it has seen, and resource-updated notifications fed from the bus.

Three pieces:

- :class:`CallView` keeps each active call's legs (dn, participant id, status) from ``call.*`` events, so
  ``transfer_call(call_id)`` can pick divert (leg ringing) or transfer (leg connected) without asking the PBX.
- :class:`NatsSubscriptionBus` is the MCP SDK's ``SubscriptionBus`` over core NATS: an update published by any facade
  replica reaches the listen streams of every replica (subject ``ml.int.<pbx>.mcp_updates``). Before the bus is
  connected it delivers locally.
- :class:`LegacySubscriptions` serves 2025-era ``resources/subscribe`` / ``resources/unsubscribe`` and forwards the
  same updates to those sessions as ``notifications/resources/updated``.

Which resource changes when: :func:`uris_for_subject` maps an event subject to the URIs it touches. Each event is
turned into updates by one replica only (a NATS queue group), then fanned out to all replicas through the bus.
"""

from __future__ import annotations

import json
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)
from mcp_types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from hub.logs import get_logger
from schemas.codec import DecodeError, parse_event
from schemas.events import (
    CallAnswered,
    CallEnded,
    CallLegRemoved,
    CallParked,
    CallResumed,
    CallRinging,
    ParticipantUpdated,
)
from schemas.subjects import PREFIX, parse_event_subject
from schemas.tokens import check_pbx_id

log = get_logger(__name__)

ACTIVE_CALLS = "3cx://active-calls"
CALL_HISTORY = "3cx://call-history"
EXTENSIONS = "3cx://extensions"
MESSAGES = "3cx://messages"


def call_uri(call_id: str) -> str:
    return f"3cx://calls/{call_id}"


def presence_uri(extension: str) -> str:
    return f"3cx://extensions/{extension}/presence"


def updates_subject(pbx_id: str) -> str:
    return f"{PREFIX}.int.{check_pbx_id(pbx_id)}.mcp_updates"


def uris_for_subject(subject: str) -> list[str]:
    """The resource URIs an event on ``subject`` changes (from the subject alone: no payload decoding)."""
    try:
        _, domain, key, name = parse_event_subject(subject)
    except ValueError:
        return []
    if domain == "call":
        uris = [ACTIVE_CALLS, call_uri(key)]
        if name == "ended":
            uris.append(CALL_HISTORY)
        return uris
    if domain == "presence" and key != "_":
        return [presence_uri(key), EXTENSIONS]
    if domain == "message":
        return [MESSAGES]
    if domain in ("recording", "command", "agent", "voice") and key != "_":
        return [call_uri(key)]
    return []


# --------------------------------------------------------------------------- call legs


@dataclass
class LegState:
    dn: str
    participant_id: int
    legid: int | None
    status: str

    def describe(self) -> str:
        return f"{{dn: {self.dn!r}, participant_id: {self.participant_id}}} ({self.status})"


@dataclass
class CallState:
    call_id: str
    legs: dict[tuple[str, int], LegState] = field(default_factory=dict)
    parked_orbit: str | None = None


class CallView:
    """Active calls and their legs, from ``call.*`` events (bounded: the oldest calls are forgotten first)."""

    def __init__(self, max_calls: int = 10_000) -> None:
        self._calls: OrderedDict[str, CallState] = OrderedDict()
        self._max = max_calls
        self.changed = anyio.Event()

    def get(self, call_id: str) -> CallState | None:
        return self._calls.get(call_id)

    def __len__(self) -> int:
        return len(self._calls)

    def apply(self, payload: bytes) -> None:
        try:
            event = parse_event(payload)
        except DecodeError:
            return  # not ours to judge: the recorder dead-letters malformed events
        if event.call_id is None:
            return
        if isinstance(event, CallEnded):
            self._calls.pop(event.call_id, None)
        elif isinstance(event, CallRinging | CallAnswered | ParticipantUpdated):
            participant = event.data.participant
            call = self._call(event.call_id)
            key = (participant.dn, participant.participant_id)
            call.legs[key] = LegState(participant.dn, participant.participant_id, participant.legid, participant.status)
        elif isinstance(event, CallLegRemoved):
            participant = event.data.participant
            self._call(event.call_id).legs.pop((participant.dn, participant.participant_id), None)
        elif isinstance(event, CallParked):
            call = self._call(event.call_id)
            call.parked_orbit = event.data.orbit
            if event.leg is not None:
                call.legs.pop((event.leg.dn, event.leg.participant_id), None)
        elif isinstance(event, CallResumed):
            self._call(event.call_id).parked_orbit = None
        else:
            return
        self.changed.set()
        self.changed = anyio.Event()

    def _call(self, call_id: str) -> CallState:
        call = self._calls.get(call_id)
        if call is None:
            call = self._calls[call_id] = CallState(call_id)
            while len(self._calls) > self._max:
                self._calls.popitem(last=False)
        else:
            self._calls.move_to_end(call_id)
        return call


# --------------------------------------------------------------------------- the subscription bus over NATS


def _encode(event: ServerEvent) -> bytes:
    if isinstance(event, ResourceUpdated):
        return json.dumps({"kind": "resource_updated", "uri": event.uri}).encode()
    kind = {ToolsListChanged: "tools", PromptsListChanged: "prompts", ResourcesListChanged: "resources"}[type(event)]
    return json.dumps({"kind": f"{kind}_list_changed"}).encode()


def _decode(data: bytes) -> ServerEvent | None:
    try:
        raw: Any = json.loads(data)
        kind = raw["kind"]
    except (ValueError, KeyError, TypeError):
        return None
    if kind == "resource_updated" and isinstance(raw.get("uri"), str):
        return ResourceUpdated(uri=raw["uri"])
    known: dict[str, ServerEvent] = {
        "tools_list_changed": ToolsListChanged(),
        "prompts_list_changed": PromptsListChanged(),
        "resources_list_changed": ResourcesListChanged(),
    }
    return known.get(kind)


class NatsSubscriptionBus:
    """``mcp.server.subscriptions.SubscriptionBus`` over core NATS, shared by every facade replica of a PBX."""

    def __init__(self, pbx_id: str) -> None:
        self.subject = updates_subject(pbx_id)
        self._listeners: dict[object, Callable[[ServerEvent], None]] = {}
        self._nc: Client | None = None
        self._sub: NatsSubscription | None = None

    async def attach(self, nc: Client) -> None:
        """From now on, publish through NATS and deliver what arrives from it."""
        self._sub = await nc.subscribe(self.subject, cb=self._on_msg)
        await nc.flush()
        self._nc = nc

    async def detach(self) -> None:
        self._nc = None
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may already be closed: nothing left to undo
                log.debug("updates unsubscribe failed", error=str(exc))

    async def _on_msg(self, msg: Msg) -> None:
        event = _decode(msg.data)
        if event is not None:
            self._deliver(event)

    def _deliver(self, event: ServerEvent) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except Exception:  # fan-out boundary: one bad listener must not starve the others
                log.exception("subscription listener raised")

    async def publish(self, event: ServerEvent) -> None:
        nc = self._nc
        if nc is not None and nc.is_connected:
            await nc.publish(self.subject, _encode(event))
        else:
            self._deliver(event)
        await anyio.lowlevel.checkpoint()

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        token = object()
        self._listeners[token] = listener

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe


# --------------------------------------------------------------------------- 2025-era resources/subscribe


class LegacySubscriptions:
    """``resources/subscribe`` for 2025-era clients: which session wants which URI, and a forwarder task.

    Register with :meth:`install`; run :meth:`run` in a task group for as long as the server runs.
    """

    def __init__(self, bus: NatsSubscriptionBus, buffer: int = 1024) -> None:
        self._bus = bus
        self._buffer = buffer
        self._by_session: weakref.WeakKeyDictionary[Connection, set[str]] = weakref.WeakKeyDictionary()
        self._send: MemoryObjectSendStream[str] | None = None

    def install(self, server: Any) -> None:
        """Register the two handlers on an MCPServer's low-level server (advertises ``resources.subscribe``)."""
        low = server._lowlevel_server  # the SDK's documented way to add 2025-era handlers to an MCPServer
        low.add_request_handler("resources/subscribe", SubscribeRequestParams, self._subscribe)
        low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, self._unsubscribe)

    @property
    def session_count(self) -> int:
        return sum(1 for uris in self._by_session.values() if uris)

    @staticmethod
    def _connection(ctx: ServerRequestContext[Any, Any]) -> Connection:
        # The request's ServerSession lives for one request; updates go on the connection's standalone channel.
        connection: Connection = ctx.session._connection
        return connection

    async def _subscribe(self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        self._by_session.setdefault(self._connection(ctx), set()).add(str(params.uri))
        return EmptyResult()

    async def _unsubscribe(self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
        self._by_session.get(self._connection(ctx), set()).discard(str(params.uri))
        return EmptyResult()

    def _on_event(self, event: ServerEvent) -> None:
        send = self._send
        if send is None or not isinstance(event, ResourceUpdated):
            return
        if any(event.uri in uris for uris in self._by_session.values()):
            try:
                send.send_nowait(event.uri)
            except anyio.WouldBlock:
                log.warning("legacy resource-update backlog full; dropping", uri=event.uri)

    async def run(self) -> None:
        """Forward updates to subscribed 2025-era sessions until cancelled."""
        send: MemoryObjectSendStream[str]
        recv: MemoryObjectReceiveStream[str]
        send, recv = anyio.create_memory_object_stream[str](self._buffer)
        self._send = send
        unsubscribe = self._bus.subscribe(self._on_event)
        try:
            async for uri in recv:
                for connection, uris in list(self._by_session.items()):
                    if uri not in uris:
                        continue
                    try:
                        await connection.send_resource_updated(uri)
                    except Exception as exc:  # a closed session: forget it
                        log.debug("legacy subscriber gone", error=str(exc))
                        self._by_session.pop(connection, None)
        finally:
            unsubscribe()
            self._send = None
            send.close()
            recv.close()
