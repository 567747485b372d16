"""``masterlinc agent run routing --rules FILE [--dry-run]`` from the command line: a bad rule file stops it with
the line and the problem, options an agent does not take are refused, a good file runs (dry run included)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client

from tests.agents.support import CLI, FAST, agent_up, cli_env
from tests.helpers import wait_until

GOOD = 'rules:\n  - {name: vip, match: {caller: "+1555*"}, action: {transfer: "101"}}\ndefault: {queue: "8000"}\n'


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = cli_env("nats://127.0.0.1:1", ML_DATA_DIR=str(tmp_path))
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_a_bad_rule_file_stops_the_agent_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "routing.yaml"
    bad.write_text(GOOD.replace("transfer", "teleport"))
    done = run(["agent", "run", "routing", "--rules", str(bad)], tmp_path)
    assert done.returncode == 2
    assert f"{bad}:2: unknown action 'teleport'" in done.stderr


def test_a_rule_file_that_is_not_there_is_named(tmp_path: Path) -> None:
    done = run(["agent", "run", "routing", "--rules", str(tmp_path / "nope.yaml")], tmp_path)
    assert done.returncode == 2 and "cannot read the rule file" in done.stderr


def test_an_agent_that_takes_no_options_refuses_them(tmp_path: Path) -> None:
    done = run(["agent", "run", "template", "--rules", "x.yaml", "--dry-run"], tmp_path)
    assert done.returncode == 2
    assert "agent 'template' takes no options (--rules, --dry-run)" in done.stderr


def test_the_built_in_agents_are_listed(tmp_path: Path) -> None:
    listed = run(["agent", "list"], tmp_path).stdout
    assert {"routing", "crm", "template"} <= {line.split()[0] for line in listed.splitlines() if line.strip()}


@pytest.mark.anyio
@pytest.mark.nats
@pytest.mark.parametrize(("flags", "name"), [([], "routing"), (["--dry-run"], "routing-dry-run")])
async def test_a_good_rule_file_runs_the_agent_until_it_is_stopped(
    nc: Client, nats_server: str, tmp_path: Path, flags: list[str], name: str
) -> None:
    rules = tmp_path / "routing.yaml"
    rules.write_text(GOOD)
    env = cli_env(nats_server, ML_AGENTS__HEARTBEAT_S="0.2", ML_AGENTS__PARTITIONS=str(FAST.partitions),
                  ML_DATA_DIR=str(tmp_path))  # fmt: skip
    args = [*CLI, "agent", "run", "routing", "--rules", str(rules), *flags]
    with subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True) as proc:  # noqa: ASYNC220
        try:
            await wait_until(lambda: agent_up(nc, name), timeout=30, what=f"{name} to register")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(proc.wait, 15)
        assert proc.stderr is not None
        logs = proc.stderr.read()
    assert code == 0, logs[-2000:]
