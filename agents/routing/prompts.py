"""Menu prompts as the PBX plays them: s16le 8 kHz mono PCM, from a WAV file or a tone.

A WAV must be 16-bit PCM. 8 kHz mono plays as it is; several channels are mixed down; another sample rate is resampled
with soxr, which comes with the ``voice`` extra. Without the extra, such a file is refused at load time with what to
do, so a bad prompt is a rule-file error (with its line), never a silent caller at run time. A prompt given as a tone
(``{tone: 440, ms: 400}``), or none at all, plays a tone.
"""

from __future__ import annotations

import math
import sys
import wave
from array import array
from dataclasses import dataclass
from pathlib import Path

from hub.audio.format import BYTES_PER_MS, SAMPLE_RATE

DEFAULT_TONE_HZ = 440.0
DEFAULT_TONE_MS = 400.0


class PromptError(ValueError):
    """A prompt that cannot be played; the message says which file and what to do."""


@dataclass(frozen=True)
class Prompt:
    pcm: bytes
    label: str  # the file, or "tone 440 Hz"

    @property
    def ms(self) -> float:
        return len(self.pcm) / BYTES_PER_MS


def tone_pcm(freq_hz: float, ms: float, amplitude: float = 0.3) -> bytes:
    """A sine tone with 5 ms fades (so it starts and ends without a click)."""
    count = round(ms * SAMPLE_RATE / 1000)
    fade = min(40, count // 2)
    peak = amplitude * 32767
    out = array("h", bytes(2 * count))
    for n in range(count):
        gain = min(1.0, (n + 1) / fade, (count - n) / fade) if fade else 1.0
        out[n] = round(peak * gain * math.sin(2 * math.pi * freq_hz * n / SAMPLE_RATE))
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def tone_prompt(freq_hz: float = DEFAULT_TONE_HZ, ms: float = DEFAULT_TONE_MS) -> Prompt:
    if not 50 <= freq_hz <= 3800:
        raise PromptError(f"a tone of {freq_hz:g} Hz cannot be heard on a phone line: use 50-3800 Hz")
    if not 20 <= ms <= 10_000:
        raise PromptError(f"a tone of {ms:g} ms is too short or too long: use 20-10000 ms")
    return Prompt(tone_pcm(freq_hz, ms), f"tone {freq_hz:g} Hz")


def load_wav(path: Path) -> Prompt:
    """A WAV file as s16le 8 kHz mono (mixed down; resampled with soxr when it has another rate)."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise PromptError(f"prompt file {path} does not exist") from None
    except (OSError, EOFError, wave.Error) as exc:
        raise PromptError(f"prompt file {path} is not a readable WAV file ({exc})") from None
    if width != 2:
        raise PromptError(f"prompt file {path} has {8 * width}-bit samples: save it as 16-bit PCM, 8 kHz mono")
    samples = array("h")
    samples.frombytes(frames[: len(frames) - len(frames) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    if channels > 1:
        samples = array("h", (sum(samples[i : i + channels]) // channels for i in range(0, len(samples), channels)))
    if not samples:
        raise PromptError(f"prompt file {path} holds no audio")
    if rate != SAMPLE_RATE:
        samples = _resample(samples, rate, path)
    if sys.byteorder == "big":
        samples.byteswap()
    return Prompt(samples.tobytes(), str(path))


def _resample(samples: array[int], rate: int, path: Path) -> array[int]:
    try:
        import numpy as np
        import soxr
    except ImportError:
        raise PromptError(
            f"prompt file {path} is {rate} Hz and the PBX plays 8000 Hz: convert it (e.g. sox {path.name} -r 8000 "
            "-c 1 out.wav) or install the voice extra (pip install 'masterlinc[voice]') to resample it"
        ) from None
    data = np.frombuffer(samples.tobytes(), dtype=np.int16)
    resampled = soxr.resample(data, rate, SAMPLE_RATE).astype(np.int16)
    out = array("h")
    out.frombytes(resampled.tobytes())
    return out
