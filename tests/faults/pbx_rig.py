"""The PBX fault rig: ingest (and the worker) against the simulator while its faults fire, checked against the
simulator's ground truth (D§4) and timed (D§11: recovery = fault injected -> next event committed).

Built on the ingest rig (``tests.ingest.conftest``) and the worker rig (``tests.agents.support``); this module adds
what every PBX fault test needs on top: the ground-truth check, the executed-once check on the request journal, the
recovery clock, a live rig driven from another thread (for hypothesis, whose examples are synchronous) and the
figures kept for docs/faults.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hub.config import IngestConfig
from hub.simulator import SimConfig, SimHandle
from hub.simulator.projection import Item, Outage, diff, observed, project
from schemas.events import Event
from tests.helpers import eventually
from tests.ingest.conftest import IngestRig, ingest_rig

T = TypeVar("T")

FIGURES: dict[str, list[float]] = {}
"""Recovery times in seconds, by fault, for this test session (printed by each test; the numbers in docs/faults.md)."""


@dataclass
class Recovery:
    """Recovery times of one fault kind: injection -> the first event committed that the hub made after it."""

    fault: str
    seconds: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.seconds.append(seconds)
        FIGURES.setdefault(self.fault, []).append(seconds)

    def summary(self) -> str:
        if not self.seconds:
            return f"{self.fault}: no recovery measured"
        ordered = sorted(self.seconds)
        p50 = statistics.median(ordered)
        return (f"{self.fault}: n={len(ordered)} recovery p50={p50 * 1000:.0f} ms "
                f"max={ordered[-1] * 1000:.0f} ms")  # fmt: skip

    def report(self) -> None:
        print(f"\n[recovery] {self.summary()}")


async def recovered(rig: IngestRig, since: int, injected: float, what: str, timeout: float = 15.0) -> float:
    """Seconds from ``injected`` (time.perf_counter()) until the stream holds a new event made after the fault: one
    beyond the ``since`` events it held at injection."""
    await eventually(lambda: len(rig.stream.events) > since, timeout=timeout, interval=0.005, what=what)
    return time.perf_counter() - injected


def ground_truth(rig: IngestRig, *, with_history: bool = True) -> Counter[Item]:
    return project(rig.sim.journal.entries, rig.sim.config.visible, outages=rig.outages,
                   end_grace_s=rig.adapter.config.call_end_grace_s, with_history=with_history)  # fmt: skip


def check_ground_truth(rig: IngestRig, *, with_history: bool = True, ignore_inferred: bool = False) -> Counter[Item]:
    """Every transition once (the projection diff is empty) and every event id once; returns what was observed.

    ``ignore_inferred``: compare without the inferred flag (a REST storm delays reads, so what the projection calls
    an outage's net difference comes from reads that finished late: the same transitions, not marked inferred)."""
    events = rig.stream.events
    assert len({ev.event_id for ev in events}) == len(events), "an event id appears twice"
    expected, actual = _compared(rig, with_history, ignore_inferred)
    problems = diff(expected, actual)
    assert not problems, problems
    return actual


def _compared(rig: IngestRig, with_history: bool, ignore_inferred: bool) -> tuple[Counter[Item], Counter[Item]]:
    expected, actual = ground_truth(rig, with_history=with_history), observed(rig.stream.events)
    return (_flat(expected), _flat(actual)) if ignore_inferred else (expected, actual)


async def matches_ground_truth(
    rig: IngestRig, *, with_history: bool = True, ignore_inferred: bool = False, timeout: float = 15.0
) -> Counter[Item]:
    """:func:`check_ground_truth` once the stream matches, or after ``timeout`` (call-history reconciliation
    finishes in the background: a bounded wait, then the diff says what is missing)."""
    with contextlib.suppress(AssertionError):
        await eventually(lambda: not diff(*_compared(rig, with_history, ignore_inferred)), timeout=timeout,
                         interval=0.05, what="the stream to match the ground truth")  # fmt: skip
    return check_ground_truth(rig, with_history=with_history, ignore_inferred=ignore_inferred)


def _flat(items: Counter[Item]) -> Counter[Item]:
    out: Counter[Item] = Counter()
    for item, n in items.items():
        out[(*item[:-1], False)] += n  # the same item with the flag dropped
    return out


def call_events(events: list[Event]) -> list[Event]:
    return [ev for ev in events if ev.type.startswith("call.")]


def requests(sim: SimHandle, suffix: str) -> list[Any]:
    """Every REST request whose path ends with ``suffix``, refused ones included (``detail["fault"]``)."""
    return [e for e in sim.journal.of("request") if str(e.detail["path"]).endswith(suffix)]


def executed(sim: SimHandle, suffix: str) -> list[Any]:
    """The requests the PBX carried out (answered below 300, not a fault's answer)."""
    return [e for e in requests(sim, suffix) if int(e.detail["status"]) < 300 and not e.detail.get("fault")]


async def drop_and_resync(rig: IngestRig, recovery: Recovery) -> None:
    """Drop the websocket, wait for the re-read, record the outage and the recovery time (drop -> link.resynced
    committed)."""
    resynced = len(rig.stream.of("link.resynced"))
    injected = time.perf_counter()
    start = await rig.drop_link()
    await eventually(lambda: len(rig.stream.of("link.resynced")) > resynced, timeout=15, interval=0.005,
                     what="the re-read after a drop")  # fmt: skip
    recovery.add(time.perf_counter() - injected)
    rig.outages.append(Outage(start, rig.resync_index(start)))


# --------------------------------------------------------------------------- a live rig for synchronous callers


@dataclass
class ThreadedRig:
    """An ingest rig whose event loop runs in its own thread; ``run`` awaits a coroutine there."""

    rig: IngestRig
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextlib.contextmanager
def threaded_ingest_rig(
    nats_url: str, sim_config: SimConfig | None = None, config: IngestConfig | None = None
) -> Iterator[ThreadedRig]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="ingest-rig", daemon=True)
    thread.start()
    manager = ingest_rig(nats_url, sim_config, config)

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    try:
        rig = run(manager.__aenter__())
        try:
            yield ThreadedRig(rig, loop)
        finally:
            run(manager.__aexit__(None, None, None))
    finally:
        run(_cancel_the_rest())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _cancel_the_rest() -> None:
    """Whatever the rig's clients left running ends here, not in the garbage collector after the loop closed."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


def on_loop(threaded: ThreadedRig, fn: Callable[[], T]) -> T:
    """Call ``fn`` on the rig's loop (the simulator's engine is not thread-safe)."""

    async def call() -> T:
        return fn()

    return threaded.run(call())
