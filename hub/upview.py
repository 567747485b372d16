"""The live terminal view of ``masterlinc up``: services, active calls, agents, event rate and recorder lag.

Fed from the bus like any consumer (events on core NATS, the agent registry in KV, the recorder's consumer info),
so it shows what the hub really does. On a terminal it redraws with rich's ``Live``; elsewhere ``up`` prints a
status line now and then instead.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from rich.console import Group
from rich.table import Table

from hub.mcp.live import CallView
from hub.sdk.registry import RegistryView
from schemas import subjects


@dataclass
class HubStats:
    events: int = 0
    calls_ended: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=50_000))
    recorder_pending: int | None = None
    recorder_acked: int = 0

    def rate(self, window_s: float = 5.0) -> float:
        now = time.monotonic()
        while self.recent and now - self.recent[0] > window_s:
            self.recent.popleft()
        return len(self.recent) / window_s


class Watch:
    """What the view shows, kept current from the bus."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.calls = CallView()
        self.stats = HubStats()
        self.registry: RegistryView | None = None
        self._sub: Subscription | None = None
        self._ended: OrderedDict[str, None] = OrderedDict()

    def _first_end(self, subject: str) -> bool:
        """A core subscription also sees a publish JetStream dropped as a duplicate (a retried publish): count each
        call's end once (remembering the last 10,000 calls)."""
        if subject in self._ended:
            return False
        self._ended[subject] = None
        if len(self._ended) > 10_000:
            self._ended.popitem(last=False)
        return True

    async def start(self, registry: RegistryView | None) -> Watch:
        self.registry = registry

        async def on_event(msg: Msg) -> None:
            self.stats.events += 1
            self.stats.recent.append(time.monotonic())
            if msg.subject.endswith(".ended") and ".call." in msg.subject and self._first_end(msg.subject):
                self.stats.calls_ended += 1
            self.calls.apply(msg.data)

        self._sub = await self.nc.subscribe(subjects.EVENTS_ALL, cb=on_event)
        return self

    async def refresh(self, durable: str) -> None:
        try:
            info = await self.nc.jetstream().consumer_info(subjects.EVENTS_STREAM, durable)
        except Exception:  # the recorder has not created its consumer yet, or the bus is briefly away
            return
        self.stats.recorder_pending = info.num_pending + (info.num_ack_pending or 0)
        self.stats.recorder_acked = info.ack_floor.stream_seq if info.ack_floor else 0

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    def render(self, services: list[tuple[str, bool, str]]) -> Group:
        svc = Table(title="services", expand=True)
        svc.add_column("service")
        svc.add_column("state")
        for name, ok, detail in services:
            svc.add_row(name, ("[green]ready[/green] " if ok else "[yellow]waiting[/yellow] ") + detail)
        calls = Table(title=f"active calls ({len(self.calls)})", expand=True)
        calls.add_column("call")
        calls.add_column("legs")
        for call_id, call in list(self.calls._calls.items())[-8:]:
            legs = ", ".join(f"{s.dn}:{s.participant_id} {s.status}" for s in call.legs.values())
            calls.add_row(call_id[-10:], legs + (f" (parked {call.parked_orbit})" if call.parked_orbit else ""))
        agents = Table(title="agents", expand=True)
        agents.add_column("agent")
        agents.add_column("replica")
        agents.add_column("load")
        if self.registry is not None:
            for record in self.registry.alive():
                agents.add_row(record.agent, record.replica[-12:], str(record.load))
        lag = "-" if self.stats.recorder_pending is None else str(self.stats.recorder_pending)
        summary = Table.grid(padding=(0, 3))
        summary.add_row(f"events/s: {self.stats.rate():.1f}", f"events seen: {self.stats.events}",
                        f"calls ended: {self.stats.calls_ended}", f"recorder lag: {lag} event(s)")  # fmt: skip
        return Group(svc, calls, agents, summary)

    def line(self) -> str:
        lag = "-" if self.stats.recorder_pending is None else self.stats.recorder_pending
        return (f"status: {len(self.calls)} active call(s), {self.stats.rate():.1f} events/s, "
                f"{self.stats.calls_ended} call(s) ended, recorder lag {lag}")  # fmt: skip
