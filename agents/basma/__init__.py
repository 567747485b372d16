"""Basma, the voice agent: answers calls at the route point, talks, and hands callers to people.

The pipeline (:class:`VoiceSession`): caller audio -> VAD endpointing -> speech-to-text -> a brain (the YAML
receptionist policy offline, an LLM when a key is configured) -> sentences -> text-to-speech -> paced playback, with
barge-in, DTMF, and voice.turn / voice.transcript events. Everything outside the call's logic is a port
(:mod:`agents.basma.ports`) with a live and an in-memory implementation.
"""

from agents.basma.brain import Brain, CallerPressed, CallerSaid, CallStarted, Destination, Toolbox, ToolResult, Turn
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
from agents.basma.session import SessionConfig, SessionResult, VoiceSession
from agents.basma.stt import SpeechToText, SttStream, WhisperConfig, WhisperStt
from agents.basma.tts import EspeakTts, PiperTts, TextToSpeech, offline_tts
from agents.basma.vad import Endpointer, VadConfig

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
    "VoiceConfigError",
    "VoiceError",
    "VoiceSession",
    "WhisperConfig",
    "WhisperStt",
    "load_policy",
    "offline_tts",
    "parse_policy",
]
