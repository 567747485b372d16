"""Child services of ``masterlinc up``: each hub service runs as its own process, as in production (so the two
cores both work), started with its environment and log file, watched through its /readyz, stopped in order.

A service that exits on its own is reported (its log's last lines) and ``up`` stops: a half-running hub would
only mislead. Stopping sends SIGTERM, waits for the grace period, then SIGKILLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from hub.logs import get_logger
from hub.natsd import free_port

log = get_logger(__name__)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when `up` dies, even by SIGKILL (no orphaned services)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Service:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    health_port: int = 0  # 0: the service has no /readyz; ``ready_port`` is checked instead
    ready_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Supervisor:
    def __init__(self, logs_dir: Path, base_env: dict[str, str]) -> None:
        self.logs_dir = logs_dir
        self.base_env = base_env
        self.services: list[Service] = []
        self._http = httpx.AsyncClient(timeout=1.0)

    def add(self, name: str, args: list[str], *, env: dict[str, str] | None = None, health: bool = True,
            ready_port: int | None = None) -> Service:  # fmt: skip
        port = free_port() if health else 0
        service = Service(name, args, {**(env or {}), **({"ML_HTTP__PORT": str(port)} if health else {})},
                          health_port=port, ready_port=ready_port)  # fmt: skip
        self.services.append(service)
        return service

    def start(self, service: Service) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        service.log_path = self.logs_dir / f"{service.name}.log"
        self._close_log(service)  # a restart reopens the log: the previous handle must not leak
        service._log = service.log_path.open("ab")
        env = {**self.base_env, **service.env}
        service.process = subprocess.Popen(  # noqa: S603 - our own CLI, with this interpreter
            [sys.executable, "-m", "hub.cli", *service.args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=service._log,
            stderr=service._log,
            start_new_session=True,  # Ctrl-C reaches `up`, which stops the children in order
            preexec_fn=_die_with_parent,
        )
        log.info("service started", service=service.name, pid=service.process.pid)

    async def ready(self, service: Service) -> tuple[bool, str]:
        if not service.running:
            return False, "not running"
        if service.health_port:
            try:
                body = (await self._http.get(f"http://127.0.0.1:{service.health_port}/readyz")).json()
            except (httpx.HTTPError, json.JSONDecodeError):
                return False, "starting"
            waiting = [f"{k}: {v['detail']}" for k, v in body.get("components", {}).items() if not v["ready"]]
            return bool(body.get("ready")), "; ".join(waiting) or "ready"
        if service.ready_port is not None:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", service.ready_port), 1)
            except (OSError, TimeoutError):
                return False, "starting"
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        return True, "ready"

    def died(self) -> Service | None:
        return next((s for s in self.services if s.process is not None and s.process.poll() is not None), None)

    async def stop(self, service: Service, grace_s: float = 10.0) -> int | None:
        proc = service.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), grace_s)
            except TimeoutError:
                log.warning("service did not stop in time; killing it", service=service.name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
        self._close_log(service)
        return proc.returncode

    async def kill(self, service: Service) -> int | None:
        """SIGKILL the service's process group at once (a crash, for fault tests); :meth:`start` runs it again."""
        proc = service.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
        self._close_log(service)
        return proc.returncode

    @staticmethod
    def _close_log(service: Service) -> None:
        if service._log is not None:
            service._log.close()
            service._log = None

    async def stop_all(self, grace_s: float = 10.0) -> None:
        for service in reversed(self.services):
            await self.stop(service, grace_s)
        await self._http.aclose()
