"""Which providers Basma uses, chosen by configuration (offline by default), and building them.

Offline: faster-whisper + piper (or espeak-ng) + the YAML policy. Cloud pieces replace one stage each: ``stt:
openai|deepgram``, ``tts: openai|elevenlabs``, and the Anthropic LLM replaces the policy's dialogue when its key is
set (``brain: auto``); the policy file still gives the greeting, the destinations and the fallback. Keys are
:class:`pydantic.SecretStr`: never in ``repr``, dumps, logs or errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from agents.basma.brain import Brain
from agents.basma.policy import Policy, PolicyBrain, load_policy
from agents.basma.session import SessionConfig
from agents.basma.stt import SpeechToText, WhisperConfig, WhisperStt
from agents.basma.tts import TextToSpeech, offline_tts

DEFAULT_POLICY = Path(__file__).with_name("default_policy.yaml")


class VoiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy_file: Path = DEFAULT_POLICY
    stt: Literal["whisper", "openai", "deepgram"] = "whisper"
    tts: Literal["auto", "piper", "espeak", "openai", "elevenlabs"] = "auto"
    brain: Literal["auto", "policy", "anthropic"] = Field(
        default="auto", description="auto: the Anthropic LLM when anthropic_api_key is set, else the policy"
    )
    company: str = "us"
    whisper: WhisperConfig = Field(default_factory=WhisperConfig)
    session: SessionConfig = Field(default_factory=SessionConfig)
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_stt_model: str = "gpt-4o-mini-transcribe"
    openai_tts_model: str = "gpt-4o-mini-tts"
    openai_voice: str = "alloy"
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com/v1"
    anthropic_model: str = "claude-sonnet-4-5"
    deepgram_api_key: SecretStr | None = None
    deepgram_url: str = "wss://api.deepgram.com/v1/listen"
    deepgram_model: str = "nova-3"
    elevenlabs_api_key: SecretStr | None = None
    elevenlabs_base_url: str = "https://api.elevenlabs.io/v1"
    elevenlabs_voice_id: str | None = None
    elevenlabs_model: str = "eleven_multilingual_v2"

    @model_validator(mode="after")
    def _keys_for_choices(self) -> VoiceConfig:
        needs = {
            "openai_api_key": self.stt == "openai" or self.tts == "openai",
            "deepgram_api_key": self.stt == "deepgram",
            "elevenlabs_api_key": self.tts == "elevenlabs",
            "anthropic_api_key": self.brain == "anthropic",
        }
        missing = [key for key, needed in needs.items() if needed and getattr(self, key) is None]
        if missing:
            raise ValueError(f"the chosen providers need {', '.join(missing)} (e.g. ML_VOICE__{missing[0].upper()})")
        if self.tts == "elevenlabs" and not self.elevenlabs_voice_id:
            raise ValueError("tts: elevenlabs needs elevenlabs_voice_id")
        return self

    @property
    def uses_llm(self) -> bool:
        return self.brain == "anthropic" or (self.brain == "auto" and self.anthropic_api_key is not None)


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
