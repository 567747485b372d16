"""Building the providers a :class:`VoiceConfig` chooses (offline by default): one :class:`VoiceStack` per process.

The settings themselves are in :mod:`agents.basma.settings` (no speech library needed to read them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from agents.basma.brain import Brain
from agents.basma.policy import Policy, PolicyBrain, load_policy
from agents.basma.settings import DEFAULT_POLICY, VoiceConfig
from agents.basma.stt import SpeechToText, WhisperStt
from agents.basma.tts import PiperTts, TextToSpeech, offline_tts

__all__ = ["DEFAULT_POLICY", "VoiceConfig", "VoiceStack", "build_stack", "preload"]


@dataclass
class VoiceStack:
    """What one process shares between its calls; ``new_brain()`` makes a call's own brain."""

    stt: SpeechToText
    tts: TextToSpeech
    policy: Policy
    new_brain: Callable[[], Brain]


def build_stack(config: VoiceConfig, http: httpx.AsyncClient) -> VoiceStack:
    policy = load_policy(config.policy_file)
    stt: SpeechToText
    if config.stt == "openai":
        from agents.basma.providers.openai import OpenAiStt

        assert config.openai_api_key is not None
        stt = OpenAiStt(http, config.openai_api_key, model=config.openai_stt_model, base_url=config.openai_base_url)
    elif config.stt == "deepgram":
        from agents.basma.providers.deepgram import DeepgramStt

        assert config.deepgram_api_key is not None
        stt = DeepgramStt(config.deepgram_api_key, url=config.deepgram_url, model=config.deepgram_model)
    else:
        stt = WhisperStt(config.whisper)
    tts: TextToSpeech
    if config.tts == "openai":
        from agents.basma.providers.openai import OpenAiTts

        assert config.openai_api_key is not None
        tts = OpenAiTts(
            http, config.openai_api_key, model=config.openai_tts_model, voice=config.openai_voice,
            base_url=config.openai_base_url,
        )  # fmt: skip
    elif config.tts == "elevenlabs":
        from agents.basma.providers.elevenlabs import ElevenLabsTts

        assert config.elevenlabs_api_key is not None
        assert config.elevenlabs_voice_id is not None
        tts = ElevenLabsTts(
            http, config.elevenlabs_api_key, voice_id=config.elevenlabs_voice_id, model_id=config.elevenlabs_model,
            base_url=config.elevenlabs_base_url,
        )  # fmt: skip
    else:
        tts = offline_tts(config.tts)

    def new_brain() -> Brain:
        if config.uses_llm:
            from agents.basma.providers.anthropic import AnthropicBrain

            assert config.anthropic_api_key is not None
            fallback = policy.fallback.name if policy.fallback is not None else None
            return AnthropicBrain(
                http, config.anthropic_api_key, greeting=policy.greeting, company=config.company, fallback=fallback,
                model=config.anthropic_model, base_url=config.anthropic_base_url,
            )  # fmt: skip
        return PolicyBrain(policy)

    return VoiceStack(stt=stt, tts=tts, policy=policy, new_brain=new_brain)


def preload(stack: VoiceStack) -> None:
    """Load the offline models now (once per process; blocking: run it in a thread), not on the first call."""
    if isinstance(stack.stt, WhisperStt):
        stack.stt.load()
    if isinstance(stack.tts, PiperTts):
        stack.tts.load()
