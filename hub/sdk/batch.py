"""Batch handlers: events of different partitions handled together, in one transaction (a group commit).

    @agent.on_batch(CallRinging, CallEnded)      # an observer: it sends no commands and owns no calls
    async def record(batch: Batch) -> None:
        async with batch.transaction() as tx:    # tx.events: those of the batch not handled before
            await write_all(tx.conn, tx.events)

Why: an agent that only writes what it reads pays a transaction per event with ``on`` (begin, tracking row, its
reads and writes, commit), and one replica has an event in flight in each partition it owns. :class:`GroupCommit`
gathers the events its partitions' consumers hand over while the previous group commits, and the batch handler
writes them all in one transaction. Each partition still has one event in flight (the feed's consumers allow no
more), so the events of a group are of different calls, and each call's order holds whichever replica pulls it.
Under load a group holds about one event per busy partition; at a trickle, one event, with no wait for company.

A group that fails fails each of its events, and each partition's consumer retries its own alone (as a redelivery:
the tracking row is checked first), with its retries and dead letter: one bad event cannot hold the others back. An
event that needs the runtime's own per-event work (an assignment or handoff naming the agent, the end of a call it
owns, an ``on`` handler that wants it) is handled on its own, in its place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager

from hub.sdk.tracking import Tracked, Tracker
from schemas.events import EventBase

HandleGroup = Callable[[list[EventBase], list[int | None]], Awaitable[None]]


class Batch:
    """Events for a batch handler, each the only one of its partition in the batch (created by the runtime)."""

    def __init__(self, tracker: Tracker, events: Sequence[EventBase], positions: Sequence[int | None]) -> None:
        self._tracker = tracker
        self.events = events
        """Every event of the batch (some may have been handled by an earlier delivery: see ``transaction``)."""
        self.positions = positions
        self._opened = False

    def __len__(self) -> int:
        return len(self.events)

    def transaction(self) -> AbstractAsyncContextManager[Tracked]:
        """One transaction for the batch's writes, committed with every event's tracking row. ``Tracked.events``
        leaves out events already handled; when that is all of them, :class:`AlreadyHandled` skips the block."""
        if self._opened:
            raise RuntimeError("one transaction per batch: put all of the batch's database effects in one block")
        self._opened = True
        return self._tracker.transaction_many(self.events, self.positions)


class GroupFailed(Exception):
    """The group this event was committed with failed; the event's consumer retries it alone."""


class GroupCommit:
    """One group at a time: what is submitted while a group commits forms the next (up to ``max_events``)."""

    def __init__(self, handle: HandleGroup, *, max_events: int = 64) -> None:
        self._handle = handle
        self._max = max_events
        self._waiting: list[tuple[EventBase, int | None, asyncio.Future[None]]] = []
        self._runner: asyncio.Task[None] | None = None
        self.groups = 0
        self.events = 0

    @property
    def waiting(self) -> int:
        """Events submitted for the next group."""
        return len(self._waiting)

    async def submit(self, event: EventBase, position: int | None) -> None:
        """Return once ``event`` committed with its group; raise :class:`GroupFailed` when the group failed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, position, done))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="group-commit")
        await done

    async def _run(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[: self._max], self._waiting[self._max :]
            try:
                await self._handle([e for e, _, _ in group], [p for _, p, _ in group])
            except asyncio.CancelledError:
                for _, _, done in group:
                    done.cancel()
                raise
            except Exception as exc:
                reason = f"its group of {len(group)} failed: {type(exc).__name__}: {exc}"
                for _, _, done in group:
                    if not done.done():
                        done.set_exception(GroupFailed(reason))
                continue
            self.groups += 1
            self.events += len(group)
            for _, _, done in group:
                if not done.done():
                    done.set_result(None)

    async def close(self) -> None:
        """Cancel the group being committed (its events are redelivered: nothing committed is lost)."""
        for _, _, done in self._waiting:
            done.cancel()
        self._waiting.clear()
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
