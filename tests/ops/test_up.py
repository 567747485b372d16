"""`masterlinc up` smoke test: start, play the demo, see calls in the log, call an MCP tool over HTTP, Ctrl-C,
a clean exit in bounded time with no process left, a restart that finds the earlier calls."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from hub import natsd
from hub.bus import connect
from hub.eventlog import EventStore, LogFilter
from schemas import subjects
from schemas.codec import parse_event

pytestmark = pytest.mark.nats


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_") and k not in {"NATS_URL", "DATABASE_URL"}}
    env["ML_DATA_DIR"] = str(data_dir)
    return env


def _logged(stderr: str) -> tuple[int, int, int]:
    match = re.search(r"stopped after (\d+) call\(s\); (\d+) event\(s\) in the log \(was (\d+)\)", stderr)
    assert match, stderr[-3000:]
    return int(match[1]), int(match[2]), int(match[3])


class Lines:
    """The stderr of a running `up`, read in a thread so the test can wait for a line without blocking."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._proc = proc
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            assert self._proc.poll() is None, f"`up` exited early:\n{self.text[-3000:]}"
            time.sleep(0.05)  # polling a pipe reader thread; the condition is the text itself
        raise AssertionError(f"no {pattern!r} within {timeout}s:\n{self.text[-3000:]}")

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


async def _log_ids(data_dir: Path) -> tuple[set[str], set[str]]:
    """Event ids and the ids of calls that ended, from the SQLite event log `up` keeps."""
    store = await EventStore.open(f"sqlite+aiosqlite:///{data_dir / 'events.db'}")
    try:
        events = [e async for e in store.iter_events(LogFilter())]
    finally:
        await store.close()
    return {str(e.event_id) for e in events}, {str(e.call_id) for e in events if e.type == "call.ended"}


async def _stream_ids(data_dir: Path) -> set[str]:
    """Every event id in ML_EVENTS, read from `up`'s JetStream store with a nats-server of our own."""
    server = natsd.start(store_dir=data_dir / "jetstream")
    try:
        nc = await connect(server.url, name="test-up-stream")
        js = nc.jetstream()
        total = (await js.stream_info(subjects.EVENTS_STREAM)).state.messages
        psub = await js.pull_subscribe(subjects.EVENTS_ALL, stream=subjects.EVENTS_STREAM)
        ids: set[str] = set()
        seen = 0
        while seen < total:
            for msg in await psub.fetch(min(500, total - seen), timeout=5):
                ids.add(str(parse_event(msg.data).event_id))
                seen += 1
        await nc.close()
    finally:
        server.stop()
    return ids


async def _make_call(url: str, token: str) -> dict[str, object]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http), raise_exceptions=True) as client:
        result = await client.call_tool("make_call", {"from_extension": "101", "to": "102"})
        body: dict[str, object] | None = result.structured_content
        assert body is not None
        return body


def test_up_plays_the_demo_answers_mcp_and_keeps_its_data_across_restarts(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "up"], env=_env(tmp_path), stderr=subprocess.PIPE, text=True
    ) as proc:
        out = Lines(proc)
        out.wait_for(r"\nready: \d+ services up")
        found = out.wait_for(r"MCP over HTTP: (\S+)\s+\(Authorization: Bearer\s+(\S+)\)")
        placed = anyio.run(_make_call, found[1], found[2])
        assert placed["ok"], placed
        out.wait_for(r"status: .* [1-9]\d* call\(s\) ended", timeout=120)  # the demo's calls went through
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, out.text[-3000:]
        assert time.monotonic() - started < 60
        out.join(5)
    ended, total, before = _logged(out.text)
    assert before == 0 and ended >= 1 and total >= 10
    assert "still had" not in out.text  # the recorder filed everything before it stopped
    logged, ended_calls = anyio.run(_log_ids, tmp_path)
    assert len(logged) == total and len(ended_calls) >= ended
    assert anyio.run(_stream_ids, tmp_path) == logged  # Ctrl-C lost nothing: every event on the bus is in the log
    assert (tmp_path / "events.db").exists() and (tmp_path / "jetstream").is_dir()
    assert "sim-secret" not in out.text  # secrets never in what `up` prints
    leftover = subprocess.run(["pgrep", "-f", "--", str(tmp_path)], capture_output=True, text=True, check=False)
    assert leftover.stdout.strip() == "", f"processes outlived `up`: {leftover.stdout}"

    again = subprocess.run([sys.executable, "-m", "hub.cli", "up", "--calls", "1"], env=_env(tmp_path),
                           capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    _, total_2, before_2 = _logged(again.stderr)
    assert before_2 == total and total_2 > total
    logged_2, ended_calls_2 = anyio.run(_log_ids, tmp_path)
    assert logged <= logged_2 and ended_calls <= ended_calls_2  # the earlier calls are still there, by id
    assert len(ended_calls_2) > len(ended_calls)  # and the new run's call joined them


def test_a_bad_scenario_is_refused_with_what_to_use(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "hub.cli", "up", "--scenario", "nope"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert run.returncode == 2
    assert "no scenario 'nope': use demo, quiet or the path of a scenario file" in run.stderr
