"""Providers chosen by configuration; keys required when chosen and never shown."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from agents.basma.config import VoiceConfig, build_stack
from agents.basma.policy import PolicyBrain
from agents.basma.providers.anthropic import AnthropicBrain
from agents.basma.providers.deepgram import DeepgramStt
from agents.basma.providers.elevenlabs import ElevenLabsTts
from agents.basma.stt import WhisperStt
from agents.basma.tts import PiperTts

pytestmark = pytest.mark.anyio
KEY = "sk-ant-secret-0123456789"


async def test_the_default_is_the_offline_stack_with_the_shipped_policy() -> None:
    async with httpx.AsyncClient() as http:
        stack = build_stack(VoiceConfig(), http)
    assert isinstance(stack.stt, WhisperStt) and isinstance(stack.tts, PiperTts)
    assert isinstance(stack.new_brain(), PolicyBrain)
    assert set(stack.policy.destinations()) == {"sales", "support", "reception"}


async def test_cloud_providers_replace_their_stage_and_the_llm_comes_with_its_key() -> None:
    config = VoiceConfig(
        stt="deepgram",
        tts="elevenlabs",
        deepgram_api_key=SecretStr("dg-secret-0123456789"),
        elevenlabs_api_key=SecretStr("el-secret-0123456789"),
        elevenlabs_voice_id="voice-1",
        anthropic_api_key=SecretStr(KEY),
    )
    async with httpx.AsyncClient() as http:
        stack = build_stack(config, http)
    assert isinstance(stack.stt, DeepgramStt) and isinstance(stack.tts, ElevenLabsTts)
    brain = stack.new_brain()
    assert isinstance(brain, AnthropicBrain) and brain.fallback == "reception"
    shown = repr(config) + config.model_dump_json() + repr(stack) + repr(brain)
    assert KEY not in shown and "dg-secret" not in shown and "el-secret" not in shown


def test_a_chosen_provider_without_its_key_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValidationError, match="openai_api_key"):
        VoiceConfig(stt="openai")
    with pytest.raises(ValidationError, match="elevenlabs_voice_id"):
        VoiceConfig(tts="elevenlabs", elevenlabs_api_key=SecretStr("x"))
