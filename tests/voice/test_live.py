"""Basma on live calls, end to end with nothing hand-made: a simulated caller speaks (the piper voice) on a
route-point call; ingest publishes the call; the coordinator assigns it to basma; the SDK claims it; Basma hears
the caller over the participant stream (GET), answers through the simulator's real-time playout buffer (POST), and
acts through the worker. What the simulator received is transcribed back; its journal is the ground truth."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import SecretStr

from agents.basma.caller import trim_silence
from agents.basma.policy import Policy, parse_policy
from agents.basma.providers.anthropic import AnthropicBrain
from agents.basma.stt import WhisperStt
from agents.basma.text import wer, words
from agents.basma.tts import PiperTts
from hub.audio.format import FRAME_BYTES
from schemas import subjects
from schemas.events import AgentClaimedCall, AgentHandedOff, CommandAccepted, DtmfReceived, VoiceTranscript, VoiceTurn
from schemas.identity import deterministic_event_id
from tests.agents.support import fresh_connection, lease_owner
from tests.helpers import eventually, wait_until
from tests.voice.conftest import POLICY
from tests.voice.fakes import KEY, AnthropicFake, anthropic_tool
from tests.voice.live import live_rig
from tests.voice.localserver import serving

pytestmark = [pytest.mark.anyio, pytest.mark.nats]

LONG_GREETING = (
    "Hello and thank you for calling Example Company, where every call matters to us. "
    "Our offices are open from nine in the morning to five in the evening, Monday to Friday. "
    "How can I help you today?"
)


@pytest.fixture
async def nc(nats_server: str) -> AsyncIterator[Client]:
    async with fresh_connection(nats_server, "test-voice-live") as client:
        yield client


def long_policy() -> Policy:
    return parse_policy(POLICY.replace('"Hello, how can I help?"', f'"{LONG_GREETING}"'), "long.yaml")


def loud_runs(pcm: bytes, gap_ms: int = 1000, peak: int = 64) -> list[bytes]:
    """The stretches of speech in ``pcm``, split where it is quiet for ``gap_ms`` or more."""
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]
    loud = [bool(np.abs(np.frombuffer(f, dtype=np.int16).astype(np.int32)).max() > peak) for f in frames]
    runs: list[bytes] = []
    start: int | None = None
    quiet = 0
    for i, is_loud in enumerate(loud):
        if is_loud:
            start = i if start is None else start
            quiet = 0
        elif start is not None:
            quiet += 1
            if quiet * 20 >= gap_ms:
                runs.append(b"".join(frames[start : i - quiet + 1]))
                start, quiet = None, 0
    if start is not None:
        runs.append(b"".join(frames[start : len(frames) - quiet]))
    return runs


def voice_tasks() -> list[asyncio.Task[object]]:
    """Live tasks running Basma's code or its audio plumbing."""
    out = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code is not None else ""
        if "agents/basma/" in filename or "hub/audio/" in filename:
            out.append(task)
    return out


async def test_a_caller_is_understood_answered_and_warm_transferred_with_a_summary(
    nc: Client, tmp_path: Path, whisper: WhisperStt, piper: PiperTts, policy: Policy
) -> None:
    async with live_rig(nc, tmp_path, whisper=whisper, piper=piper, policy=policy) as rig:
        call = await rig.call()
        await call.wait_turns(1, "the greeting")
        offset = len(call.playout.pcm)
        asked = await call.say("My internet is broken, I need technical help.")
        await call.wait_turns(2, "the confirmation")
        confirmation = call.session.dialogue[-1]
        # the confirmation alone (the greeting's last frames may still have been in flight at `offset`)
        heard_back = await rig.transcribe(loud_runs(call.received_since(offset))[-1])
        await call.say("Yes, please.")
        result = await call.result()
        events = await rig.logged(
            call.call_id, lambda es: any(isinstance(e, VoiceTranscript) for e in es), "the transcript in the log"
        )
        owner = await lease_owner(nc, call.call_id)

    caller_turns = [t for t in result.dialogue if t.role == "caller"]
    assert wer("My internet is broken, I need technical help.", caller_turns[0].text) <= 0.1
    assert confirmation.text == "You'd like support, is that right?"
    assert wer(confirmation.text, heard_back) <= 0.1, heard_back  # what reached the simulator's playout buffer
    # D§11 on the simulator's ground truth: end of the caller's speech -> first loud reply frame it received
    [reply] = [r for r in call.playout.replies if asked.end < r.first_loud_received_at < asked.end + 5]
    assert 0 < reply.first_loud_received_at - asked.end < 3.0
    assert call.playout.underruns == []

    assert result.outcome == "transferred"
    assert result.dialogue[-1].text == "Putting you through to support now."
    assert call.requests() == ["attach_participant_data", "transferto"]  # D§7: the summary first, then the transfer
    [ringing] = rig.sim.engine.participants("102")
    summary = rig.sim.engine.calls[ringing.callid].attached["summary"]
    assert summary.startswith("Caller asked for support.") and "broken" in summary
    assert owner is None  # the handoff released the lease

    [claimed] = [e for e in events if isinstance(e, AgentClaimedCall)]
    assert claimed.data.agent == "basma"
    [handoff] = [e for e in events if isinstance(e, AgentHandedOff)]
    assert (handoff.data.from_agent, handoff.data.to_extension) == ("basma", "102")
    assert handoff.data.summary == summary and handoff.data.context["destination"] == "support"
    turns = [e for e in events if isinstance(e, VoiceTurn)]
    assert [(t.data.role, t.data.text) for t in turns] == [(t.role, t.text) for t in result.dialogue]
    assert turns[0].event_id == deterministic_event_id("voice.turn", "main", call.call_id, "basma", 0)
    assert all(t.data.latency_ms is not None and t.data.latency_ms > 0 for t in turns[1:])
    assert {t.issued_by for t in turns} == {"agent:basma"}
    [transcript] = [e for e in events if isinstance(e, VoiceTranscript)]
    assert [line.text for line in transcript.data.lines] == [t.text for t in result.dialogue]
    assert "Outcome: transferred" in transcript.data.summary


async def test_barge_in_stops_the_playout_and_the_dialogue_keeps_what_was_played(
    nc: Client, tmp_path: Path, whisper: WhisperStt, piper: PiperTts
) -> None:
    async with live_rig(nc, tmp_path, whisper=whisper, piper=piper, policy=long_policy()) as rig:
        call = await rig.call()
        await eventually(lambda: len(call.playout.pcm) >= 16 * 2500, what="2.5 s of the greeting received")
        said = await call.say("I would like to talk to someone about my bill, please.")
        await eventually(lambda: bool(call.session.barge_ins), what="the barge-in")
        await call.wait_turns(2, "the reply to what the caller said")
        call.hang_up()
        result = await call.result()

    greeting, *_ = call.playout.replies
    # the greeting stops: the cut comes 200 ms into the caller's speech, plus what was already buffered (<= 500 ms)
    assert greeting.last_loud_played_at - said.start < 1.2
    assert greeting.underruns == 0
    # nothing more of the greeting: Basma's next words start after the caller finished
    assert call.playout.replies[1].first_loud_played_at > said.end
    kept = result.dialogue[0]
    assert kept.role == "agent" and kept.interrupted
    full, heard = words(LONG_GREETING), words(kept.text)
    assert 0 < len(heard) < len(full) and full[: len(heard)] == heard
    # the dialogue keeps what the simulator played (the cut inside a sentence is an estimate: +- a word or two)
    played = await rig.transcribe(loud_runs(bytes(call.playout.pcm))[0])
    assert abs(len(words(played)) - len(heard)) <= 3, (played, kept.text)
    assert wer(kept.text, played) * len(heard) <= 3, (played, kept.text)  # at most three words off, in any way
    assert result.dialogue[2].text == "You'd like billing, is that right?"


async def test_a_key_press_from_ingest_interrupts_and_routes_the_caller(
    nc: Client, tmp_path: Path, whisper: WhisperStt, piper: PiperTts
) -> None:
    async with live_rig(nc, tmp_path, whisper=whisper, piper=piper, policy=long_policy()) as rig:
        call = await rig.call()
        await eventually(lambda: len(call.playout.replies) == 1, what="the greeting to start")
        rig.sim.engine.send_dtmf(call.call.callid, "2")
        result = await call.result()
        events = await rig.logged(
            call.call_id, lambda es: any(isinstance(e, VoiceTranscript) for e in es), "the transcript in the log"
        )

    [dtmf] = [e for e in events if isinstance(e, DtmfReceived)]  # ingest's event, the only input
    assert dtmf.data.digits == "2"
    assert [(t.role, t.text, t.dtmf) for t in result.dialogue if t.role == "caller"] == [("caller", "2", True)]
    greeting, routing = [t for t in result.dialogue if t.role == "agent"]
    assert greeting.interrupted and routing.text == "Putting you through to support now."
    assert result.outcome == "transferred"
    assert call.requests() == ["attach_participant_data", "transferto"]
    transfer = next(e for e in rig.sim.journal.of("request") if str(e.detail["path"]).endswith("/transferto"))
    # the routing sentence was played out before the transfer
    assert transfer.at >= call.playout.replies[-1].last_loud_played_at - 0.05
    assert "pressed 2" in rig.sim.engine.calls[call.call.callid].attached["summary"]


async def test_a_hang_up_mid_sentence_ends_the_session_with_no_task_left_and_no_error(
    nc: Client, tmp_path: Path, whisper: WhisperStt, piper: PiperTts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with live_rig(nc, tmp_path, whisper=whisper, piper=piper, policy=long_policy()) as rig:
        call = await rig.call()
        tapped: list[bytes] = []

        async def on_tap(msg: Msg) -> None:
            tapped.append(msg.data)

        tap = await nc.subscribe(subjects.audio_tap_subject("main", call.call_id, call.leg.id), cb=on_tap)
        await eventually(lambda: call.loud_ms() >= 1000, what="a second of the greeting received")
        call.hang_up()
        result = await call.result(timeout=5)
        await eventually(lambda: not voice_tasks(), timeout=5, what="every voice task to finish")
        await wait_until(lambda: _no_owner(nc, call.call_id), what="the lease to be released at call.ended")
        events = await rig.logged(
            call.call_id, lambda es: any(isinstance(e, VoiceTranscript) for e in es), "the transcript in the log"
        )
        assert rig.basma.calls == {}
        await tap.unsubscribe()

    assert result.outcome == "hung_up"
    [greeting] = result.dialogue
    assert greeting.interrupted and 0 < len(words(greeting.text)) < len(words(LONG_GREETING))
    assert call.requests() == []  # no command: the caller left
    assert rig.basma.finished[call.call_id] is result
    [transcript] = [e for e in events if isinstance(e, VoiceTranscript)]
    assert "the caller hung up" in transcript.data.summary
    # Basma's voice went to the leg's audio tap too (a hub-side recording mixes it in): what the simulator got, and
    # at most the writer's lead more (frames sent as the caller hung up, which the leg no longer took)
    voiced, received = trim_silence(b"".join(tapped)), trim_silence(bytes(call.playout.pcm))
    assert len(received) > 16 * 500 and voiced.startswith(received)
    assert len(voiced) - len(received) <= 16 * 600
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r.getMessage() for r in caplog.records if r.name.startswith("agents.basma")] == []


async def _no_owner(nc: Client, call_id: str) -> bool:
    return await lease_owner(nc, call_id) is None


async def test_a_call_whose_audio_is_refused_goes_to_the_fallback_person_with_the_reason(
    nc: Client, tmp_path: Path, whisper: WhisperStt, piper: PiperTts, policy: Policy
) -> None:
    async with live_rig(nc, tmp_path, whisper=whisper, piper=piper, policy=policy) as rig:
        call = rig.sim.engine.place_call("+15550100", "800")
        leg = rig.sim.route_point_leg(call.callid)
        rig.sim.faults.rest_errors(status=503, seconds=60, paths=f"/callcontrol/800/participants/{leg.id}/stream")
        await eventually(lambda: bool(rig.sim.engine.participants("100")), what="reception's phone to ring")
        [ringing] = rig.sim.engine.participants("100")
        attached = dict(rig.sim.engine.calls[ringing.callid].attached)
        await eventually(lambda: not rig.basma.calls, what="the session to end")
        [call_id] = rig.basma.finished
        owner = await lease_owner(nc, call_id)

    assert "could not open the call's audio" in attached["summary"] and "HTTP 503" in attached["summary"]
    actions = [str(e.detail["path"]).rsplit("/", 1)[-1] for e in rig.sim.journal.of("request")]
    assert [a for a in actions if a in ("attach_participant_data", "transferto")] == [
        "attach_participant_data",
        "transferto",
    ]
    assert owner is None  # handed to a person: the lease is released


@pytest.mark.parametrize(("tool", "outcome", "action"), [("park_call", "parked", "transferto"),
                                                          ("end_call", "dropped", "drop")])  # fmt: skip
async def test_the_llm_parks_or_ends_the_call_it_owns_and_the_worker_carries_it_out(
    nc: Client,
    tmp_path: Path,
    whisper: WhisperStt,
    piper: PiperTts,
    policy: Policy,
    tool: str,
    outcome: str,
    action: str,
) -> None:
    """The Anthropic brain (against a fake Messages API) calls a tool; the command is bound to the call and leg Basma
    owns, issued as agent:basma, and reaches the PBX through the worker."""
    fake = AnthropicFake([anthropic_tool("One moment please.", "toolu_01", tool, {})])
    async with serving(fake.app()) as url, httpx.AsyncClient() as http:

        def brain() -> AnthropicBrain:
            return AnthropicBrain(http, SecretStr(KEY), greeting="Hello, how can I help?", base_url=f"{url}/v1")

        async with live_rig(nc, tmp_path, whisper=whisper, piper=piper, policy=policy, new_brain=brain) as rig:
            call = await rig.call()
            await call.wait_turns(1, "the greeting")
            await call.say("Could you put me on hold for a minute?")
            result = await call.result()
            accepted = await rig.logged(call.call_id, lambda es: any(isinstance(e, CommandAccepted) for e in es),
                                        "the command in the log")  # fmt: skip
    assert result.outcome == outcome
    assert call.requests() == [action]
    [command] = [e.data.command for e in accepted if isinstance(e, CommandAccepted)]
    assert (command["issued_by"], command["call_id"]) == ("agent:basma", call.call_id)
    assert command["leg"]["participant_id"] == call.leg.id
    assert {t["name"] for t in fake.requests[0]["tools"]} >= {"park_call", "end_call", "transfer_to_human"}
    assert "hold" in fake.requests[0]["messages"][-1]["content"]  # the caller's words reached the model
