"""What a handler gets besides the event: the call's ownership, commands, events and the database, all keyed to the
event being handled, so a redelivery or a replay of that event repeats nothing.

- Commands get ids derived from the event id (``derived_command_id``): the worker answers a repeat with the stored
  result (``duplicate``) instead of calling the PBX twice; JetStream drops a re-send inside its duplicate window.
- Events get ids derived the same way (JetStream dedup, the log's unique key).
- ``transaction()`` commits the agent's writes with its position (:mod:`hub.sdk.tracking`). Send commands first
  and commit last: after a crash before the commit everything runs again harmlessly; after it, the event is skipped.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.sdk.agent import issuer
from schemas import commands as c
from schemas import events as ev
from schemas.common import LegRef, LegStatus, utcnow
from schemas.identity import derived_command_id, derived_event_id

if TYPE_CHECKING:
    from hub.sdk.runtime import AgentRuntime

E = TypeVar("E", bound=ev.EventBase)


class NotOwnerError(RuntimeError):
    """The agent tried something only a call's owner may do (release, hand off) without holding its lease."""


class Context:
    """One event's handling context. Created by the runtime; handlers only use it."""

    def __init__(self, runtime: AgentRuntime, event: ev.EventBase, *, replay: bool, position: int | None) -> None:
        self._runtime = runtime
        self.event = event
        self.replay = replay
        """True for a replayed copy (``Ml-Replay``); only delivered to agents run with ``--backfill``."""
        self.position = position
        """The event's ML_EVENTS stream sequence (global order), when known."""
        self._sent = 0
        self._in_transaction = False

    # ------------------------------------------------------------------ what the event is about

    @property
    def agent(self) -> str:
        return self._runtime.agent.name

    @property
    def pbx_id(self) -> str:
        return self.event.pbx_id

    @property
    def call_id(self) -> str | None:
        return self.event.call_id

    @property
    def leg(self) -> LegRef | None:
        """The event's leg, else the leg recorded in this agent's lease on the call."""
        if self.event.leg is not None:
            return self.event.leg
        if self.call_id is None:
            return None
        return self._runtime.leases.leg(self.pbx_id, self.call_id)

    @property
    def owns(self) -> bool:
        """True while this agent holds the lease on the event's call."""
        return self.call_id is not None and self._runtime.leases.owns(self.pbx_id, self.call_id)

    def _call(self) -> str:
        if self.call_id is None:
            raise ValueError(f"{self.event.type_name()} is not about a call: there is nothing to claim or hand off")
        return self.call_id

    # ------------------------------------------------------------------ ownership

    async def claim(self, *, lease_s: float | None = None, leg: LegRef | None = None) -> bool:
        """Take the call under a lease (atomic: of several claimants exactly one wins). True when this agent owns it,
        also when it already did. The runtime renews the lease until released, handed off or the call ends."""
        return await self._runtime.leases.claim(
            self.pbx_id, self._call(), leg=leg or self.leg, lease_s=lease_s, trigger=self.event.event_id
        )

    async def release(self, reason: str = "") -> bool:
        """Give the call up (``agent.released``). False when this agent did not own it."""
        return await self._runtime.leases.release(self.pbx_id, self._call(), reason=reason, trigger=self.event.event_id)

    async def handoff(
        self,
        *,
        to_agent: str | None = None,
        to_extension: str | None = None,
        summary: str = "",
        context: Mapping[str, Any] | None = None,
        via: Literal["transfer", "route_to"] | None = None,
        purpose: str = "handoff",
    ) -> c.CommandResult | None:
        """Hand the call, with what this agent knows, to another agent or to a person.

        To an agent: the lease moves to it atomically, then ``agent.handed_off`` (summary, context) is published;
        the other agent's ``on_handoff`` handlers receive it. Returns None.
        To an extension: ``agent.handed_off`` first, then a warm transfer (D§7: the summary is attached to the call,
        then ``transferto``; a ringing leg is routed with ``routeto`` instead), then the lease is released. Returns the
        command's result (on failure the lease is kept).
        ``purpose`` names this handoff among the event's effects (a second attempt after a failed one, from a task
        spawned by the same event, needs its own, or it gets the first attempt's stored result).
        """
        if (to_agent is None) == (to_extension is None):
            raise ValueError("hand off to exactly one of to_agent or to_extension")
        call_id = self._call()
        keeper = self._runtime.leases
        if not keeper.owns(self.pbx_id, call_id):
            raise NotOwnerError(f"agent {self.agent} does not own call {call_id}: claim it before handing it off")
        data = ev.HandoffData(
            from_agent=self.agent,
            to_agent=to_agent,
            to_extension=to_extension,
            summary=summary,
            context=dict(context or {}),
        )
        if to_agent is not None:
            await keeper.hand_over(self.pbx_id, call_id, to_agent)
            await self.publish(ev.AgentHandedOff, data, purpose=purpose)
            return None
        assert to_extension is not None
        await self.publish(ev.AgentHandedOff, data, purpose=purpose)
        ringing = _status(self.event) == LegStatus.RINGING
        if (via or ("route_to" if ringing else "transfer")) == "route_to":
            result = await self.send(c.RouteTo, args=c.DestinationArgs(to=to_extension), purpose=purpose)
        else:
            args = c.TransferArgs(to=to_extension, summary=summary or None)
            result = await self.send(c.Transfer, args=args, purpose=purpose)
        if result.ok:
            await keeper.release(self.pbx_id, call_id, reason=f"handed off to {to_extension}", publish=False)
        return result

    # ------------------------------------------------------------------ commands, queries, events

    async def send(
        self,
        command_type: type[c.CommandBase],
        *,
        args: BaseModel | Mapping[str, Any] | None = None,
        leg: LegRef | None = None,
        call_id: str | None = None,
        purpose: str | None = None,
        deadline_s: float | None = None,
        wait: float | None = None,
    ) -> c.CommandResult:
        """Send a command about this event's call (or, for make_call and other leg-less commands, none) and await
        its result. ``purpose`` names the command among this handler's commands (default: its type and position),
        so the same event always yields the same command id."""
        index = self._sent
        self._sent += 1
        label = purpose or f"{command_type.NAME}.{index}"
        fields: dict[str, Any] = {
            "command_id": derived_command_id(self.event.event_id, f"{self.agent}:{label}"),
            "pbx_id": self.pbx_id,
            "issued_by": issuer(self.agent),
        }
        if command_type.TARGETS_LEG:
            fields["call_id"] = call_id or self.call_id
            fields["leg"] = leg or self.leg
        if args is not None:
            fields["args"] = args
        if deadline_s is not None:
            fields["deadline"] = utcnow() + timedelta(seconds=deadline_s)
        command = command_type.model_validate(fields)
        return await self._runtime.client.send(command, wait=wait)

    async def query(
        self, query_type: type[c.QueryBase], *, args: BaseModel | Mapping[str, Any] | None = None, wait: float = 5.0
    ) -> c.QueryResult:
        fields: dict[str, Any] = {"pbx_id": self.pbx_id, "issued_by": issuer(self.agent)}
        if args is not None:
            fields["args"] = args
        return await self._runtime.client.query(query_type.model_validate(fields), wait=wait)

    async def publish(self, event_type: type[E], data: BaseModel | Mapping[str, Any], *, purpose: str = "") -> E:
        """Publish an event about this event's call, with an id derived from it (a repeat is dropped as a duplicate)."""
        event = event_type.model_validate(
            {
                "event_id": derived_event_id(self.event.event_id, f"{self.agent}:{purpose or event_type.type_name()}"),
                "pbx_id": self.pbx_id,
                "call_id": self.call_id,
                "leg": self.leg,
                "occurred_at": utcnow(),
                "issued_by": issuer(self.agent),
                "data": data,
            }
        )
        await self._runtime.publisher.publish(event)
        return event

    def spawn(self, work: Coroutine[Any, Any, None], name: str = "") -> None:
        """Run long work (a conversation, a wait) beside the handlers, so this call's partition moves on. The task is
        cancelled when the call ends or the replica stops. Commands it sends through this context need distinct
        ``purpose`` values (their ids derive from this event)."""
        self._runtime.spawn(self.pbx_id, self.call_id, work, name)

    # ------------------------------------------------------------------ database

    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """One transaction for this event's database effects, committed with the agent's position. If an earlier
        delivery already committed, the block is skipped (:class:`hub.sdk.tracking.AlreadyHandled`, which the
        runtime treats as done). One per event; send commands before it."""
        tracker = self._runtime.tracker
        if tracker is None:
            raise RuntimeError(
                f"agent {self.agent} has no database: declare Agent(..., database=MetaData()) to use ctx.transaction()"
            )
        if self._in_transaction:
            raise RuntimeError("one transaction per event: put all of this event's database effects in one block")
        self._in_transaction = True
        return tracker.transaction(self.event, self.position)


def _status(event: ev.EventBase) -> str | None:
    data = getattr(event, "data", None)
    participant = getattr(data, "participant", None)
    status = getattr(participant, "status", None)
    return status if isinstance(status, str) else None
