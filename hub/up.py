"""``masterlinc up``: the whole hub in one process tree with embedded defaults.

Today it runs: the embedded nats-server (unless NATS_URL is set) with the JetStream streams, the event log
(migrations applied; SQLite in the data directory unless DATABASE_URL is set) with the recorder filing every event,
and a synthetic call generator standing in for the simulator and ingest; it prints every event as a subscriber sees
it. Later issues add the simulator, ingest, worker, agents and MCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from rich.console import Console

from hub import natsd
from hub.bus import EventPublisher, connect, ensure_streams
from hub.config import Settings
from hub.demo import synthetic_stream
from hub.eventlog import EventStore, LogFilter
from hub.eventlog.migrate import upgrade_async
from hub.logs import get_logger
from hub.recorder import Recorder
from hub.runner import ServiceContext, run_service
from schemas import subjects

log = get_logger(__name__)


async def _print_events(nc: object, console: Console, stop: asyncio.Event) -> None:
    sub = await nc.subscribe(subjects.EVENTS_ALL)  # type: ignore[attr-defined]
    try:
        while not stop.is_set():
            try:
                msg = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                continue
            except Exception as exc:  # nats raises its own TimeoutError subclass
                if type(exc).__name__ == "TimeoutError":
                    continue
                raise
            raw = json.loads(msg.data)
            console.print(f"[dim]{msg.subject}[/dim]  {raw['type']:<16} call={raw.get('call_id') or '-'}")
    finally:
        await sub.unsubscribe()


async def run_up(settings: Settings, *, scenario: str = "demo", calls: int = 0) -> int:
    console = Console(stderr=True)
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    server: natsd.EmbeddedNats | None = None
    nats_url = settings.nats_url
    if nats_url is None:
        server = natsd.start(store_dir=Path(data_dir / "jetstream"))
        nats_url = server.url
    try:
        return await run_service("up", lambda ctx: _main(ctx, settings, nats_url, console, calls))
    finally:
        if server is not None:
            server.stop()


async def _main(ctx: ServiceContext, settings: Settings, nats_url: str, console: Console, calls: int) -> None:
    db_url = settings.effective_database_url()
    await upgrade_async(db_url)
    store = await EventStore.open(db_url)
    ctx.health.set("database", True)
    nc = await connect(nats_url, name="masterlinc-up")
    recorder_stop = asyncio.Event()
    try:
        js = nc.jetstream()
        await ensure_streams(js, settings.bus)
        ctx.health.set("nats", True, nats_url)
        recorder = Recorder(js, store, settings.recorder, ctx.health)
        recording = asyncio.create_task(recorder.run(recorder_stop))
        publisher = EventPublisher(js)
        before = await store.count(LogFilter())
        console.print(f"MasterLinc hub: NATS at {nats_url}, event log at {db_url.split('@')[-1]}")
        console.print(f"health at {ctx.health_url}/readyz; {before} event(s) already in the log")
        console.print("ready: publishing synthetic calls (Ctrl-C to stop)")
        printer = asyncio.create_task(_print_events(nc, console, ctx.stopping))
        done = 0
        stream = synthetic_stream("demo")
        while not ctx.stopping.is_set() and (calls == 0 or done < calls):
            for event in stream:
                await publisher.publish(event)
                if event.type == "call.ended":  # type: ignore[attr-defined]
                    break
            await publisher.flush()
            done += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stopping.wait(), 1.0)
        ctx.stopping.set()
        await printer
        await publisher.flush()
        # Let the recorder file what is in flight (bounded): anything left stays in JetStream for the next start.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while recorder.stats.inserted + recorder.stats.duplicates < publisher.published:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        recorder_stop.set()
        await recording
        total = await store.count(LogFilter())
        console.print(f"stopped after {done} call(s); {total} event(s) in the log (was {before})")
    finally:
        recorder_stop.set()
        await nc.drain()
        await store.close()
