"""Helpers shared by the voice tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio

from agents.basma.brain import Brain, Turn
from agents.basma.loopback import LoopbackAudio, MemoryCallControl, MemoryEvents
from agents.basma.policy import Policy, PolicyBrain
from agents.basma.ports import CallInfo
from agents.basma.session import VoiceSession
from agents.basma.settings import SessionConfig
from agents.basma.stt import SpeechToText
from agents.basma.tts import TextToSpeech


def session_for(
    call: CallInfo,
    audio: LoopbackAudio,
    stt: SpeechToText,
    tts: TextToSpeech,
    policy: Policy,
    *,
    brain: Brain | None = None,
    control: MemoryCallControl | None = None,
    config: SessionConfig | None = None,
) -> tuple[VoiceSession, MemoryCallControl, MemoryEvents]:
    control, events = control or MemoryCallControl(), MemoryEvents()
    session = VoiceSession(
        call,
        audio,
        stt=stt,
        tts=tts,
        brain=brain or PolicyBrain(policy),
        control=control,
        destinations=policy.destinations(),
        events=events,
        config=config,
    )
    return session, control, events


async def until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    try:
        with anyio.fail_after(timeout):
            while not condition():  # noqa: ASYNC110 - the session runs in this loop; poll its state between steps
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def agent_turns(turns: list[Turn]) -> list[Turn]:
    return [t for t in turns if t.role == "agent"]
