"""`masterlinc agent run NAME`: built-in agents by name, third-party agents from an installed package's entry point,
and clear errors for names that are unknown or point at the wrong thing."""

from __future__ import annotations

import signal
import subprocess
import textwrap
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client

from hub.sdk.discovery import AgentLoadError, AgentNotFoundError, available, load_agent
from tests.agents.support import CLI, FAST, CallScript, agent_up, cli_env, lease_owner, publish
from tests.helpers import wait_until

AGENT_CODE = '''
"""A third-party agent, installed as a package: it claims every call that rings."""

from hub.sdk import Agent, CallRinging, Context

agent = Agent("hello", capabilities=["greet"], version="0.3.0")


@agent.on(CallRinging)
async def ring(event: CallRinging, ctx: Context) -> None:
    await ctx.claim()
'''


def install_package(target: Path, entry_points: str, code: str = AGENT_CODE) -> Path:
    """What `pip install --target` leaves: the package and a dist-info with METADATA and entry_points.txt."""
    (target / "hello_agent").mkdir(parents=True)
    (target / "hello_agent" / "__init__.py").write_text(textwrap.dedent(code))
    info = target / "hello_agent-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-agent\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    (info / "RECORD").write_text("")
    return target


def test_built_in_agents_are_found_by_name() -> None:
    assert load_agent("template").name == "template"
    assert [s.origin for s in available() if s.name == "template"] == ["built-in"]


def test_an_unknown_agent_names_the_known_ones() -> None:
    with pytest.raises(AgentNotFoundError, match="no agent named 'nobody'; known agents: .*template"):
        load_agent("nobody")


def test_an_entry_point_must_give_an_agent_of_its_own_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = install_package(
        tmp_path, "[masterlinc.agents]\nhello = hello_agent:agent\nwrong = hello_agent:__doc__\nother = hello_agent:x\n"
    )
    monkeypatch.syspath_prepend(str(site))
    assert {s.name: s.origin for s in available()}["hello"] == "hello-agent"
    assert load_agent("hello").capabilities == ("greet",)
    with pytest.raises(AgentLoadError, match="must be a hub.sdk.Agent"):
        load_agent("wrong")  # a string, not an agent
    with pytest.raises(AgentLoadError, match="failed to load"):
        load_agent("other")


@pytest.mark.anyio
@pytest.mark.nats
async def test_a_third_party_agent_installed_as_a_package_is_found_and_run(
    nc: Client, nats_server: str, tmp_path: Path
) -> None:
    site = install_package(tmp_path / "site", "[masterlinc.agents]\nhello = hello_agent:agent\n")
    env = cli_env(
        nats_server,
        PYTHONPATH=str(site),
        ML_AGENTS__HEARTBEAT_S="0.2",
        ML_AGENTS__PARTITIONS=str(FAST.partitions),
        ML_DATA_DIR=str(tmp_path),
    )
    listed = await anyio.run_process([*CLI, "agent", "list"], env=env, check=True)
    out = listed.stdout.decode()
    assert "hello" in out
    assert "hello-agent" in out
    with subprocess.Popen([*CLI, "agent", "run", "hello"], env=env, stderr=subprocess.PIPE, text=True) as proc:  # noqa: ASYNC220
        try:
            await wait_until(lambda: agent_up(nc, "hello"), timeout=30, what="the packaged agent to register")
            call = CallScript()
            await publish(nc, call.ringing())
            await wait_until(lambda: _owner_is(nc, call.call_id, "hello"), what="the packaged agent's claim")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(proc.wait, 15)
        assert proc.stderr is not None
        logs = proc.stderr.read()
    assert code == 0, logs[-2000:]


def test_agent_run_with_an_unknown_name_fails_with_the_known_names(tmp_path: Path) -> None:
    env = cli_env("nats://127.0.0.1:1", ML_DATA_DIR=str(tmp_path))
    run = subprocess.run([*CLI, "agent", "run", "nobody"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "no agent named 'nobody'" in run.stderr
    assert "template" in run.stderr


async def _owner_is(nc: Client, call_id: str, agent: str) -> bool:
    return await lease_owner(nc, call_id) == agent
