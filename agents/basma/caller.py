"""A simulated caller's voice: the piper voice through a phone line, as the simulator's synthesizer
(``sim.set_synthesizer(PiperCaller(tts))``, then ``await sim.say(pid, "...")``). Tests and the benchmark use it.

The audio is resampled to 8 kHz and passed through µ-law and back (what a PCMU leg does to speech), then trimmed of
leading and trailing silence: the simulator journals an utterance's end as the end of its audio, which is then the
ground-truth end of the speech that turn latency is measured from (D§11).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from agents.basma.g711 import ulaw_decode, ulaw_encode
from agents.basma.stt import resample
from agents.basma.tts import PiperTts

SILENCE_PEAK = 64  # the simulator's default silence_threshold


def phone_line(pcm: np.ndarray[Any, np.dtype[np.int16]], rate: int) -> bytes:
    """What a PCMU leg does to audio: resampled to 8 kHz, through µ-law and back, as s16le bytes."""
    pcm8 = resample(pcm.astype(np.int16), rate, 8000).astype(np.int16)
    return ulaw_decode(ulaw_encode(pcm8)).tobytes()


def trim_silence(pcm: bytes, threshold: int = SILENCE_PEAK) -> bytes:
    """From the first to the last sample louder than ``threshold`` (nothing when all of it is quiet)."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if not len(loud):
        return b""
    return samples[loud[0] : loud[-1] + 1].tobytes()


class PiperCaller:
    """A :data:`hub.simulator.Synthesizer`: text in, the caller's 8 kHz speech out (each text rendered once, the same
    on every run)."""

    def __init__(self, tts: PiperTts) -> None:
        self._tts = tts
        self._cache: dict[str, bytes] = {}

    def speech(self, text: str) -> bytes:
        """Blocking: the phone-line speech of ``text``."""
        if text not in self._cache:
            rate, audio = self._tts.render(text, vary=False)
            self._cache[text] = trim_silence(phone_line(np.frombuffer(audio, dtype=np.int16), rate))
        return self._cache[text]

    async def __call__(self, text: str) -> bytes:
        if text in self._cache:
            return self._cache[text]
        return await asyncio.to_thread(self.speech, text)
