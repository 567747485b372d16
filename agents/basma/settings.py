"""Basma's settings: plain pydantic models with no speech library behind them, so the hub's :class:`Settings`
carries them (``Settings.voice``, ``ML_VOICE__...``) in every process, installed extras or not.

Offline by default: faster-whisper + piper (or espeak-ng) + the YAML policy. Cloud pieces replace one stage each:
``stt: openai|deepgram``, ``tts: openai|elevenlabs``, and the Anthropic LLM replaces the policy's dialogue when its
key is set (``brain: auto``); the policy file still gives the greeting, the destinations and the fallback. Keys are
:class:`pydantic.SecretStr`: never in ``repr``, dumps, logs or errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

DEFAULT_POLICY = Path(__file__).with_name("default_policy.yaml")


class VadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: int = Field(default=3, ge=0, le=3, description="webrtcvad aggressiveness (3 filters the most non-speech)")
    start_ms: int = Field(default=60, ge=20, description="consecutive speech that starts an utterance")
    trailing_silence_ms: int = Field(default=400, ge=100, description="silence that ends an utterance")
    preroll_ms: int = Field(default=200, ge=0)
    min_speech_ms: int = Field(default=120, ge=0, description="shorter utterances are discarded")
    max_utterance_ms: int = Field(default=15000, ge=1000)


class WhisperConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: Path | None = Field(
        default=None, description="a CTranslate2 model directory; default: the packaged tiny.en"
    )
    compute_type: str = "int8"
    cpu_threads: int = Field(default=2, ge=1)
    beam_size: int = Field(default=5, ge=1, description="beam 5: greedy decoding loops on phone audio")
    language: str = "en"


class SessionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    vad: VadConfig = Field(default_factory=VadConfig)
    barge_in_ms: int = Field(default=200, ge=20, description="caller speech during a reply that interrupts it")
    drain_timeout_s: float = Field(default=5.0, gt=0, description="extra wait for queued audio to be played")


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
    token_source: Literal["owner", "own"] = Field(
        default="owner",
        description="owner: ask the ingest leader for the PBX token (D§6: 3CX keeps one token per API client); "
        "own: fetch its own (only with an API client of its own, or it revokes ingest's)",
    )
    stream_connect_timeout_s: float = Field(
        default=120.0, gt=0, description="how long the call's audio stream may answer 404/424 before giving up"
    )
    reply_lead_ms: float = Field(
        default=500.0, ge=60, le=1000, description="how far reply audio may run ahead of real time (3CX: ~500 ms)"
    )
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
            raise ValueError("tts: elevenlabs needs elevenlabs_voice_id (ML_VOICE__ELEVENLABS_VOICE_ID)")
        return self

    @property
    def uses_llm(self) -> bool:
        return self.brain == "anthropic" or (self.brain == "auto" and self.anthropic_api_key is not None)
