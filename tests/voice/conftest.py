"""Fixtures for the voice agent: the offline models (loaded once), a simulated phone line, a test policy."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # any attempt to reach a model hub fails at once instead of downloading
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import functools

import numpy as np
import pytest

from agents.basma.caller import phone_line
from agents.basma.policy import Policy, parse_policy
from agents.basma.ports import CallInfo
from agents.basma.stt import WhisperStt
from agents.basma.tts import PiperTts
from schemas.common import LegRef

pytest.importorskip("faster_whisper", reason="the voice extra is not installed: pip install -e '.[voice]'")
pytest.importorskip("piper", reason="the voice-piper extra is not installed: pip install -e '.[voice-piper]'")

POLICY = """\
greeting: "Hello, how can I help?"
destinations:
  - name: billing
    keywords: [bill, invoice, payment]
    dtmf: "1"
    transfer: "101"
  - name: support
    keywords: [help, broken, problem, technical]
    dtmf: "2"
    transfer: "102"
fallback: {say: "Let me put you through to reception.", transfer: "100"}
"""


@functools.cache
def _piper_raw(text: str) -> tuple[int, bytes]:
    return PiperTts().render(text, vary=False)


def caller_speech(text: str) -> bytes:
    """``text`` spoken by the piper voice and passed through a simulated phone line (8 kHz s16le)."""
    rate, audio = _piper_raw(text)
    return phone_line(np.frombuffer(audio, dtype=np.int16), rate)


@pytest.fixture(scope="session")
def whisper() -> WhisperStt:
    stt = WhisperStt()
    stt.load()
    return stt


@pytest.fixture(scope="session")
def piper() -> PiperTts:
    tts = PiperTts(vary=False)  # Basma's voice the same on every run: tests transcribe what was played
    tts.load()
    return tts


@pytest.fixture
def policy() -> Policy:
    return parse_policy(POLICY, "test-policy.yaml")


@pytest.fixture
def call() -> CallInfo:
    return CallInfo(
        pbx_id="main",
        call_id="01JVOICE0000000000000000AB",
        leg=LegRef(dn="800", participant_id=7, legid=1),
        caller_number="+15550100",
    )
