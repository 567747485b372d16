"""The whole hub as processes, as ``masterlinc up`` runs it, for fault tests and soak runs.

- a private nats-server (JetStream file storage in the data directory: the streams survive a SIGKILL), killed and
  started again on the same port and store;
- the event log at ``db_url`` (migrated here);
- the 3CX simulator served on a real port by this process, so its ground-truth journal is read directly;
- recorder, ingest, worker, coordinator and the built-in agents as child processes (:func:`hub.up._plan`, without
  the MCP facade), each SIGKILLed and started again by :meth:`HubRig.kill` / :meth:`HubRig.start`.

Timings shorter than production's, so a fault recovers within a test's budget (ingest's leader lease, the
recorder's redelivery delay); :data:`FAST_ENV` lists them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from nats.aio.client import Client

from hub import natsd
from hub.bus import connect, ensure_streams
from hub.config import Settings
from hub.eventlog import EventStore, LogFilter
from hub.eventlog.migrate import upgrade_async
from hub.logs import get_logger
from hub.sdk.feed import agent_of_consumer
from hub.simulator import SimConfig, SimHandle, running_simulator
from hub.supervise import Service, Supervisor
from hub.up import SIM_SECRET, _child_env, _plan
from schemas import subjects
from schemas.codec import parse_event
from schemas.events import Event

log = get_logger(__name__)

PBX = "sim"
RECORDER = "ml-recorder"
END_GRACE_S = 0.2
FAST_ENV = {
    "ML_INGEST__LEADER_LEASE_S": "2",  # a restarted ingest takes the lead 2 s after the old one died
    "ML_INGEST__CALL_END_GRACE_S": str(END_GRACE_S),
    "ML_RECORDER__ACK_WAIT_S": "3",  # what a killed recorder held comes back after 3 s
}
LEFT_OUT = ("mcp", "agent-basma")  # not needed for call traffic; Basma needs models


@dataclass
class HubRig:
    data_dir: Path
    nats: natsd.EmbeddedNats
    db_url: str
    sim: SimHandle
    sup: Supervisor
    nc: Client
    store: EventStore
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=1.0))
    cuts: list[int] = field(default_factory=list)  # journal indices where ingest was killed (link cut)

    # ------------------------------------------------------------------ processes

    def service(self, name: str) -> Service:
        return next(s for s in self.sup.services if s.name == name)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sup.services]

    def pids(self) -> dict[str, int]:
        out = {s.name: s.process.pid for s in self.sup.services if s.running and s.process is not None}
        if self.nats.alive():
            out["nats"] = self.nats.process.pid
        return out

    async def kill(self, name: str) -> None:
        if name == "ingest":
            self.cuts.append(len(self.sim.journal.entries))
        await self.sup.kill(self.service(name))

    def start(self, name: str) -> None:
        self.sup.start(self.service(name))

    def kill_nats(self) -> None:
        self.nats.kill()

    def start_nats(self) -> None:
        self.nats = natsd.start(store_dir=self.nats.store_dir, port=self.nats.port)

    async def ready(self, name: str) -> bool:
        ok, _ = await self.sup.ready(self.service(name))
        return ok

    async def wait_ready(self, within_s: float = 60.0, names: list[str] | None = None) -> None:
        deadline = time.monotonic() + within_s
        waiting: list[str] = []
        while time.monotonic() < deadline:
            dead = self.sup.died()
            if dead is not None:
                raise RuntimeError(f"{dead.name} exited:\n{dead.tail()}")
            waiting = [n for n in names or self.names if not await self.ready(n)]
            if not waiting:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"not ready after {within_s:.0f} s: {', '.join(waiting)}")

    # ------------------------------------------------------------------ what the hub did

    async def lag(self) -> int | None:
        """Events in ML_EVENTS the recorder has not acknowledged (None while NATS is away)."""
        try:
            info = await asyncio.wait_for(self.nc.jetstream().consumer_info(subjects.EVENTS_STREAM, RECORDER), 1.0)
        except Exception:  # NATS down or restarting: no figure
            return None
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def behind(self) -> dict[str, int]:
        """Per agent, the feed events its consumers have not acknowledged, over all partitions (empty while NATS is
        away)."""
        try:
            infos = await asyncio.wait_for(self.nc.jetstream().consumers_info(subjects.FEED_STREAM), 2.0)
        except Exception:  # NATS down or restarting, or no agent started yet: no figure
            return {}
        out: dict[str, int] = {}
        for info in infos:
            agent = agent_of_consumer(info.name or "")
            if agent is not None:
                out[agent] = out.get(agent, 0) + int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        return out

    async def stream_messages(self) -> int | None:
        try:
            info = await asyncio.wait_for(self.nc.jetstream().stream_info(subjects.EVENTS_STREAM), 1.0)
        except Exception:  # NATS down or restarting
            return None
        return int(info.state.messages)

    async def logged(self) -> int | None:
        """Events in the log (None while the database is away)."""
        try:
            return await asyncio.wait_for(self.store.count(LogFilter()), 5.0)
        except Exception:  # the database is down or restarting
            return None

    async def last_seq(self) -> int | None:
        try:
            return await asyncio.wait_for(self.store.max_seq(), 5.0)
        except Exception:  # the database is down or restarting
            return None

    async def held(self) -> int | None:
        """What ingest holds: frames and reads waiting in its pipeline and events in its outbox (None while it is
        down). Events held longer than a kill's slack are what a kill loses (:data:`hub.soak.run.KILL_SLACK_S`)."""
        found = await self.metrics("ingest", "ml_ingest_backlog", "ml_ingest_outbox_events")
        return None if len(found) < 2 else int(sum(found.values()))

    async def metric(self, name: str, metric: str) -> float | None:
        """One sample of a Prometheus metric from a service's /metrics (summed over labels)."""
        return (await self.metrics(name, metric)).get(metric)

    async def metrics(self, name: str, *metrics: str) -> dict[str, float]:
        """Several metrics from one read of a service's /metrics (each summed over labels); those it does not
        report (or all, while it is down) are left out."""
        port = self.service(name).health_port
        try:
            text = (await self.http.get(f"http://127.0.0.1:{port}/metrics")).text
        except httpx.HTTPError:
            return {}
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            metric = next((m for m in metrics if line.startswith(m)), None)
            if metric is not None:
                found[metric] = found.get(metric, 0.0) + float(line.rsplit(" ", 1)[1])
        return found

    async def settled(self) -> tuple[int, int] | None:
        """Ingest holds nothing (outbox and pipeline empty, no call left in the simulator) and the recorder filed
        the whole stream: (frames the simulator sent, events in the stream), else None."""
        if await self.held() != 0 or self.sim.engine.calls:
            return None
        messages, lag, logged = await self.stream_messages(), await self.lag(), await self.logged()
        if lag == 0 and messages is not None and messages == logged:
            return self.sim.sim.frames_sent, messages
        return None

    async def wait_settled(self, within_s: float = 60.0) -> None:
        """Settled twice, ``END_GRACE_S`` * 3 apart, with nothing sent or published in between (a call's end
        waits for its grace; ingest's frame counter restarts with the process, so it is not compared)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            first = await self.settled()
            if first is not None:
                await asyncio.sleep(END_GRACE_S * 3)
                if await self.settled() == first:
                    return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"the hub did not settle in {within_s:.0f} s: lag {await self.lag()}, "
                           f"stream {await self.stream_messages()}, log {await self.logged()}")  # fmt: skip

    async def log_events(self) -> list[Event]:
        return [parse_event(stored.payload) async for stored in self.store.iter_events(LogFilter())]

    async def next_commit(self, after: int, within_s: float) -> float | None:
        """Seconds until an event with a sequence above ``after`` is committed (None: none within ``within_s``)."""
        start = time.monotonic()
        while time.monotonic() - start < within_s:
            seq = await self.last_seq()
            if seq is not None and seq > after:
                return time.monotonic() - start
            await asyncio.sleep(0.05)
        return None


def hub_env(settings: Settings, nats_url: str, db_url: str, data_dir: Path, sim: SimHandle) -> dict[str, str]:
    env = _child_env(settings, nats_url, db_url, data_dir)
    env.update({
        "ML_PBXS__0__ID": PBX, "ML_PBXS__0__BASE_URL": sim.base_url, "ML_PBXS__0__CLIENT_ID": sim.config.client_id,
        "ML_PBXS__0__CLIENT_SECRET": SIM_SECRET, "ML_COORDINATOR__SAFE_ROUTE": "100", **FAST_ENV,
    })  # fmt: skip
    return env


@contextlib.asynccontextmanager
async def running_hub(
    data_dir: Path, db_url: str, *, settings: Settings | None = None, sim_config: SimConfig | None = None,
    ready_within_s: float = 60.0,
) -> AsyncIterator[HubRig]:  # fmt: skip
    settings = settings or Settings()
    server = natsd.start(store_dir=data_dir / "jetstream")
    rig: HubRig | None = None
    try:
        await upgrade_async(db_url)
        store = await EventStore.open(db_url)
        nc = await connect(server.url, name="masterlinc-soak", **settings.bus.security.options())
        await ensure_streams(nc.jetstream(), settings.bus)
        async with running_simulator(sim_config or SimConfig(client_secret=SIM_SECRET)) as sim:
            sup = Supervisor(data_dir / "logs", hub_env(settings, server.url, db_url, data_dir, sim))
            _plan(sup, settings, None, natsd.free_port())
            sup.services[:] = [s for s in sup.services if s.name not in LEFT_OUT]
            rig = HubRig(data_dir, server, db_url, sim, sup, nc, store)
            try:
                for service in sup.services:
                    sup.start(service)
                await rig.wait_ready(ready_within_s)
                yield rig
            finally:  # judged already: no ordered stop needed, and one slow service must not hold up the rest
                await asyncio.gather(*(sup.stop(s, grace_s=5.0) for s in sup.services))
                await sup.stop_all(grace_s=1.0)
                await rig.http.aclose()
                with contextlib.suppress(Exception):
                    await nc.close()
                await store.close()
    finally:
        (rig.nats if rig is not None else server).stop()
