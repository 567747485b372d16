"""Basma as an agent of the SDK: found by name, run by ``masterlinc agent run basma`` (it answers a call from the
simulator through the whole hub), a clear error without the extras, settings from ``ML_VOICE__...``, and command
ids that stay stable under redelivery while a second attempt gets its own."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from nats.aio.client import Client

from agents.basma.control import SdkCallControl
from agents.basma.tts import PiperTts
from hub.config import load_settings
from hub.sdk import Drop, Park, SendMessage
from hub.sdk.discovery import available
from schemas import commands as c
from schemas.common import LegRef
from tests.agents.support import CLI, FAST, PBX, ROUTE_POINT, agent_up, cli_env, fresh_connection
from tests.helpers import eventually, wait_until
from tests.voice.live import hub_rig

LEG = LegRef(dn="800", participant_id=7, legid=1)


@pytest.fixture
async def nc(nats_server: str) -> AsyncIterator[Client]:
    async with fresh_connection(nats_server, "test-voice-agent") as client:
        yield client


def test_basma_is_a_built_in_agent() -> None:
    [source] = [s for s in available() if s.name == "basma"]
    assert (source.origin, source.target) == ("built-in", "agents.basma.agent:create")


def test_voice_settings_come_from_the_environment_with_secrets_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_VOICE__TTS", "espeak")
    monkeypatch.setenv("ML_VOICE__SESSION__VAD__TRAILING_SILENCE_MS", "300")
    monkeypatch.setenv("ML_VOICE__ANTHROPIC_API_KEY", "sk-ant-very-secret-42")
    settings = load_settings()
    assert settings.voice.tts == "espeak" and settings.voice.session.vad.trailing_silence_ms == 300
    assert settings.voice.uses_llm and settings.voice.token_source == "owner"
    shown = repr(settings) + settings.model_dump_json()
    assert "sk-ant-very-secret-42" not in shown


def test_agent_run_basma_without_the_voice_extra_names_the_extras(tmp_path: Path) -> None:
    hide = "import sys\nfor m in ('faster_whisper', 'webrtcvad', 'soxr'): sys.modules[m] = None\n"
    code = hide + "from hub.cli import main\nsys.argv = ['masterlinc', 'agent', 'run', 'basma']\nmain()\n"
    env = cli_env("nats://127.0.0.1:1", ML_DATA_DIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "agent 'basma' cannot run" in run.stderr
    assert "(webrtcvad-wheels, soxr, faster-whisper) is not installed" in run.stderr
    assert "pip install 'masterlinc[voice,voice-piper]'" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.anyio
@pytest.mark.nats
async def test_agent_run_basma_answers_a_route_point_call_through_the_hub(
    nc: Client, nats_server: str, tmp_path: Path, piper: PiperTts
) -> None:
    async with hub_rig(nc, tmp_path, piper) as hub:
        env = cli_env(
            nats_server,
            HF_HUB_OFFLINE="1",
            ML_DATA_DIR=str(tmp_path),
            ML_AGENTS__HEARTBEAT_S="0.2",
            ML_AGENTS__LEASE_S="2",
            ML_AGENTS__PARTITIONS=str(FAST.partitions),
            ML_PBXS__0__ID=PBX,
            ML_PBXS__0__BASE_URL=hub.sim.base_url,
            ML_PBXS__0__CLIENT_ID=ROUTE_POINT,  # no secret: the token comes from ingest (ML_VOICE__TOKEN_SOURCE=owner)
            ML_VOICE__SESSION__VAD__TRAILING_SILENCE_MS="300",
        )
        with (
            (tmp_path / "basma.log").open("w+") as log,
            subprocess.Popen([*CLI, "agent", "run", "basma"], env=env, stderr=log) as proc,  # noqa: ASYNC220
        ):
            try:
                await wait_until(lambda: agent_up(nc, "basma"), timeout=60, what="basma to register")
                await eventually(lambda: hub.coordinator.is_up("basma"), what="the coordinator to see basma")
                call = hub.sim.engine.place_call("+15550100", ROUTE_POINT, did="+15550199")
                leg = hub.sim.route_point_leg(call.callid)
                await eventually(lambda: _greeted(hub.sim.playout, leg.id), timeout=30, what="basma's greeting")
                hub.sim.engine.hangup(call.callid)
            finally:
                proc.send_signal(signal.SIGTERM)
                code = await anyio.to_thread.run_sync(proc.wait, 20)
            log.seek(0)
            logs = log.read()
    assert code == 0, logs[-3000:]
    assert "voice agent ready" in logs
    assert "Traceback" not in logs


def _greeted(playout: Any, participant_id: int) -> bool:
    try:
        return bool(playout(participant_id).replies)
    except Exception:  # the leg's media does not exist yet
        return False


class RecordingContext:
    """Stands in for the SDK context (what these tests are not about): records what the control asked of it."""

    def __init__(self, results: list[bool]) -> None:
        self.results = results
        self.sent: list[tuple[str, str, Any]] = []
        self.released: list[str] = []

    def _result(self, name: str) -> c.CommandResult:
        ok = self.results.pop(0) if self.results else True
        error = None if ok else {"code": "invalid_state", "message": "leg not connected"}
        return c.CommandResult.model_validate({"command_id": f"cmd-{len(self.sent)}", "ok": ok, "error": error})

    async def handoff(self, **kwargs: Any) -> c.CommandResult:
        self.sent.append(("handoff", kwargs["purpose"], kwargs))
        return self._result("handoff")

    async def send(self, command_type: type[c.CommandBase], **kwargs: Any) -> c.CommandResult:
        self.sent.append((command_type.NAME, kwargs["purpose"], kwargs))
        return self._result(command_type.NAME)

    async def release(self, reason: str = "") -> bool:
        self.released.append(reason)
        return True


@pytest.mark.anyio
async def test_each_action_has_its_own_purpose_so_a_retry_is_not_answered_with_the_first_result() -> None:
    ctx = RecordingContext([False, True, False, True, True, True])
    control = SdkCallControl(ctx, LEG)  # type: ignore[arg-type]
    first = await control.transfer("102", "Caller asked for support.", {"destination": "support"})
    second = await control.transfer("100", "Fallback.", None)
    parked_failed = await control.park()
    parked = await control.park()
    await control.drop()
    await control.send_message("+15550100", "Our hours: 9-5.")

    assert (first.ok, first.code, second.ok) == (False, "invalid_state", True)
    assert [(name, purpose) for name, purpose, _ in ctx.sent] == [
        ("handoff", "handoff.1"),
        ("handoff", "handoff.2"),
        (Park.NAME, "park.1"),
        (Park.NAME, "park.2"),
        (Drop.NAME, "drop.1"),
        (SendMessage.NAME, "send_message.1"),
    ]
    handoff = ctx.sent[0][2]
    assert (handoff["to_extension"], handoff["summary"], handoff["context"]) == (
        "102",
        "Caller asked for support.",
        {"destination": "support"},
    )
    assert ctx.sent[2][2]["leg"] == LEG  # bound to the owned leg
    assert not parked_failed.ok and parked.ok
    assert ctx.released == ["parked"]  # only the park that worked lets the call go
    assert ctx.sent[5][2]["args"].model_dump() == {"to": "+15550100", "text": "Our hours: 9-5."}
