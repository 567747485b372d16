"""The routing agent: where each call the coordinator assigns to ``routing`` goes, by rules.

The coordinator decides *who* handles a call; this agent decides *where* it goes. On ``agent.assigned`` (the SDK has
claimed the call) it matches the caller, the number dialled and the time against the rules and acts, honest about
3CX (D§7): a route-point inbound leg arrives Connected, so a call is moved with ``transfer`` (``transferto``), or
with ``route_to`` when the leg is ringing, its state is unknown, or an overflow must be possible (3CX keeps a routed
leg until the destination answers); never ``divert``, which only works on a ringing leg. Blocked callers are
dropped. A menu plays its prompt on the route-point leg through the shared audio stream client
(:class:`hub.audio.ParticipantStream`) and reads the caller's keys from ``call.dtmf``. Every decision is published as
``routing.decided`` before its command. When a command fails, the call goes to the rules' ``fallback`` or else to the
coordinator's safe route; the lease is let go once the call is with people.

In a dry run the agent is ``routing-dry-run``: it claims nothing and sends nothing; it decides for every inbound call
reaching the route point (and for keys pressed in a menu it would have played), logs each decision and publishes it
with ``dry_run: true``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TypeVar

import httpx
from nats.js.errors import NotFoundError
from prometheus_client import Gauge

from agents.routing.menu import MenuResult, PromptOutput, run_menu
from agents.routing.reload import RulesSource
from agents.routing.rules import Decision, PlayMenu, Reject, Route, RoutingRules, action_name, destination
from hub.audio.stream import ParticipantStream
from hub.config import PbxConfig
from hub.logs import get_logger
from hub.pbx.broker import BrokeredTokens
from hub.rules import CallContext
from hub.sdk import Agent, AgentRuntime, Context
from schemas import commands as c
from schemas import events as ev
from schemas import subjects
from schemas.codec import parse_event
from schemas.common import Direction, LegRef, LegStatus

log = get_logger(__name__)

AGENT_NAME = "routing"
DRY_RUN_NAME = "routing-dry-run"
MAX_CALLS = 100_000
MAX_MENU_DEPTH = 10
CALLS = Gauge("ml_routing_calls", "Calls the routing agent keeps facts for (each dropped at its call.ended)")

E = TypeVar("E", bound=ev.EventBase)

AudioOpener = Callable[[str, LegRef], AbstractAsyncContextManager[PromptOutput]]
"""(pbx id, leg) -> the leg's outgoing audio, entered for as long as a menu plays."""


@dataclass(frozen=True, kw_only=True)
class RoutingConfig:
    dry_run: bool = False
    route_points: Mapping[str, str] = field(default_factory=dict)  # pbx -> the hub's route-point DN
    safe_routes: Mapping[str, str] = field(default_factory=dict)  # pbx -> the coordinator's safe route
    lease_s: float | None = None
    watch_interval_s: float = 1.0  # how often the rule file is checked for changes
    sighup: bool = False  # also re-read it on SIGHUP (the service does; tests do not touch signals)
    audio_connect_s: float = 10.0  # how long a menu waits for the leg's audio stream


@dataclass
class CallFacts:
    """What the agent saw of a call: enough to match rules and to choose between transfer and route_to."""

    caller: str = ""
    did: str = ""
    direction: Direction = Direction.UNKNOWN
    status: dict[str, str] = field(default_factory=dict)  # leg key -> last status seen
    decided: bool = False
    menu: str | None = None  # dry run: the menu it would be playing
    digits: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    routed: Route | None = None  # awaiting delivery, with an overflow
    routed_leg: LegRef | None = None
    delivered: asyncio.Event = field(default_factory=asyncio.Event)


class RoutingAgent:
    """``audio``: how menus reach a leg; by default the PBXs' participant streams (``pbxs``), with the token from
    the ingest leader (D§6)."""

    def __init__(
        self,
        source: RulesSource,
        config: RoutingConfig,
        *,
        audio: AudioOpener | None = None,
        pbxs: Sequence[PbxConfig] = (),
    ) -> None:
        self.source = source
        self.config = config
        self.audio = audio
        self.pbxs = tuple(pbxs)
        self.runtime: AgentRuntime | None = None
        self.calls: OrderedDict[tuple[str, str], CallFacts] = OrderedDict()
        self.counts = {"decided": 0, "menus": 0, "overflows": 0, "fallbacks": 0, "failed": 0}
        name = DRY_RUN_NAME if config.dry_run else AGENT_NAME
        self.agent = Agent(
            name,
            capabilities=["route", "menu", "overflow"] if not config.dry_run else ["route-dry-run"],
            version="1.0",
            description="routes calls by rules: caller lists, DIDs, hours, DTMF menus, overflow",
            claim_assigned=not config.dry_run,
            lease_s=config.lease_s,
        )
        self._register()

    @property
    def rules(self) -> RoutingRules:
        return self.source.current

    def facts(self, pbx_id: str, call_id: str) -> CallFacts:
        key = (pbx_id, call_id)
        facts = self.calls.get(key)
        if facts is None:
            facts = self.calls[key] = CallFacts()
            while len(self.calls) > MAX_CALLS:  # a lost call.ended must not leak
                self.calls.popitem(last=False)
            CALLS.set(len(self.calls))
        return facts

    # ------------------------------------------------------------------ handlers

    def _register(self) -> None:
        agent = self.agent

        @agent.lifespan
        @contextlib.asynccontextmanager
        async def lifespan(runtime: AgentRuntime) -> AsyncIterator[None]:
            self.runtime = runtime
            async with contextlib.AsyncExitStack() as stack:
                if self.audio is None and self.pbxs and not self.config.dry_run:
                    self.audio = await stack.enter_async_context(self._pbx_audio(runtime))
                await stack.enter_async_context(
                    self.source.watching(self.config.watch_interval_s, sighup=self.config.sighup)
                )
                yield

        @agent.on(ev.CallCreated)
        async def created(event: ev.CallCreated, ctx: Context) -> None:
            facts = self.facts(event.pbx_id, _call(event))
            facts.caller, facts.did, facts.direction = event.data.from_number, event.data.did, event.data.direction
            facts.did = facts.did or event.data.to_number

        @agent.on(ev.CallRinging, ev.CallAnswered)
        async def leg_seen(event: ev.CallRinging | ev.CallAnswered, ctx: Context) -> None:
            facts = self.facts(event.pbx_id, _call(event))
            if event.leg is not None:
                facts.status[event.leg.key] = event.data.participant.status
            if self.config.dry_run:
                await self._dry_run(event, ctx, facts)
            elif isinstance(event, ev.CallAnswered) and _answered_at(event, facts.routed):
                facts.delivered.set()  # the destination answered: the overflow is not needed

        @agent.on(ev.CallLegRemoved)
        async def leg_removed(event: ev.CallLegRemoved, ctx: Context) -> None:
            facts = self.calls.get((event.pbx_id, _call(event)))
            if facts is not None and event.leg is not None:
                facts.status.pop(event.leg.key, None)
                if facts.routed_leg is not None and event.leg.key == facts.routed_leg.key:
                    facts.delivered.set()  # 3CX keeps a routed leg until delivery succeeds

        @agent.on(ev.DtmfReceived)
        async def keys(event: ev.DtmfReceived, ctx: Context) -> None:
            facts = self.calls.get((event.pbx_id, _call(event)))
            if facts is None:
                return
            if self.config.dry_run:
                await self._dry_run_keys(event, ctx, facts)
            elif ctx.owns:
                for digit in event.data.digits:
                    facts.digits.put_nowait(digit)

        @agent.on(ev.CallEnded)
        async def ended(event: ev.CallEnded, ctx: Context) -> None:
            self.calls.pop((event.pbx_id, _call(event)), None)
            CALLS.set(len(self.calls))

        @agent.on_assigned
        async def assigned(event: ev.AgentAssigned, ctx: Context) -> None:
            await self._route(event, ctx)

    @contextlib.asynccontextmanager
    async def _pbx_audio(self, runtime: AgentRuntime) -> AsyncIterator[AudioOpener]:
        async with contextlib.AsyncExitStack() as stack:
            links: dict[str, tuple[httpx.AsyncClient, BrokeredTokens]] = {}
            for pbx in self.pbxs:
                verify: bool | str = str(pbx.ca_file) if pbx.ca_file else pbx.verify_tls
                http = await stack.enter_async_context(
                    httpx.AsyncClient(base_url=pbx.base_url, verify=verify, timeout=10.0)
                )
                links[pbx.id] = (http, BrokeredTokens(runtime.nc, pbx.id))

            def opener(pbx_id: str, leg: LegRef) -> AbstractAsyncContextManager[PromptOutput]:
                if pbx_id not in links:
                    raise LookupError(f"pbx {pbx_id} is not configured: the routing agent cannot play to it")
                http, tokens = links[pbx_id]
                stream = ParticipantStream(
                    http,
                    tokens,
                    dn=leg.dn,
                    participant_id=leg.participant_id,
                    connect_timeout_s=self.config.audio_connect_s,
                )
                return stream.session()

            yield opener

    # ------------------------------------------------------------------ deciding

    async def _known(self, event: ev.EventBase, ctx: Context) -> CallFacts | None:
        """The call's facts, or None when it has ended. An assignment can reach this agent after the call's
        ``call.ended`` (a coordinator catching up after a restart assigns calls that ended while it was away):
        facts made for such a call would never be dropped, so for a call this agent holds nothing about, the
        event stream is asked first (two direct gets: its last ``call.created`` and ``call.ended``; an end
        stored after the creation means the call is over, which also holds if the PBX reuses a call id).
        """
        key = (event.pbx_id, _call(event))
        facts = self.calls.get(key)
        if facts is not None:
            return await self._filled(facts, ctx)
        created, ended = await self._stored(ctx, ev.CallCreated), await self._stored(ctx, ev.CallEnded)
        if ended is not None and (created is None or ended[0] > created[0]):
            return None
        facts = self.facts(*key)  # assigned before this replica saw the call (a restart): fill in what it missed
        if created is not None:
            _apply(facts, created[1])
        return facts

    async def _filled(self, facts: CallFacts, ctx: Context) -> CallFacts:
        """``facts`` with the caller and DID read back from the call's ``call.created`` if this replica missed it."""
        if not facts.caller and not facts.did and (created := await self._stored(ctx, ev.CallCreated)) is not None:
            _apply(facts, created[1])
        return facts

    async def _stored(self, ctx: Context, event_type: type[E]) -> tuple[int, E] | None:
        """The call's last ``event_type`` event in the event stream, with its stream sequence (a direct get by
        subject); None when there is none or the stream cannot say (decide with what is known)."""
        subject = subjects.event_filter(pbx_id=ctx.pbx_id, event_type=event_type, key=ctx.call_id)
        if self.runtime is None:
            return None
        try:
            msg = await self.runtime.nc.jetstream().get_last_msg(subjects.EVENTS_STREAM, subject)
            found = parse_event(msg.data or b"")
        except NotFoundError:
            return None
        except Exception as exc:  # undecodable, or the stream is away
            log.warning("call facts unavailable", call_id=ctx.call_id, event_type=event_type.type_name(),
                        error=type(exc).__name__)  # fmt: skip
            return None
        return (msg.seq or 0, found) if isinstance(found, event_type) else None

    async def _route(self, event: ev.AgentAssigned, ctx: Context) -> None:
        leg = event.leg or ctx.leg
        if leg is None:
            log.error("assigned a call with no leg: nothing to route", call_id=ctx.call_id)
            await ctx.release("no leg to route")
            return
        facts = await self._known(event, ctx)
        if facts is None:
            log.info("assigned a call that had already ended: nothing to route", call_id=ctx.call_id)
            await ctx.release("the call ended before it was routed")
            return
        rules = self.rules
        decision = rules.decide(CallContext(caller=facts.caller, did=facts.did, at=event.occurred_at))
        facts.decided = True
        await self._execute(ctx, rules, decision, leg, "route", facts)

    async def _announce(self, ctx: Context, decision: Decision, purpose: str, action: str | None = None) -> None:
        self.counts["decided"] += 1
        data = ev.RoutingDecidedData(
            rule=decision.rule,
            action=action or action_name(decision.action),
            destination=destination(decision.action),
            reason=decision.reason,
            dry_run=self.config.dry_run,
        )
        log.info(
            "routing decided" + (" (dry run: nothing done)" if self.config.dry_run else ""),
            call_id=ctx.call_id,
            rule=data.rule,
            action=data.action,
            destination=data.destination,
            reason=data.reason,
        )
        await ctx.publish(ev.RoutingDecided, data, purpose=f"decided:{purpose}")

    # ------------------------------------------------------------------ acting

    async def _execute(
        self, ctx: Context, rules: RoutingRules, decision: Decision, leg: LegRef, purpose: str, facts: CallFacts
    ) -> None:
        """``facts`` are the call's, held here rather than looked up again: a lookup after the call ended would
        make new ones that nothing drops."""
        action = decision.action
        if isinstance(action, PlayMenu):
            await self._announce(ctx, decision, purpose)
            self.counts["menus"] += 1
            ctx.spawn(self._menu(ctx, rules, action.name, leg, purpose, facts), name=f"routing-menu-{ctx.call_id}")
            return
        await self._announce(ctx, decision, purpose)
        if isinstance(action, Reject):
            result = await ctx.send(c.Drop, leg=leg, purpose=f"{purpose}:drop")
            await self._done(ctx, result, "rejected (blocked caller)")
            return
        result = await self._move(ctx, action, leg, purpose, facts)
        if not result.ok:
            await self._fallback(ctx, rules, leg, purpose, action.to, _why(result))
        elif action.overflow is not None:
            overflow = self._overflow(ctx, action, leg, decision, purpose, facts)
            ctx.spawn(overflow, name=f"routing-overflow-{ctx.call_id}")
        else:
            await ctx.release(f"routed to {action.to}")

    async def _move(self, ctx: Context, route: Route, leg: LegRef, purpose: str, facts: CallFacts) -> c.CommandResult:
        """transfer for a Connected leg; route_to when the leg rings, its state is unknown, or an overflow may follow
        (the leg must stay until the destination answers)."""
        status = facts.status.get(leg.key)
        if status == LegStatus.CONNECTED and route.overflow is None:
            return await ctx.send(c.Transfer, args=c.TransferArgs(to=route.to), leg=leg, purpose=f"{purpose}:transfer")
        return await ctx.send(c.RouteTo, args=c.DestinationArgs(to=route.to), leg=leg, purpose=f"{purpose}:route_to")

    async def _done(self, ctx: Context, result: c.CommandResult, what: str) -> None:
        if not result.ok:
            self.counts["failed"] += 1
            log.error("routing command failed", call_id=ctx.call_id, what=what, error=_why(result))
        await ctx.release(what if result.ok else f"{what} failed: {_why(result)}")

    async def _fallback(
        self, ctx: Context, rules: RoutingRules, leg: LegRef, purpose: str, failed: str | None, why: str
    ) -> None:
        target = rules.fallback or self.config.safe_routes.get(ctx.pbx_id)
        if target is None or target == failed:
            self.counts["failed"] += 1
            log.error("routing failed and there is no other route", call_id=ctx.call_id, error=why)
            await ctx.release(f"routing failed: {why}")
            return
        self.counts["fallbacks"] += 1
        decision = Decision("fallback", Route("transfer", target), f"routing to {failed or 'the menu'} failed: {why}")
        await self._announce(ctx, decision, f"{purpose}:fallback", action="fallback")
        moved = await ctx.send(c.RouteTo, args=c.DestinationArgs(to=target), leg=leg, purpose=f"{purpose}:fallback")
        await self._done(ctx, moved, f"fallback to {target}")

    async def _overflow(
        self, ctx: Context, route: Route, leg: LegRef, decision: Decision, purpose: str, facts: CallFacts
    ) -> None:
        """Wait for the destination to answer; after ``after_s`` route the call to the overflow number."""
        assert route.overflow is not None
        facts.routed, facts.routed_leg = route, leg
        try:
            await asyncio.wait_for(facts.delivered.wait(), route.after_s)
        except TimeoutError:
            self.counts["overflows"] += 1
            spilled = Decision(
                decision.rule,
                Route("queue", route.overflow),
                f"{route.to} did not answer within {route.after_s:g}s",
            )
            await self._announce(ctx, spilled, f"{purpose}:overflow", action="overflow")
            args = c.DestinationArgs(to=route.overflow)
            result = await ctx.send(c.RouteTo, args=args, leg=leg, purpose=f"{purpose}:overflow")
            await self._done(ctx, result, f"overflow to {route.overflow}")
        else:
            await ctx.release(f"delivered to {route.to}")
        finally:
            facts.routed = None

    async def _menu(
        self, ctx: Context, rules: RoutingRules, name: str, leg: LegRef, purpose: str, facts: CallFacts
    ) -> None:
        if self.audio is None:
            await self._fallback(ctx, rules, leg, purpose, None, "no audio path to play the menu (no PBX configured)")
            return
        if facts.status.get(leg.key) == LegStatus.RINGING:  # a ringing route-point leg can be answered (D§7)
            answered = await ctx.send(c.Answer, leg=leg, purpose=f"{purpose}:answer")
            if not answered.ok:
                await self._fallback(ctx, rules, leg, purpose, None, _why(answered))
                return
        result: MenuResult | None = None
        depth = 0
        async with self.audio(ctx.pbx_id, leg) as out:
            while True:
                result = await run_menu(rules.menus[name], out, facts.digits)
                if not isinstance(result.action, PlayMenu) or depth + 1 >= MAX_MENU_DEPTH:
                    break
                depth += 1
                name = result.action.name
                await self._announce(ctx, Decision(f"menu {name}", result.action, result.reason), f"{purpose}:{depth}")
            left = out.ended.is_set()
        step = f"{purpose}:menu{depth}"
        if result.action is None or isinstance(result.action, PlayMenu):
            if left:
                await ctx.release("the caller left during the menu")
            else:
                await self._fallback(ctx, rules, leg, step, None, result.reason)
            return
        await self._execute(ctx, rules, Decision(f"menu {name}", result.action, result.reason), leg, step, facts)

    # ------------------------------------------------------------------ dry run

    async def _dry_run(self, event: ev.CallRinging | ev.CallAnswered, ctx: Context, facts: CallFacts) -> None:
        route_point = self.config.route_points.get(event.pbx_id)
        if facts.decided or event.leg is None or (route_point is not None and event.leg.dn != route_point):
            return
        inbound = facts.direction is Direction.INBOUND or (
            facts.direction is Direction.UNKNOWN and event.data.participant.party_dn_type == "Wexternalline"
        )
        if not inbound:
            return
        facts.decided = True
        await self._filled(facts, ctx)
        decision = self.rules.decide(CallContext(caller=facts.caller, did=facts.did, at=event.occurred_at))
        if isinstance(decision.action, PlayMenu):
            facts.menu = decision.action.name
        await self._announce(ctx, decision, "route")

    async def _dry_run_keys(self, event: ev.DtmfReceived, ctx: Context, facts: CallFacts) -> None:
        menus = self.rules.menus
        for digit in event.data.digits:
            if facts.menu is None or facts.menu not in menus:
                return
            menu = menus[facts.menu]
            action = menu.options.get(digit)
            if action is None:
                log.info("dry run: a key that is not an option", call_id=ctx.call_id, menu=menu.name, key=digit)
                continue
            facts.menu = action.name if isinstance(action, PlayMenu) else None
            decision = Decision(f"menu {menu.name}", action, f"key {digit} in menu {menu.name}")
            await self._announce(ctx, decision, f"key:{event.event_id}:{digit}")


def _answered_at(event: ev.CallAnswered, routed: Route | None) -> bool:
    return routed is not None and event.leg is not None and event.leg.dn == routed.to


def _apply(facts: CallFacts, created: ev.CallCreated) -> None:
    data = created.data
    facts.caller, facts.direction, facts.did = data.from_number, data.direction, data.did or data.to_number


def _call(event: ev.EventBase) -> str:
    assert event.call_id is not None, f"{event.type_name()} without a call id"
    return event.call_id


def _why(result: c.CommandResult) -> str:
    return f"{result.error.code}: {result.error.message}" if result.error is not None else "unknown"
