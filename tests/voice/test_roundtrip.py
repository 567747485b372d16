"""A simulated caller speaks through a phone line; Basma transcribes, answers, and its reply is transcribed back."""

from __future__ import annotations

import asyncio

import pytest

from agents.basma.loopback import LoopbackAudio
from agents.basma.policy import Policy
from agents.basma.ports import CallInfo
from agents.basma.stt import WhisperStt
from agents.basma.text import wer
from agents.basma.tts import PiperTts
from tests.voice.conftest import caller_speech
from tests.voice.support import agent_turns, session_for, until

pytestmark = pytest.mark.anyio


async def test_caller_is_understood_and_the_reply_reaching_the_far_end_is_intelligible(
    call: CallInfo, whisper: WhisperStt, piper: PiperTts, policy: Policy
) -> None:
    audio = LoopbackAudio()
    session, control, events = session_for(call, audio, whisper, piper, policy)
    task = asyncio.create_task(session.run())
    await until(lambda: len(agent_turns(session.dialogue)) == 1, "the greeting to be played")
    mark = len(audio.received)

    spoken = "I have a question about my bill."
    audio.say(caller_speech(spoken), trailing_silence_ms=600)
    await until(lambda: len(agent_turns(session.dialogue)) == 2, "the confirmation to be played")
    audio.hang_up()
    result = await asyncio.wait_for(task, 10)

    caller = next(t for t in result.dialogue if t.role == "caller")
    assert wer(spoken, caller.text) <= 0.1, caller.text
    reply_text = "You'd like billing, is that right?"
    assert agent_turns(result.dialogue)[1].text == reply_text
    heard_back = await whisper.transcribe(audio.reply_audio(mark))
    assert wer(reply_text, heard_back) <= 0.1, heard_back
    assert result.outcome == "hung_up"
    assert control.calls == []
    assert [e.type_name() for e in events.events][-1] == "voice.transcript"
