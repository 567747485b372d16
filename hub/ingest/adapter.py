"""One PBX's adapter: leader lease, token owner, websocket, tracker, emitter, outbox and persisted state.

One task (the pipeline) owns the tracker and the emitter: frames, read results and re-reads arrive on its inbox and
are applied in order, so each call's events leave in the order they were observed. Reads run as tasks (bounded by
the tracker); the websocket runs in its own task and never waits for the pipeline.

Leadership (D§2): only the holder of the PBX's lease connects to the PBX, fetches its token (3CX keeps one active
token per client) and publishes; a standby waits for the lease to expire. At each leadership start the persisted
state is loaded and the PBX re-read, so a restart or a takeover infers what nobody observed.

Legs gone unseen: a failed read (5xx, 429) is retried after a pause (the PBX's Retry-After on a 429); a call that
began and ended while its reads failed, or whose legs went before their first read, is never seen (3CX's frames
carry no state). Once no read is owed any more, such a window is reconciled from the call history like a websocket
outage.

Outbox overflow (NATS down too long): everything not yet acknowledged is forgotten and, once the bus is back, the
persisted state is reloaded and the PBX re-read: the refused events come back as inferred events with the same ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter, Gauge

from hub.bus.kv import CALL_IDS, INGEST_STATE, LEADERS, open_bucket
from hub.config import IngestConfig, PbxConfig
from hub.ingest.calls import CallRegistry
from hub.ingest.emitter import Emitter, utc_at
from hub.ingest.hints import CommandHints
from hub.ingest.leader import LeaderLease
from hub.ingest.link import Backoff, CallControlSocket
from hub.ingest.outbox import Outbox
from hub.ingest.polling import ChatPoller, PresencePoller, Reconciler, every, merge_windows, publish_acked
from hub.ingest.tracker import Observation, Read, Tracker
from hub.ingest.wire import FrameError, LegSnapshot, parse_frame, parse_participant
from hub.logs import bind, get_logger
from hub.pbx.broker import TokenOwner
from hub.pbx.callcontrol import CallControlClient
from hub.pbx.errors import PbxError, PbxForbidden, PbxNotFound, PbxRateLimited, PbxUnavailable
from hub.pbx.http import tls_context
from hub.pbx.token import TokenProvider
from hub.pbx.xapi import Query, XapiClient
from hub.runner import Health, wait_or_stop
from schemas import events as e
from schemas.codec import DecodeError, parse_event
from schemas.identity import deterministic_event_id

log = get_logger(__name__)

MALFORMED = Counter("ml_ingest_malformed_frames_total", "Websocket frames that could not be read", ["pbx"])
FRAMES = Counter("ml_ingest_frames_total", "Websocket frames received", ["pbx"])
BACKLOG = Gauge("ml_ingest_backlog", "Frames and reads waiting in the adapter's pipeline", ["pbx"])
READS = Counter("ml_ingest_reads_total", "REST reads of participants", ["pbx", "kind"])


RECONCILE_ATTEMPTS = 8
UNSEEN_LOOKBACK_S = 60.0
RECONCILE_MERGE_S = 5.0  # windows waiting this close together are read as one
"""A reconciliation window for unseen legs starts this long before the first failed read or unseen leg (the call
began earlier; calls the hub knows are skipped by the call-id map)."""


def new_holder_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class _FrameIn:
    data: str | bytes
    at: float


@dataclass(frozen=True, slots=True)
class _ReadIn:
    read: Read
    at: float
    leg: LegSnapshot | None = None
    legs: list[LegSnapshot] = field(default_factory=list)
    error: PbxError | None = None


@dataclass(frozen=True, slots=True)
class _SnapshotIn:
    ticket: int
    dns: dict[str, list[LegSnapshot]]
    at: float
    gap_s: float | None  # None: the first connection of this leadership


@dataclass(frozen=True, slots=True)
class _LinkDown:
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class _Reload:
    """Outbox overflow recovered: reload persisted state and re-read the PBX."""


_Item = _FrameIn | _ReadIn | _SnapshotIn | _LinkDown | _Reload


@dataclass(frozen=True)
class Modes:
    """Which of the PBX's APIs this API client may use (a PBX without the Enterprise licence, or an integration
    without one of the two boxes ticked, answers 403 on the other)."""

    call_control: bool
    xapi: bool

    @property
    def name(self) -> str:
        if self.call_control and self.xapi:
            return "full"
        if self.call_control:
            return "callcontrol-only"
        return "xapi-only" if self.xapi else "none"

    @property
    def explained(self) -> str:
        return {
            "full": "Call Control and XAPI",
            "callcontrol-only": "Call Control only: XAPI is not enabled for this API client (presence, chat and "
            "call-history reconciliation are off)",
            "xapi-only": "XAPI only: Call Control is not licensed or not enabled for this API client (no live "
            "call events; calls are reported from the call history after they end)",
            "none": "neither Call Control nor XAPI answers this API client (403): enable them on the PBX "
            "(Admin > Integrations > API)",
        }[self.name]


@dataclass
class AdapterStats:
    frames: int = 0
    malformed: int = 0
    dropped_frames: int = 0  # arrived while recovering from an outbox overflow
    bad_participants: int = 0
    resyncs: int = 0
    leaderships: int = 0
    failed_leaderships: int = 0  # ended by an error, then led again
    reconciliations: int = 0  # call-history windows read


class PbxAdapter:
    def __init__(
        self,
        nc: Client,
        pbx: PbxConfig,
        rest: CallControlClient,
        tokens: TokenProvider,
        *,
        xapi: XapiClient | None = None,
        config: IngestConfig | None = None,
        holder: str | None = None,
        health: Health | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.nc = nc
        self.pbx = pbx
        self.rest = rest
        self.tokens = tokens
        self.xapi = xapi
        self.modes = Modes(call_control=True, xapi=xapi is not None)
        self.pollers: list[PresencePoller | ChatPoller] = []
        self.reconciler: Reconciler | None = None
        self.config = config or IngestConfig()
        self.holder = holder or new_holder_id()
        self.health = health or Health()
        self._clock = clock
        self.stats = AdapterStats()
        self.tracker = Tracker(
            max_inflight=self.config.max_reads_inflight,
            list_threshold=self.config.list_threshold,
            end_grace_s=self.config.call_end_grace_s,
            batch_known_s=self.config.batch_known_s,
        )
        self.leading = asyncio.Event()  # set while this process is the PBX's active adapter
        self.synced = asyncio.Event()  # set once the first re-read of a leadership was applied
        self.outbox: Outbox | None = None
        self.socket: CallControlSocket | None = None
        self.lease: LeaderLease | None = None
        self._inbox: asyncio.Queue[_Item] = asyncio.Queue()
        self._reads: set[asyncio.Task[None]] = set()
        self._windows: list[tuple[float, float]] = []  # call-history windows waiting for the reconciler
        self._reconciling: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self._takeover_since: float | None = None  # a takeover's first re-read reconciles back to here
        self._link_n = 0
        self._history_since: datetime | None = None
        self._recovering = False
        self._handling = False
        self._unseen_since: float | None = None  # the reconciliation window's start, while legs go unseen
        self._unseen = 0  # the tracker's unseen count already covered by a window
        self._parsed: dict[tuple[str, Any], tuple[dict[str, Any], LegSnapshot]] = {}
        self.registry: CallRegistry
        self.emitter: Emitter

    @property
    def idle(self) -> bool:
        """Nothing waiting in or being handled by the pipeline, and no re-read or recovery under way."""
        return not self._handling and self._inbox.empty() and not self._recovering and not self.tracker.busy

    @property
    def component(self) -> str:
        return f"pbx:{self.pbx.id}"

    # ------------------------------------------------------------------ leadership

    async def run(self, stopping: asyncio.Event) -> None:
        """Stand by until this process holds the PBX's lease, lead while it does; until ``stopping``."""
        js = self.nc.jetstream()
        leaders = await open_bucket(js, LEADERS)
        self.lease = LeaderLease(leaders, self.pbx.id, self.holder, lease_s=self.config.leader_lease_s,
                                 clock=self._clock)  # fmt: skip
        pause = Backoff(base_s=0.5, cap_s=self.config.leader_lease_s)
        while not stopping.is_set():
            try:
                acquired = await self.lease.try_acquire()
            except Exception as exc:  # the bus is down or slow: nobody can lead, try again
                log.info("leader lease unavailable", pbx=self.pbx.id, error=str(exc) or type(exc).__name__)
                acquired = False
            if acquired:
                began = time.monotonic()
                try:
                    await self._lead(stopping)
                except Exception as exc:
                    self._leadership_failed(exc)
                    if time.monotonic() - began > self.config.leader_lease_s:
                        pause.reset()  # a failure after a long leadership is not a loop
                    await wait_or_stop(stopping, pause.next())
                continue
            self.health.set(self.component, True, "standby: another ingest process is the active adapter")
            await wait_or_stop(stopping, self.config.leader_lease_s / 3)

    def _leadership_failed(self, exc: Exception) -> None:
        """A leadership ended by an error (the bus gone mid-write, a bug): say what failed and lead again. The next
        leadership loads the acknowledged state and re-reads the PBX, like a takeover after a crash, so what this
        one held unpublished comes back as inferred events with the same ids."""
        self.stats.failed_leaderships += 1
        causes = list(exc.exceptions) if isinstance(exc, BaseExceptionGroup) else [exc]
        for cause in causes:
            log.error("leadership failed; leading again", pbx=self.pbx.id,
                      error=str(cause) or type(cause).__name__, exc_info=cause)  # fmt: skip
        self.health.set(self.component, False, f"leadership failed ({type(causes[0]).__name__}); leading again")

    async def _lead(self, stopping: asyncio.Event) -> None:
        assert self.lease is not None
        self.stats.leaderships += 1
        bind(pbx_id=self.pbx.id)
        js = self.nc.jetstream()
        registry = CallRegistry(
            self.pbx.id, await open_bucket(js, CALL_IDS), await open_bucket(js, INGEST_STATE),
            reappear_window_s=self.config.reappear_window_s, online=lambda: self.nc.is_connected,
        )  # fmt: skip
        self.registry = registry
        await self._load_state()
        hints = CommandHints()
        self.emitter = Emitter(self.pbx.id, registry, epoch=self.lease.epoch, config=self.config, hints=hints,
                               park_orbit=self.pbx.park_orbit)  # fmt: skip
        self.outbox = Outbox(self.nc, self.pbx.id, max_items=self.config.outbox_max,
                             before_publish=registry.flush_ids)  # fmt: skip
        self._inbox = asyncio.Queue()
        self._down_since = None
        # a takeover (epoch > 1): calls wholly inside the leaderless gap are only in the call history
        self._takeover_since = self._clock() - UNSEEN_LOOKBACK_S if self.lease.epoch > 1 else None
        self.synced.clear()
        lead_stop = asyncio.Event()
        publish_stop = asyncio.Event()
        owner = TokenOwner(self.nc, self.pbx.id, self.tokens)
        subs: list[Subscription] = []

        async def on_command(msg: Msg) -> None:
            with contextlib.suppress(DecodeError):
                hints.observe(parse_event(msg.data))

        verify = self.pbx.verify_tls
        self.socket = CallControlSocket(
            self.pbx.id, self.pbx.base_url, self.tokens,
            on_frame=lambda data, at: self._inbox.put_nowait(_FrameIn(data, at)),
            on_connect=self._resync, on_disconnect=self._disconnected,
            ping_interval_s=self.config.ping_interval_s,
            backoff=Backoff(cap_s=self.config.reconnect_max_s),
            tls=tls_context(verify, self.pbx.ca_file) if self.pbx.base_url.startswith("https://") else None,
            clock=self._clock,
        )  # fmt: skip
        persist_queue: asyncio.Queue[tuple[dict[int, bytes], set[int], int, int]] = asyncio.Queue()
        self.leading.set()
        try:
            await owner.start()
            for name in ("accepted", "succeeded"):
                subs.append(await self.nc.subscribe(f"ml.evt.{self.pbx.id}.command.*.{name}", cb=on_command))
            self.modes = await self._probe_modes()
            self.health.set(self.component, False, f"leader ({self.modes.name}): connecting to the PBX")
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._follow(stopping, lead_stop))
                tg.create_task(self._renew(lead_stop))
                tg.create_task(self._watch_modes(lead_stop))
                link = tg.create_task(self.socket.run(lead_stop) if self.modes.call_control else self._no_link())
                pipeline = tg.create_task(self._pipeline(lead_stop, persist_queue))
                publishing = tg.create_task(self.outbox.run(publish_stop, drain_timeout_s=5.0))
                tg.create_task(self._persist(persist_queue, publishing))
                pollers = [tg.create_task(t) for t in await self._pollers(lead_stop)]
                await lead_stop.wait()
                # the link and the pollers stop, the pipeline finishes what it holds, then the outbox drains
                # (bounded) and the acknowledged state is saved
                await link
                for task in pollers:
                    await task
                await pipeline
                publish_stop.set()
        finally:
            self.leading.clear()
            for task in list(self._reads):
                task.cancel()
            self._windows.clear()  # the next leader's takeover reconciles what this leadership still owed
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            with contextlib.suppress(Exception):  # the bus is gone: the subscription went with the connection
                await owner.stop()
            if stopping.is_set():
                with contextlib.suppress(Exception):
                    await self.lease.release()
            self.health.set(self.component, False, "not leading")

    @staticmethod
    async def _follow(stopping: asyncio.Event, lead_stop: asyncio.Event) -> None:
        stop = asyncio.ensure_future(stopping.wait())
        lead = asyncio.ensure_future(lead_stop.wait())
        await asyncio.wait({stop, lead}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        lead.cancel()
        lead_stop.set()

    async def _renew(self, lead_stop: asyncio.Event) -> None:
        assert self.lease is not None
        interval = self.config.leader_lease_s / 3
        while not lead_stop.is_set():
            if await wait_or_stop(lead_stop, interval):
                break
            try:
                if not await self.lease.try_acquire():
                    log.warning("leader lease lost", pbx=self.pbx.id)
                    break
            except Exception as exc:
                if not self.lease.valid():
                    log.warning("leader lease expired while the bus was unreachable", pbx=self.pbx.id,
                                error=str(exc) or type(exc).__name__)  # fmt: skip
                    break
        lead_stop.set()

    # ------------------------------------------------------------------ degraded modes, polling, reconciliation

    async def _probe(self, call: Callable[[], Awaitable[object]]) -> bool:
        """False only when the PBX says 403 (not licensed / not enabled); any other error is not a verdict."""
        try:
            await call()
        except PbxForbidden:
            return False
        except PbxError:
            return True
        return True

    async def _probe_modes(self) -> Modes:
        xapi = self.xapi
        modes = Modes(
            call_control=await self._probe(self.rest.dns),
            xapi=xapi is not None and await self._probe(lambda: xapi.page("/Users", Query(top=1, select=("Id",)))),
        )
        if modes.name != "full":
            log.warning("degraded mode", pbx=self.pbx.id, mode=modes.name, detail=modes.explained)
        return modes

    async def _watch_modes(self, lead_stop: asyncio.Event) -> None:
        """Re-probe now and then: a licence or a ticked box changes the mode, and the leadership restarts with it."""
        while not await wait_or_stop(lead_stop, self.config.modes_probe_s):
            if await self._probe_modes() != self.modes:
                log.info("the PBX's APIs changed; restarting the adapter", pbx=self.pbx.id)
                lead_stop.set()

    async def _no_link(self) -> None:
        """XAPI only (or nothing): no websocket; the state the link events and /readyz report."""
        assert self.outbox is not None
        now = self._clock()
        data = e.LinkConnectedData(endpoint=self.pbx.base_url + "/xapi/v1", mode=self.modes.name)
        if self.modes.xapi:
            self.outbox.put(self._link_event(e.LinkConnected, data, now))
        self.synced.set()
        self.health.set(self.component, self.modes.xapi, f"leader: {self.modes.explained}")

    async def _pollers(self, lead_stop: asyncio.Event) -> list[Coroutine[Any, Any, None]]:
        if not self.modes.xapi or self.xapi is None:
            self.pollers = []
            self.reconciler = None
            return []
        assert self.outbox is not None
        assert self.lease is not None
        outbox, kv = self.outbox, await open_bucket(self.nc.jetstream(), INGEST_STATE)
        presence = PresencePoller(self.pbx.id, self.xapi, outbox, kv)
        chat = ChatPoller(self.pbx.id, self.xapi, outbox, kv)
        await presence.load()
        await chat.load()
        self.pollers = [presence, chat]

        async def publish(events: list[e.EventBase]) -> bool:
            return await publish_acked(outbox, events)

        self.reconciler = Reconciler(self.pbx.id, self.xapi, self.registry, self.lease.epoch, publish)
        tasks = [
            every(self.config.presence_interval_s, lead_stop, presence.poll, "presence poll"),
            every(self.config.chat_interval_s, lead_stop, chat.poll, "chat poll"),
        ]
        if not self.modes.call_control:
            tasks.append(every(self.config.history_interval_s, lead_stop, self._history_pass, "call history"))
        return tasks

    async def _history_pass(self) -> None:
        """XAPI-only mode: every call that ended since the last pass comes from the call history."""
        assert self.reconciler is not None
        now = datetime.now(UTC)
        since = self._history_since or now - timedelta(seconds=self.config.history_interval_s)
        await self.reconciler.window(since, now)
        self._history_since = now - timedelta(seconds=5)  # overlap: a CallId already reported is never repeated

    def _reconcile_outage(self, down_since: float, up_at: float) -> None:
        """After a re-read that closed a gap: the calls that began and ended inside it, from the call history.

        One reconciliation runs at a time, and a window that overlaps (or nearly meets) one still waiting joins it:
        each leg gone unseen asks for the last minute, so a burst of them was a burst of overlapping call-log reads
        of the PBX's XAPI, which is rate-limited like the rest of it."""
        if self.reconciler is None:
            return
        self._windows = merge_windows([*self._windows, (down_since, up_at)], within_s=RECONCILE_MERGE_S)
        if self._reconciling is not None and not self._reconciling.done():
            return
        task = asyncio.create_task(self._reconcile_windows(self.reconciler))
        self._reconciling = task
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _reconcile_windows(self, reconciler: Reconciler) -> None:
        while self._windows:
            await asyncio.sleep(self.config.reconcile_delay_s)  # the PBX writes history as calls end
            down_since, up_at = self._windows.pop(0)
            await self._reconcile_window(reconciler, down_since, up_at)

    async def _reconcile_window(self, reconciler: Reconciler, down_since: float, up_at: float) -> None:
        start, end = datetime.fromtimestamp(down_since, UTC), datetime.fromtimestamp(up_at, UTC)
        backoff = Backoff(base_s=0.25, cap_s=5.0)
        for attempt in range(1, RECONCILE_ATTEMPTS + 1):
            try:
                found = await reconciler.window(start, end)
            except PbxError as exc:  # the storm may not be over for XAPI: try again, bounded
                log.warning("call-history reconciliation failed", pbx=self.pbx.id, error=str(exc),
                            attempt=attempt)  # fmt: skip
                await asyncio.sleep(backoff.next())
                continue
            self.stats.reconciliations += 1
            if found:
                log.info("calls reconciled from the call history", pbx=self.pbx.id, calls=found)
            return
        log.error("call-history reconciliation gave up: calls wholly inside the gap may be missing",
                  pbx=self.pbx.id, start=start.isoformat(), end=end.isoformat())  # fmt: skip

    # ------------------------------------------------------------------ the link

    async def _resync(self) -> None:
        """Called by the socket right after it connects, before any frame is read: re-read the whole PBX."""
        ticket = self.tracker.snapshot_ticket()
        try:
            dns = await self.rest.dns()
        except PbxError:
            self.tracker.snapshot_failed()
            raise
        parsed: dict[str, list[LegSnapshot]] = {}
        for info in dns:
            dn = str(info.get("dn", ""))
            if not dn:
                continue
            parsed[dn] = []
            for raw in info.get("participants") or []:
                try:
                    parsed[dn].append(parse_participant(raw, dn))
                except FrameError as exc:
                    self.stats.bad_participants += 1
                    log.warning("unreadable participant in the re-read", pbx=self.pbx.id, reason=exc.reason)
        now = self._clock()
        gap = None if self._down_since is None else max(0.0, now - self._down_since)
        self._inbox.put_nowait(_SnapshotIn(ticket, parsed, now, gap))

    async def _disconnected(self, reason: str) -> None:
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
        self.health.set(self.component, False, f"websocket down: {reason}")
        self._inbox.put_nowait(_LinkDown(reason, now))

    # ------------------------------------------------------------------ the pipeline

    async def _pipeline(
        self, lead_stop: asyncio.Event, persist_queue: asyncio.Queue[tuple[dict[int, bytes], set[int], int, int]]
    ) -> None:
        next_persist = 0.0
        while True:
            deadline = self.tracker.next_deadline()
            wait = 0.25 if deadline is None else max(0.0, min(0.25, deadline - self._clock()))
            try:
                item: _Item | None = await asyncio.wait_for(self._inbox.get(), wait)
            except TimeoutError:
                item = None
            self._handling = item is not None
            BACKLOG.labels(self.pbx.id).set(self._inbox.qsize() + self.tracker.waiting)
            if item is None and lead_stop.is_set():
                if not self._recovering:
                    self._take_state(persist_queue)
                return
            now = self._clock()
            observations = self._apply(item, now) if item is not None else []
            if isinstance(item, _Reload):
                await self._reload()
                self._handling = False
                continue
            observations += self.tracker.tick(now)
            if not self._recovering and not lead_stop.is_set():
                # reads first: they go out while the events are made (opening new calls waits on KV)
                for read in self.tracker.take_reads(now):
                    self._start_read(read)
            events = await self.emitter.events(observations) if observations else []
            if isinstance(item, _SnapshotIn):
                events += self._after_snapshot(item, sum(1 for ev in events if ev.inferred))
            elif isinstance(item, _LinkDown):
                events.append(self._link_event(e.LinkDisconnected, e.LinkDisconnectedData(reason=item.reason), now))
            self._publish(events, force=isinstance(item, _SnapshotIn))
            if self.tracker.stats.unseen > self._unseen:
                self._unseen = self.tracker.stats.unseen
                if self._unseen_since is None:
                    self._unseen_since = now - UNSEEN_LOOKBACK_S
            if self._unseen_since is not None and not self.tracker.busy:
                # every read owed is done: what began and ended unseen is in the call history
                self._reconcile_outage(self._unseen_since, now)
                self._unseen_since = None
            if now >= next_persist and not self._recovering:
                self._take_state(persist_queue)
                next_persist = now + self.config.persist_interval_s
            self._handling = False

    def _take_state(self, queue: asyncio.Queue[tuple[dict[int, bytes], set[int], int, int]]) -> None:
        """Taken between two pipeline steps, so the state matches exactly the events queued so far."""
        assert self.outbox is not None
        states, gone = self.registry.take_state()
        if states or gone:
            queue.put_nowait((states, gone, self.outbox.position, self.outbox.overflows))

    def _apply(self, item: _Item, now: float) -> list[Observation]:
        if isinstance(item, _FrameIn):
            self.stats.frames += 1
            FRAMES.labels(self.pbx.id).inc()
            if self._recovering:
                self.stats.dropped_frames += 1
                return []
            try:
                frame = parse_frame(item.data)
            except FrameError as exc:
                self.stats.malformed += 1
                MALFORMED.labels(self.pbx.id).inc()
                log.debug("malformed frame", pbx=self.pbx.id, reason=exc.reason)
                return []
            return self.tracker.frame(frame, item.at)
        if isinstance(item, _ReadIn):
            read = item.read
            if item.error is not None:
                if isinstance(item.error, PbxRateLimited | PbxUnavailable) and self._unseen_since is None:
                    self._unseen_since = item.at - UNSEEN_LOOKBACK_S
                backoff = 0.25
                if isinstance(item.error, PbxRateLimited):
                    backoff = item.error.retry_after if item.error.retry_after is not None else 1.0
                self.tracker.read_failed(read, item.at, backoff_s=backoff,
                                         use_list=isinstance(item.error, PbxForbidden))  # fmt: skip
                return []
            if read.participant_id is None:
                return self.tracker.list_done(read, item.legs, item.at)
            return self.tracker.read_done(read, item.leg, item.at)
        if isinstance(item, _SnapshotIn):
            self.stats.resyncs += 1
            return self.tracker.snapshot_done(item.ticket, item.dns, item.at)
        return []

    def _after_snapshot(self, item: _SnapshotIn, inferred: int) -> list[e.EventBase]:
        connected = e.LinkConnectedData(endpoint=self.socket.url if self.socket else "", mode=self.modes.name)
        events: list[e.EventBase] = [self._link_event(e.LinkConnected, connected, item.at)]
        if item.gap_s is not None or inferred:
            data = e.LinkResyncedData(gap_seconds=item.gap_s or 0.0, inferred_events=inferred)
            events.append(self._link_event(e.LinkResynced, data, item.at))
        if item.gap_s is not None and self._down_since is not None:
            self._reconcile_outage(self._down_since, item.at)
        elif item.gap_s is None and self._takeover_since is not None:
            self._reconcile_outage(self._takeover_since, item.at)  # calls the call-id map knows are skipped
            self._takeover_since = None
        self._down_since = None
        self.synced.set()
        self.health.set(self.component, True, f"leader: websocket up ({self.modes.explained})")
        return events

    def _publish(self, events: list[e.EventBase], *, force: bool = False) -> None:
        """Queue events; a re-read's are always taken (their number is bounded by the PBX's live state, and
        refusing them would only ask for another re-read)."""
        assert self.outbox is not None
        for event in events:
            if not self.outbox.put(event, force=force):
                self._start_recovery()
                return

    def _link_event(self, cls: type[e.EventBase], data: object, at: float) -> e.EventBase:
        assert self.lease is not None
        self._link_n += 1
        return cls.model_validate({
            "event_id": deterministic_event_id("link", self.pbx.id, self.holder, self.lease.epoch, self._link_n),
            "pbx_id": self.pbx.id, "occurred_at": utc_at(at), "data": data,
        })  # fmt: skip

    # ------------------------------------------------------------------ reads

    def _start_read(self, read: Read) -> None:
        task = asyncio.create_task(self._read(read))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read(self, read: Read) -> None:
        try:
            if read.participant_id is None:
                READS.labels(self.pbx.id, "list").inc()
                try:
                    raws = await self.rest.participants(read.dn)
                except PbxNotFound:
                    raws = []
                legs = []
                for raw in raws:
                    try:
                        legs.append(self._parse(raw, read.dn))
                    except FrameError:
                        self.stats.bad_participants += 1
                self._inbox.put_nowait(_ReadIn(read, self._clock(), legs=legs))
                return
            READS.labels(self.pbx.id, "one").inc()
            try:
                leg: LegSnapshot | None = self._parse(
                    await self.rest.participant(read.dn, read.participant_id), read.dn
                )
            except PbxNotFound:
                leg = None
            self._inbox.put_nowait(_ReadIn(read, self._clock(), leg=leg))
        except PbxError as exc:
            self._inbox.put_nowait(_ReadIn(read, self._clock(), error=exc))
        except FrameError as exc:
            self.stats.bad_participants += 1
            self._inbox.put_nowait(_ReadIn(read, self._clock(), error=PbxError(f"unreadable participant: {exc}")))

    def _parse(self, raw: Any, dn: str) -> LegSnapshot:
        """Parse a participant, or hand back the snapshot of the identical JSON read last time: under repeated
        upserts almost every read is unchanged, and the tracker skips a snapshot it already holds."""
        key = (dn, raw.get("id")) if isinstance(raw, dict) else None
        cached = self._parsed.get(key) if key is not None else None
        if cached is not None and cached[0] == raw:
            return cached[1]
        leg = parse_participant(raw, dn)
        if key is not None:
            if len(self._parsed) > 2 * len(self.tracker.legs) + 1024:
                self._parsed = {k: v for k, v in self._parsed.items() if v[1].entity in self.tracker.legs}
            self._parsed[key] = (raw, leg)
        return leg

    # ------------------------------------------------------------------ outbox overflow

    def _start_recovery(self) -> None:
        if self._recovering:
            return
        self._recovering = True
        log.warning("outbox overflow: will reload state and re-read the PBX once the bus is back", pbx=self.pbx.id)
        task = asyncio.create_task(self._await_drain())
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _await_drain(self) -> None:
        assert self.outbox is not None
        while len(self.outbox) or not self.nc.is_connected:  # noqa: ASYNC110 - the outbox drains in its own task
            await asyncio.sleep(0.1)
        self._inbox.put_nowait(_Reload())

    async def _load_state(self) -> None:
        """The tracker starts from the persisted state: known calls' legs, legless calls, provisional legs."""
        self.tracker.reset()
        self.tracker.load(await self.registry.load(), self.registry.legless(), self.registry.provisional_legs)

    async def _reload(self) -> None:
        assert self.outbox is not None
        await self._load_state()
        self.outbox.clear_overflow()
        self._recovering = False
        if self.socket is not None and self.socket.connected:
            try:
                await self._resync()
            except PbxError:
                await self.socket.close()  # the reconnect re-reads

    # ------------------------------------------------------------------ persisted state

    async def _persist(
        self, queue: asyncio.Queue[tuple[dict[int, bytes], set[int], int, int]], publishing: asyncio.Task[None]
    ) -> None:
        """Write state only once the outbox acknowledged every event queued before it was taken; ends after the
        outbox stopped and every state taken before is written (or known unacknowledged)."""
        assert self.outbox is not None
        while True:
            try:
                states, gone, position, overflows = await asyncio.wait_for(queue.get(), 0.2)
            except TimeoutError:
                if publishing.done() and queue.empty():
                    return
                continue
            acked = self.outbox.acked(position)
            while not acked and not publishing.done():
                acked = await self.outbox.wait_acked(position, within_s=0.5)
            if not acked or self.outbox.overflows != overflows:
                if self.outbox.overflows == overflows:
                    self.registry.state_failed(states, gone)
                continue
            try:
                await self.registry.write_state(states, gone)
            except Exception as exc:
                log.info("state write failed; retrying with newer state", pbx=self.pbx.id,
                         error=str(exc) or type(exc).__name__)  # fmt: skip
                self.registry.state_failed(states, gone)
