"""A simulated caller speaks through a phone line; Basma transcribes, answers, and its reply is transcribed back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
import pytest

from agents.basma.brain import Turn
from agents.basma.loopback import LoopbackAudio, MemoryCallControl, MemoryEvents
from agents.basma.policy import Policy, PolicyBrain
from agents.basma.ports import CallInfo
from agents.basma.session import VoiceSession
from agents.basma.stt import WhisperStt
from agents.basma.text import wer
from agents.basma.tts import PiperTts
from tests.voice.conftest import caller_speech

pytestmark = pytest.mark.anyio


def session_for(
    call: CallInfo, audio: LoopbackAudio, whisper: WhisperStt, piper: PiperTts, policy: Policy
) -> tuple[VoiceSession, MemoryCallControl, MemoryEvents]:
    control, events = MemoryCallControl(), MemoryEvents()
    session = VoiceSession(
        call,
        audio,
        stt=whisper,
        tts=piper,
        brain=PolicyBrain(policy),
        control=control,
        destinations=policy.destinations(),
        events=events,
    )
    return session, control, events


async def until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - the session runs in this loop; poll its state between steps
            await asyncio.sleep(0.02)


def agent_turns(turns: list[Turn]) -> list[Turn]:
    return [t for t in turns if t.role == "agent"]


async def run_in_background(session: VoiceSession) -> Awaitable[object]:
    return asyncio.create_task(session.run())


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
