"""Declaring an agent: its name, what it can do, and which events it handles (typed filters, no subject strings).

    agent = Agent("greeter", capabilities=["answer"])

    @agent.on(CallAnswered, owned=True)         # only calls this agent owns
    async def answered(event: CallAnswered, ctx: Context) -> None: ...

    @agent.on_assigned                           # the coordinator assigned a call to us; the SDK claimed it
    async def assigned(event: AgentAssigned, ctx: Context) -> None: ...

    @agent.on_batch(CallEnded)                   # an observer's writes, several events to a transaction
    async def record(batch: Batch) -> None: ...

An agent is only a declaration: :class:`hub.sdk.runtime.AgentRuntime` runs it (``masterlinc agent run NAME``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from hub.sdk.filters import EventFilter
from schemas.events import AgentAssigned, AgentHandedOff, CallEnded, EventBase
from schemas.tokens import check_token

if TYPE_CHECKING:
    from hub.sdk.batch import Batch
    from hub.sdk.context import Context
    from hub.sdk.runtime import AgentRuntime

Handler = Callable[[Any, "Context"], Awaitable[None]]
BatchHandler = Callable[["Batch"], Awaitable[None]]
Lifespan = Callable[["AgentRuntime"], AbstractAsyncContextManager[None]]
H = TypeVar("H", bound=Handler)
B = TypeVar("B", bound=BatchHandler)
L = TypeVar("L", bound=Lifespan)

COORDINATOR = "coordinator"
"""The coordinator's agent name; its commands (``agent:coordinator``) may act on any leased call."""

INTERNAL_FILTERS = (EventFilter(AgentAssigned), EventFilter(AgentHandedOff), EventFilter(CallEnded))
"""What every agent's runtime reads for itself: assignments and handoffs naming it, and call ends (auto-release)."""


def issuer(agent: str) -> str:
    """The ``issued_by`` of an agent's commands and events (the worker compares it with the lease owner)."""
    return f"agent:{agent}"


@dataclass(frozen=True)
class Subscription:
    filters: tuple[EventFilter, ...]
    handler: Handler
    owned: bool

    def wants(self, event: EventBase) -> bool:
        return any(f.matches(event) for f in self.filters)


@dataclass(frozen=True)
class BatchSubscription:
    filters: tuple[EventFilter, ...]
    handler: BatchHandler

    def wants(self, event: EventBase) -> bool:
        return any(f.matches(event) for f in self.filters)


class Agent:
    """An agent's declaration.

    ``database``: the agent's own tables (a SQLAlchemy MetaData, created when missing); giving it enables
    ``ctx.transaction()``, whose writes commit together with the agent's position (redelivery-safe).
    ``claim_assigned``: claim calls the coordinator assigns to this agent before calling ``on_assigned`` handlers.
    ``lease_s``: how long a claim lasts unless renewed (the runtime renews every third of it); default from settings.
    ``lifespan``: what the agent holds for the whole run (HTTP clients, loaded models): called with the runtime and
    entered before the first event, left after the last handler and spawned task finished (``@agent.lifespan``
    registers more).
    """

    def __init__(
        self,
        name: str,
        *,
        capabilities: Sequence[str] = (),
        version: str = "",
        description: str = "",
        database: sa.MetaData | None = None,
        claim_assigned: bool = True,
        lease_s: float | None = None,
        lifespan: Lifespan | None = None,
        _internal: bool = False,
    ) -> None:
        check_token(name, "agent name")
        if name == COORDINATOR and not _internal:
            raise ValueError(f"the agent name {COORDINATOR!r} is reserved for the coordinator; choose another")
        if lease_s is not None and lease_s <= 0:
            raise ValueError(f"lease_s must be positive, not {lease_s}")
        self.name = name
        self.capabilities = tuple(capabilities)
        self.version = version
        self.description = description
        self.database = database
        self.claim_assigned = claim_assigned
        self.lease_s = lease_s
        self.subscriptions: list[Subscription] = []
        self.batch: BatchSubscription | None = None
        self.assigned_handlers: list[Handler] = []
        self.handoff_handlers: list[Handler] = []
        self.lifespans: list[Lifespan] = [lifespan] if lifespan is not None else []

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, handlers={len(self.subscriptions)})"

    def on(
        self,
        *event_types: type[EventBase],
        domain: str | None = None,
        pbx: str | None = None,
        owned: bool = False,
    ) -> Callable[[H], H]:
        """Handle events of these classes (or of a whole ``domain``, or everything when neither is given), from one
        PBX if ``pbx`` is set; with ``owned=True`` only for calls this agent holds the lease on."""
        if event_types and domain is not None:
            raise ValueError("give event classes or a domain, not both")
        filters = tuple(EventFilter(t, pbx_id=pbx) for t in event_types) or (EventFilter(domain=domain, pbx_id=pbx),)

        def register(handler: H) -> H:
            self.subscriptions.append(Subscription(filters, handler, owned))
            return handler

        return register

    def on_batch(self, *event_types: type[EventBase], pbx: str | None = None) -> Callable[[B], B]:
        """Handle events of these classes several at a time, in order, with one transaction for all of them
        (:mod:`hub.sdk.batch`): for an agent that only writes what it reads (no commands, no calls of its own).
        Needs ``database``; one batch handler per agent."""
        if not event_types:
            raise ValueError("on_batch needs the event classes it takes")
        if self.database is None:
            raise ValueError(
                f"agent {self.name}: a batch handler commits its events' positions with its writes; "
                "declare Agent(..., database=MetaData())"
            )
        if self.batch is not None:
            raise ValueError(f"agent {self.name} already has a batch handler; put the event classes in one on_batch")
        filters = tuple(EventFilter(t, pbx_id=pbx) for t in event_types)

        def register(handler: B) -> B:
            self.batch = BatchSubscription(filters, handler)
            return handler

        return register

    def on_assigned(self, handler: H) -> H:
        """Called with the ``agent.assigned`` event when the coordinator assigns a call to this agent and the claim
        succeeded (with ``claim_assigned=False``: without claiming, for the handler to decide)."""
        self.assigned_handlers.append(handler)
        return handler

    def on_handoff(self, handler: H) -> H:
        """Called with the ``agent.handed_off`` event when another agent hands a call to this one (the lease is
        already this agent's); ``event.data.summary`` and ``event.data.context`` carry what the other agent knew."""
        self.handoff_handlers.append(handler)
        return handler

    def lifespan(self, factory: L) -> L:
        """Register an async context manager factory, entered with the runtime before the first event is handled
        and left after the last: the place for the agent's own resources (an HTTP client) and background work
        (an outbox sender, a file watch), owned by the replica and cancelled when it stops."""
        self.lifespans.append(factory)
        return factory

    def filters(self) -> list[EventFilter]:
        batch = list(self.batch.filters) if self.batch is not None else []
        return [f for s in self.subscriptions for f in s.filters] + batch + list(INTERNAL_FILTERS)

    def handlers_for(self, event: EventBase, owns: bool) -> list[Handler]:
        return [s.handler for s in self.subscriptions if s.wants(event) and (owns or not s.owned)]
