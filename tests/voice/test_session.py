"""The conversation's edges: barge-in, DTMF, hang-up mid-sentence, a failed transfer."""

from __future__ import annotations

import asyncio

import pytest

from agents.basma.loopback import LoopbackAudio, MemoryCallControl, frame_is_voiced
from agents.basma.policy import Policy, parse_policy
from agents.basma.ports import CallInfo, ControlResult
from agents.basma.stt import WhisperStt
from agents.basma.text import words
from agents.basma.tts import PiperTts
from schemas.events import VoiceTranscript, VoiceTurn
from tests.voice.conftest import POLICY, caller_speech
from tests.voice.support import agent_turns, session_for, until

pytestmark = pytest.mark.anyio

LONG_GREETING = (
    "Hello and thank you for calling Example Company, where every call matters to us. "
    "Our offices are open from nine in the morning to five in the evening, Monday to Friday. "
    "How can I help you today?"
)


def long_policy() -> Policy:
    return parse_policy(POLICY.replace('"Hello, how can I help?"', f'"{LONG_GREETING}"'), "long.yaml")


def voiced_ms(audio: LoopbackAudio) -> float:
    return 20.0 * sum(1 for _, f in audio.received if frame_is_voiced(f))


async def test_barge_in_stops_playback_flushes_the_queue_and_keeps_only_what_was_heard(
    call: CallInfo, whisper: WhisperStt, piper: PiperTts
) -> None:
    audio = LoopbackAudio(realtime=True)
    session, _, events = session_for(call, audio, whisper, piper, long_policy())
    task = asyncio.create_task(session.run())
    await until(lambda: voiced_ms(audio) >= 1500, "1.5 s of the greeting at the far end")
    utterance = audio.say(caller_speech("Billing, please."), trailing_silence_ms=600)
    await until(lambda: bool(session.barge_ins), "the barge-in")
    [barge] = session.barge_ins
    assert audio.writer.queued_ms == 0
    assert barge.dropped_ms > 1000  # queued audio of the ~10 s greeting was flushed (how much: TTS speed vs playout)
    await until(utterance.done.is_set, "the caller's utterance to be sent")
    await until(lambda: len(agent_turns(session.dialogue)) == 2, "the reply to the barge-in")
    audio.hang_up()
    result = await asyncio.wait_for(task, 10)

    assert utterance.speech_start is not None and utterance.speech_end is not None
    assert barge.at - utterance.speech_start < 0.5  # 200 ms of speech to decide, plus VAD onset
    # nothing of the greeting reached the far end after the cut (the next reply starts after the caller finished)
    assert [t for t in audio.voiced_arrivals(barge.at + 0.02) if t < utterance.speech_end] == []

    greeting = agent_turns(result.dialogue)[0]
    assert greeting.interrupted
    heard, full = words(greeting.text), words(LONG_GREETING)
    assert 0 < len(heard) < len(full) and full[: len(heard)] == heard
    assert abs(barge.heard_ms - 2000) < 800  # 1.5 s heard plus up to the writer's 500 ms lead
    assert agent_turns(result.dialogue)[1].text == "You'd like billing, is that right?"
    turns = [e for e in events.events if isinstance(e, VoiceTurn)]
    assert turns[0].data.interrupted and turns[0].data.text == greeting.text
    [transcript] = [e for e in events.events if isinstance(e, VoiceTranscript)]
    assert transcript.data.lines[0].text == greeting.text


async def test_a_key_press_interrupts_and_routes_without_asking_to_confirm(
    call: CallInfo, whisper: WhisperStt, piper: PiperTts
) -> None:
    audio = LoopbackAudio()
    session, control, events = session_for(call, audio, whisper, piper, long_policy())
    task = asyncio.create_task(session.run())
    await until(lambda: voiced_ms(audio) >= 400, "the greeting to start")
    session.dtmf("2")
    result = await asyncio.wait_for(task, 20)

    assert result.outcome == "transferred"
    [(name, args)] = control.calls
    assert name == "transfer" and args["to"] == "102"
    assert "support" in (args["summary"] or "") and "pressed 2" in (args["summary"] or "")
    caller = [t for t in result.dialogue if t.role == "caller"]
    assert [(t.text, t.dtmf) for t in caller] == [("2", True)]
    greeting, routing = agent_turns(result.dialogue)
    assert greeting.interrupted and not routing.interrupted
    assert routing.text == "Putting you through to support now."
    # the transfer happened only after the routing sentence had reached the far end and been played
    [transferred_at] = control.times
    assert audio.voiced_arrivals(transferred_at) == []
    assert result.summary.startswith("Caller asked for support.")
    [transcript] = [e for e in events.events if isinstance(e, VoiceTranscript)]
    assert "Outcome: transferred" in transcript.data.summary


async def test_hang_up_mid_sentence_ends_the_session_cleanly(
    call: CallInfo, whisper: WhisperStt, piper: PiperTts
) -> None:
    before = asyncio.all_tasks()
    audio = LoopbackAudio()
    session, control, events = session_for(call, audio, whisper, piper, long_policy())
    task = asyncio.create_task(session.run())
    await until(lambda: voiced_ms(audio) >= 800, "the greeting to be under way")
    audio.hang_up()
    result = await asyncio.wait_for(task, 3)

    assert result.outcome == "hung_up"
    [greeting] = result.dialogue
    assert greeting.interrupted and 0 < len(words(greeting.text)) < len(words(LONG_GREETING))
    assert control.calls == []
    assert isinstance(events.events[-1], VoiceTranscript)
    assert "the caller hung up" in events.events[-1].data.summary
    assert asyncio.all_tasks() - before == set()  # listener, talker, far end and publisher all finished


async def test_a_failed_transfer_is_said_and_the_call_goes_on(
    call: CallInfo, whisper: WhisperStt, piper: PiperTts, policy: Policy
) -> None:
    audio = LoopbackAudio()
    control = MemoryCallControl(ControlResult(ok=False, code="invalid_state", message="leg not connected"))
    session, _, _ = session_for(call, audio, whisper, piper, policy, control=control)
    task = asyncio.create_task(session.run())
    await until(lambda: len(agent_turns(session.dialogue)) == 1, "the greeting")
    session.dtmf("1")
    await until(lambda: len(agent_turns(session.dialogue)) == 2, "the answer to the key press")
    audio.hang_up()
    result = await asyncio.wait_for(task, 10)

    assert result.outcome == "hung_up"
    assert control.calls[0][0] == "transfer"
    assert "could not put you through" in agent_turns(result.dialogue)[1].text
