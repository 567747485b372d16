"""Basma as an agent of the SDK: one :class:`VoiceSession` per call the coordinator assigns to it.

- ``on_assigned`` (the SDK has claimed the call) and ``on_handoff`` (another agent handed it over) start a session
  with ``ctx.spawn``: the conversation runs beside the handlers, owned by the runtime, and is cancelled when the
  call ends or the replica stops. Its commands go through that event's context (:mod:`agents.basma.control`).
- ``call.dtmf`` of an owned call goes into the session (each event once, even if redelivered).
- ``call.leg_removed`` of the session's leg, or ``call.ended``, ends the session; the handler waits (bounded) until
  the session has published its transcript, before the runtime cancels what is left of the call's tasks.
- The call's audio is the 3CX participant stream of the leg (:class:`HttpStreamAudio`), with the PBX token from the
  ingest leader (``ml.int.<pbx>.token``, D§6) unless ``token_source: own``; Basma's voice also goes to the leg's
  audio tap, so a hub-side recording of the call has both sides.
- What the process holds for all calls (an HTTP client per PBX, the token sources, the models, loaded once) is
  opened by the agent's lifespan, before the first event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

import httpx
from nats.aio.client import Client

from agents.basma.config import VoiceStack, build_stack, preload
from agents.basma.control import SdkCallControl
from agents.basma.httpaudio import HttpStreamAudio, TokenSource
from agents.basma.ports import CallInfo, EventSink
from agents.basma.session import SessionResult, VoiceSession
from agents.basma.settings import VoiceConfig
from hub.audio.tap import AudioTap
from hub.config import PbxConfig
from hub.logs import get_logger
from hub.pbx import TokenProvider
from hub.pbx.broker import BrokeredTokens
from hub.sdk import (
    Agent,
    AgentAssigned,
    AgentHandedOff,
    AgentRuntime,
    CallCreated,
    CallEnded,
    CallLegRemoved,
    Context,
    DtmfReceived,
)
from schemas.common import LegRef

log = get_logger(__name__)

NAME = "basma"
VERSION = "1.0"
CAPABILITIES = ("voice", "handoff", "dtmf")
Key = tuple[str, str]  # (pbx_id, call_id)
TokenFactory = Callable[[AgentRuntime, PbxConfig, httpx.AsyncClient], TokenSource]


def default_tokens(config: VoiceConfig) -> TokenFactory:
    """The ingest leader's token over the bus (D§6), or this process's own API client with ``token_source: own``."""

    def make(runtime: AgentRuntime, pbx: PbxConfig, http: httpx.AsyncClient) -> TokenSource:
        if config.token_source == "own":  # noqa: S105 - a mode name, not a secret
            return TokenProvider(http, pbx.client_id, pbx.secret())
        return BrokeredTokens(runtime.nc, pbx.id)

    return make


@dataclass
class _Pbx:
    config: PbxConfig
    http: httpx.AsyncClient
    tokens: TokenSource


@dataclass
class _Call:
    session: VoiceSession
    audio: HttpStreamAudio
    leg: LegRef
    control: SdkCallControl
    ctx: Context
    done: asyncio.Event = field(default_factory=asyncio.Event)
    keys_seen: set[UUID] = field(default_factory=set)
    ended_by_bus: bool = False
    result: SessionResult | None = None


class Basma:
    """The voice agent of one process: ``Basma(config, pbxs).agent`` is what ``masterlinc agent run basma`` runs."""

    def __init__(
        self,
        config: VoiceConfig,
        pbxs: Sequence[PbxConfig],
        *,
        name: str = NAME,
        tokens: TokenFactory | None = None,
        stack: VoiceStack | None = None,
        end_wait_s: float = 5.0,
    ) -> None:
        self.config = config
        self._pbx_configs = {p.id: p for p in pbxs}
        self._tokens = tokens or default_tokens(config)
        self._given_stack = stack
        self._end_wait_s = end_wait_s
        self.stack: VoiceStack | None = None
        self._pbxs: dict[str, _Pbx] = {}
        self._events: EventSink | None = None
        self._nc: Client | None = None
        self.calls: dict[Key, _Call] = {}
        self.finished: OrderedDict[str, SessionResult] = OrderedDict()  # the last few, by call id
        self._callers: OrderedDict[Key, str] = OrderedDict()
        self.agent = Agent(
            name,
            capabilities=CAPABILITIES,
            version=VERSION,
            description="the voice receptionist: answers route-point calls, talks, hands callers to people",
            lifespan=self._lifespan,
        )
        self.agent.on_assigned(self._assigned)
        self.agent.on_handoff(self._handed_over)
        self.agent.on(DtmfReceived, owned=True)(self._dtmf)
        self.agent.on(CallLegRemoved, CallEnded, owned=True)(self._leg_gone)
        self.agent.on(CallCreated)(self._created)

    def __repr__(self) -> str:
        return f"Basma(agent={self.agent.name!r}, pbxs={sorted(self._pbx_configs)}, calls={len(self.calls)})"

    # ------------------------------------------------------------------ process resources

    @contextlib.asynccontextmanager
    async def _lifespan(self, runtime: AgentRuntime) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as resources:
            for pbx in self._pbx_configs.values():
                verify: bool | str = str(pbx.ca_file) if pbx.ca_file else pbx.verify_tls
                http = await resources.enter_async_context(
                    httpx.AsyncClient(base_url=pbx.base_url, verify=verify, timeout=10.0)
                )
                self._pbxs[pbx.id] = _Pbx(pbx, http, self._tokens(runtime, pbx, http))
            providers = await resources.enter_async_context(httpx.AsyncClient(timeout=30.0))
            self.stack = self._given_stack or build_stack(self.config, providers)
            await asyncio.to_thread(preload, self.stack)  # models load once per process, before the first call
            self._events = runtime.publisher
            self._nc = runtime.nc
            log.info("voice agent ready", agent=self.agent.name, pbxs=sorted(self._pbxs))
            try:
                yield
            finally:
                self._pbxs.clear()

    # ------------------------------------------------------------------ handlers

    async def _created(self, event: CallCreated, ctx: Context) -> None:
        """Remember the caller's number (for send_message) until the call is assigned; bounded."""
        if event.call_id is None or not event.data.from_number:
            return
        self._callers[(event.pbx_id, event.call_id)] = event.data.from_number
        while len(self._callers) > 4096:
            self._callers.popitem(last=False)

    async def _assigned(self, event: AgentAssigned, ctx: Context) -> None:
        await self._start(ctx)

    async def _handed_over(self, event: AgentHandedOff, ctx: Context) -> None:
        await self._start(ctx)

    async def _dtmf(self, event: DtmfReceived, ctx: Context) -> None:
        call = self.calls.get((event.pbx_id, event.call_id or ""))
        if call is None or event.event_id in call.keys_seen:
            return
        call.keys_seen.add(event.event_id)
        call.session.dtmf(event.data.digits)

    async def _leg_gone(self, event: CallLegRemoved | CallEnded, ctx: Context) -> None:
        call = self.calls.get((event.pbx_id, event.call_id or ""))
        if call is None:
            return
        if isinstance(event, CallLegRemoved) and not _same_leg(event.leg, call.leg):
            return  # another leg of the call left (a transfer target, say): the caller is still here
        call.ended_by_bus = True
        call.session.end()
        with contextlib.suppress(TimeoutError):  # the transcript is published before the runtime cancels the rest
            await asyncio.wait_for(call.done.wait(), self._end_wait_s)

    # ------------------------------------------------------------------ sessions

    async def _start(self, ctx: Context) -> None:
        key = (ctx.pbx_id, ctx.call_id or "")
        if key in self.calls:
            return  # a redelivered assignment while the conversation runs
        pbx, leg, stack = self._pbxs.get(ctx.pbx_id), ctx.leg, self.stack
        if pbx is None or leg is None or stack is None:
            why = "no leg to talk on" if leg is None else f"pbx {ctx.pbx_id} is not configured for the voice agent"
            log.error("voice agent cannot take the call", call_id=ctx.call_id, reason=why)
            await ctx.release(why)
            return
        call_info = CallInfo(
            pbx_id=ctx.pbx_id,
            call_id=key[1],
            leg=leg,
            caller_number=self._callers.pop(key, ""),
            agent=self.agent.name,
        )
        audio = HttpStreamAudio(
            pbx.http,
            pbx.tokens,
            dn=leg.dn,
            participant_id=leg.participant_id,
            connect_timeout_s=self.config.stream_connect_timeout_s,
            lead_ms=self.config.reply_lead_ms,
            tap=AudioTap(self._nc, ctx.pbx_id, key[1], leg.participant_id) if self._nc is not None else None,
        )
        control = SdkCallControl(ctx, leg)
        session = VoiceSession(
            call_info,
            audio,
            stt=stack.stt,
            tts=stack.tts,
            brain=stack.new_brain(),
            control=control,
            destinations=stack.policy.destinations(),
            events=self._events,
            config=self.config.session,
        )
        call = _Call(session=session, audio=audio, leg=leg, control=control, ctx=ctx)
        self.calls[key] = call
        ctx.spawn(self._converse(key, call), name=f"{self.agent.name}-{key[1]}")

    async def _converse(self, key: Key, call: _Call) -> None:
        try:
            call.result = result = await call.session.run()
            self.finished[key[1]] = result
            while len(self.finished) > 64:
                self.finished.popitem(last=False)
            log.info(
                "voice call finished",
                call_id=key[1],
                outcome=result.outcome,
                turns=len(result.dialogue),
                barge_ins=len(result.barge_ins),
            )
            if call.audio.error is not None and not call.ended_by_bus:
                await self._audio_failed(call)
        finally:
            if self.calls.get(key) is call:
                del self.calls[key]
            call.done.set()

    async def _audio_failed(self, call: _Call) -> None:
        """The call's audio never came (or was refused): a person takes the call, else Basma lets it go."""
        assert self.stack is not None
        fallback = self.stack.policy.fallback
        reason = f"the voice agent could not open the call's audio ({call.audio.error})"
        if fallback is not None and fallback.action == "transfer":
            result = await call.control.transfer(fallback.value, reason, {"reason": "audio_unavailable"})
            if result.ok:
                return
            log.error("fallback transfer failed", call_id=call.session.call.call_id, code=result.code)
        await call.ctx.release(reason)


def _same_leg(a: LegRef | None, b: LegRef) -> bool:
    if a is None:
        return False
    same_legid = a.legid is None or b.legid is None or a.legid == b.legid
    return a.dn == b.dn and a.participant_id == b.participant_id and same_legid
