"""Sound for scripted callers: tones, noise, WAV files and a pluggable speech synthesizer, all as s16le 8 kHz mono.

The voice agent plugs in a real TTS later (any ``Synthesizer``: text in, PCM out, sync or async). Until then
``tone_synthesizer`` stands in: each word becomes a short tone burst (pitch from the word, length from its letters),
deterministic, so a scripted utterance has a realistic length and clear speech/silence edges for latency tests.
"""

from __future__ import annotations

import math
import random
import sys
import wave
import zlib
from array import array
from collections.abc import Awaitable, Callable
from pathlib import Path

from hub.audio.format import BYTES_PER_MS, SAMPLE_RATE

Synthesizer = Callable[[str], bytes | Awaitable[bytes]]
FULL_SCALE = 32767


def _samples(pcm: bytes | bytearray) -> array[int]:
    samples = array("h")
    samples.frombytes(bytes(pcm[: len(pcm) - len(pcm) % 2]))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def _pcm(samples: array[int]) -> bytes:
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def tone(freq_hz: float, ms: float, *, amplitude: float = 0.3) -> bytes:
    """A sine tone (amplitude as a fraction of full scale), with 5 ms fades so it starts and ends cleanly."""
    count = round(ms * SAMPLE_RATE / 1000)
    fade = min(40, count // 2)
    peak = amplitude * FULL_SCALE
    out = array("h", bytes(2 * count))
    for n in range(count):
        gain = min(1.0, (n + 1) / fade, (count - n) / fade) if fade else 1.0
        out[n] = round(peak * gain * math.sin(2 * math.pi * freq_hz * n / SAMPLE_RATE))
    return _pcm(out)


def noise(ms: float, *, amplitude: float = 0.1, seed: int = 0) -> bytes:
    """White noise, seeded (the same bytes every run)."""
    rng = random.Random(seed)
    peak = round(amplitude * FULL_SCALE)
    return _pcm(array("h", (rng.randint(-peak, peak) for _ in range(round(ms * SAMPLE_RATE / 1000)))))


def silence(ms: float) -> bytes:
    return bytes(2 * round(ms * SAMPLE_RATE / 1000))


def peak(pcm: bytes | bytearray) -> int:
    """The largest absolute sample value."""
    samples = _samples(pcm)
    return max(max(samples), -min(samples)) if samples else 0


def first_loud_sample(pcm: bytes | bytearray, threshold: int) -> int | None:
    """Index of the first sample whose magnitude exceeds ``threshold``, or None."""
    for index, value in enumerate(_samples(pcm)):
        if value > threshold or value < -threshold:
            return index
    return None


def duration_ms(pcm: bytes | bytearray) -> float:
    return len(pcm) / BYTES_PER_MS


def read_wav(path: Path) -> bytes:
    """A 16-bit PCM WAV file as s16le 8 kHz mono (channels averaged, other rates resampled linearly)."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise ValueError(f"{path}: not a readable WAV file ({exc})") from None
    if width != 2:
        raise ValueError(f"{path}: WAV samples are {8 * width}-bit; convert it to 16-bit PCM")
    samples = _samples(frames)
    if channels > 1:
        samples = array("h", (sum(samples[i : i + channels]) // channels for i in range(0, len(samples), channels)))
    if rate != SAMPLE_RATE:
        samples = _resample(samples, rate)
    return _pcm(samples)


def _resample(samples: array[int], rate: int) -> array[int]:
    count = len(samples) * SAMPLE_RATE // rate
    out = array("h", bytes(2 * count))
    step = rate / SAMPLE_RATE
    for n in range(count):
        pos = n * step
        i = int(pos)
        nxt = samples[i + 1] if i + 1 < len(samples) else samples[i]
        out[n] = round(samples[i] + (nxt - samples[i]) * (pos - i))
    return out


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm)


def tone_synthesizer(text: str) -> bytes:
    """The fallback synthesizer: one tone burst per word (~65 ms per letter, 300-700 Hz), 80 ms between words."""
    words = text.split()
    if not words:
        raise ValueError("nothing to say: the text is empty")
    parts: list[bytes] = []
    for i, word in enumerate(words):
        if i:
            parts.append(silence(80))
        pitch = 300 + zlib.crc32(word.lower().encode()) % 400
        parts.append(tone(pitch, 65 * max(2, len(word)), amplitude=0.25))
    return b"".join(parts)
