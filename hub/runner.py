"""The service runner: one lifespan, SIGINT/SIGTERM, and /healthz, /readyz, /metrics for every service; freed heap
memory is handed back to the OS once a minute (:mod:`hub.heaptrim`).

A service is an ``async def main(ctx: ServiceContext) -> None`` that runs until ``ctx.stopping`` is set (or it is
cancelled after the grace period). It reports readiness per component through ``ctx.health`` (e.g. "nats" not ready
while the bus is down); /readyz answers 503 with the reasons until every component is ready.

The health endpoint is a tiny HTTP/1.1 responder on asyncio streams rather than an ASGI server, so it installs no
signal handlers of its own and costs nothing per service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.heaptrim import trim_forever
from hub.logs import get_logger

log = get_logger(__name__)


class Health:
    """Liveness and per-component readiness of one process."""

    def __init__(self) -> None:
        self._components: dict[str, tuple[bool, str]] = {}
        self.alive = True

    def set(self, component: str, ready: bool, detail: str = "") -> None:
        previous = self._components.get(component)
        self._components[component] = (ready, detail)
        if previous is None or previous[0] != ready:
            log.info("readiness", component=component, ready=ready, detail=detail)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        body = {name: {"ready": ok, "detail": detail} for name, (ok, detail) in sorted(self._components.items())}
        return bool(self._components) and all(ok for ok, _ in self._components.values()), body


class HealthServer:
    """Serves /healthz, /readyz and /metrics for a :class:`Health` on host:port (port 0 picks one)."""

    def __init__(self, health: Health, host: str = "127.0.0.1", port: int = 0) -> None:
        self.health = health
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> HealthServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            parts = request.split(b"\r\n", 1)[0].split()
            path = parts[1].decode(errors="replace").split("?", 1)[0] if len(parts) >= 2 else "/"
            status, content_type, body = self._route(path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _route(self, path: str) -> tuple[str, str, bytes]:
        if path == "/healthz":
            ok = self.health.alive
            return (
                "200 OK" if ok else "503 Service Unavailable",
                "application/json",
                json.dumps({"alive": ok}).encode(),
            )
        if path == "/readyz":
            ready, body = self.health.ready()
            payload = json.dumps({"ready": ready, "components": body}).encode()
            return ("200 OK" if ready else "503 Service Unavailable", "application/json", payload)
        if path == "/metrics":
            return ("200 OK", CONTENT_TYPE_LATEST, generate_latest())
        return ("404 Not Found", "application/json", b'{"error":"try /healthz, /readyz or /metrics"}')


@dataclass
class ServiceContext:
    name: str
    health: Health
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    health_url: str = ""

    async def wait_stopping(self) -> None:
        await self.stopping.wait()


ServiceMain = Callable[[ServiceContext], Coroutine[Any, Any, None]]


async def run_service(
    name: str,
    main: ServiceMain,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    grace: float = 10.0,
    on_ready_url: Callable[[str], None] | None = None,
) -> int:
    """Run ``main`` with health endpoints until SIGINT/SIGTERM; return the process exit code."""
    health = Health()
    ctx = ServiceContext(name=name, health=health)
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, ctx.stopping.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread: the caller stops us via ctx
            pass
    code = 0
    try:
        async with HealthServer(health, host, port) as server:
            ctx.health_url = server.url
            log.info("service started", service=name, health=server.url)
            if on_ready_url is not None:
                on_ready_url(server.url)
            task = asyncio.create_task(main(ctx), name=f"{name}-main")
            trimming = asyncio.create_task(trim_forever(ctx.stopping), name=f"{name}-heap-trim")
            stop_wait = asyncio.create_task(ctx.stopping.wait())
            done, _ = await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if task not in done:
                log.info("stopping", service=name, grace_s=grace)
                try:
                    await asyncio.wait_for(asyncio.shield(task), grace)
                except TimeoutError:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            stop_wait.cancel()
            trimming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await trimming
            if task.done() and not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                log.error("service failed", service=name, error=str(exc), exc_info=exc)
                code = 1
    finally:
        health.alive = False
        for sig in installed:
            loop.remove_signal_handler(sig)
    log.info("service stopped", service=name, code=code)
    return code


async def wait_or_stop(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless stopping is set first; True when stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
    return stopping.is_set()


T = TypeVar("T")


async def until_ready(
    component: str,
    open_: Callable[[], Awaitable[T]],
    transient: type[BaseException] | tuple[type[BaseException], ...],
    health: Health,
    stopping: asyncio.Event,
) -> T | None:
    """Open a dependency, reporting it not ready and retrying with capped backoff while it is down (D§10: a
    service starts without its bus or database). None when asked to stop first."""
    delay = 0.2
    while not stopping.is_set():
        try:
            opened = await open_()
        except transient as exc:
            health.set(component, False, str(exc))
            await wait_or_stop(stopping, delay)
            delay = min(10.0, delay * 2)
            continue
        health.set(component, True)
        return opened
    return None
