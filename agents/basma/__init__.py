"""Basma, the voice agent: answers calls at the route point, talks, and hands callers to people.

The pipeline (:class:`VoiceSession`): caller audio -> VAD endpointing -> speech-to-text -> a brain (the YAML
receptionist policy offline, an LLM when a key is configured) -> sentences -> text-to-speech -> paced playback, with
barge-in, DTMF, and voice.turn / voice.transcript events. Everything outside the call's logic is a port
(:mod:`agents.basma.ports`) with a live and an in-memory implementation. :mod:`agents.basma.agent` makes it an agent
of the SDK (``masterlinc agent run basma``).

Every name but the settings is imported on first use: the hub's settings import :mod:`agents.basma.settings` in
every process, which must cost nothing and need no speech library (numpy and the rest come with the ``voice``
extra).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agents.basma.settings import SessionConfig, VadConfig, VoiceConfig, WhisperConfig

if TYPE_CHECKING:
    from agents.basma.brain import (
        Brain,
        CallerPressed,
        CallerSaid,
        CallStarted,
        Destination,
        Toolbox,
        ToolResult,
        Turn,
    )
    from agents.basma.errors import (
        AudioStreamError,
        MissingExtra,
        PolicyError,
        ProviderError,
        VoiceConfigError,
        VoiceError,
    )
    from agents.basma.policy import Policy, PolicyBrain, load_policy, parse_policy
    from agents.basma.ports import AudioPort, CallControl, CallInfo, ControlResult, EventSink, ReplyWriter
    from agents.basma.session import SessionResult, VoiceSession
    from agents.basma.stt import SpeechToText, SttStream, WhisperStt
    from agents.basma.tts import EspeakTts, PiperTts, TextToSpeech, offline_tts
    from agents.basma.vad import Endpointer

_LAZY = {
    **dict.fromkeys(
        ("Brain", "CallerPressed", "CallerSaid", "CallStarted", "Destination", "Toolbox", "ToolResult", "Turn"),
        "agents.basma.brain",
    ),
    **dict.fromkeys(
        ("AudioStreamError", "MissingExtra", "PolicyError", "ProviderError", "VoiceConfigError", "VoiceError"),
        "agents.basma.errors",
    ),
    **dict.fromkeys(("Policy", "PolicyBrain", "load_policy", "parse_policy"), "agents.basma.policy"),
    **dict.fromkeys(
        ("AudioPort", "CallControl", "CallInfo", "ControlResult", "EventSink", "ReplyWriter"), "agents.basma.ports"
    ),
    "SessionResult": "agents.basma.session",
    "VoiceSession": "agents.basma.session",
    "SpeechToText": "agents.basma.stt",
    "SttStream": "agents.basma.stt",
    "WhisperStt": "agents.basma.stt",
    "EspeakTts": "agents.basma.tts",
    "PiperTts": "agents.basma.tts",
    "TextToSpeech": "agents.basma.tts",
    "offline_tts": "agents.basma.tts",
    "Endpointer": "agents.basma.vad",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agents.basma' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AudioPort",
    "AudioStreamError",
    "Brain",
    "CallControl",
    "CallInfo",
    "CallStarted",
    "CallerPressed",
    "CallerSaid",
    "ControlResult",
    "Destination",
    "Endpointer",
    "EspeakTts",
    "EventSink",
    "MissingExtra",
    "PiperTts",
    "Policy",
    "PolicyBrain",
    "PolicyError",
    "ProviderError",
    "ReplyWriter",
    "SessionConfig",
    "SessionResult",
    "SpeechToText",
    "SttStream",
    "TextToSpeech",
    "ToolResult",
    "Toolbox",
    "Turn",
    "VadConfig",
    "VoiceConfig",
    "VoiceConfigError",
    "VoiceError",
    "VoiceSession",
    "WhisperConfig",
    "WhisperStt",
    "load_policy",
    "offline_tts",
    "parse_policy",
]
