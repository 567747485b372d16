"""`masterlinc up` smoke test: starts, says ready, records calls, stops cleanly on Ctrl-C, keeps its data."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.nats


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_") and k not in {"NATS_URL", "DATABASE_URL"}}
    env["ML_DATA_DIR"] = str(data_dir)
    return env


def _logged(stderr: str) -> tuple[int, int]:
    match = re.search(r"(\d+) event\(s\) in the log \(was (\d+)\)", stderr)
    assert match, stderr[-2000:]
    return int(match[1]), int(match[2])


def test_up_records_calls_and_keeps_them_across_restarts(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "hub.cli", "up", "--calls", "2"]
    first = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=90, check=False)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "ready" in first.stderr
    total, before = _logged(first.stderr)
    assert before == 0
    assert total >= 8  # two calls of at least four events each
    second = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=90, check=False)
    assert second.returncode == 0, second.stderr[-2000:]
    total_2, before_2 = _logged(second.stderr)
    assert before_2 == total
    assert total_2 >= total + 8
    assert (tmp_path / "events.db").exists()
    assert (tmp_path / "jetstream").is_dir()


def test_ctrl_c_stops_everything_in_bounded_time(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "up"], env=_env(tmp_path), stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        for line in proc.stderr:
            if line.startswith("ready"):
                break
            assert time.monotonic() < deadline, "never said ready"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        rest = proc.stderr.read()
    assert "stopped after" in rest
    leftover = subprocess.run(
        ["pgrep", "-f", "--", f"{tmp_path}/jetstream"], capture_output=True, text=True, check=False
    )
    assert leftover.returncode in (0, 1), leftover.stderr
    assert leftover.stdout.strip() == "", "the embedded nats-server outlived `up`"
