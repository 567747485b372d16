"""Voice activity detection and endpointing on 20 ms frames of 8 kHz s16le audio (webrtcvad, extra ``voice``).

An utterance starts after ``start_ms`` of consecutive speech (the ``preroll_ms`` before it are kept, so the first
syllable is not cut) and ends after ``trailing_silence_ms`` without speech, or at ``max_utterance_ms``. Utterances
with less than ``min_speech_ms`` of speech (a cough, a click) are discarded.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

from agents.basma.errors import MissingExtra
from agents.basma.settings import VadConfig
from hub.audio.format import FRAME_BYTES, FRAME_MS, SAMPLE_RATE


class Kind(Enum):
    STARTED = "started"
    SPEECH = "speech"
    ENDED = "ended"
    DISCARDED = "discarded"


@dataclass(frozen=True)
class VadEvent:
    kind: Kind
    pcm: bytes = b""  # STARTED: the pre-roll and the speech so far; SPEECH: this frame
    speech_ms: int = 0  # speech frames in the utterance so far


def _webrtc_vad(mode: int) -> Any:
    try:
        import webrtcvad
    except ImportError:
        raise MissingExtra("webrtcvad (voice activity detection)", "voice") from None
    return webrtcvad.Vad(mode)


class Endpointer:
    def __init__(self, config: VadConfig | None = None) -> None:
        self.config = config or VadConfig()
        self._vad = _webrtc_vad(self.config.mode)
        self._preroll: deque[bytes] = deque(maxlen=max(1, self.config.preroll_ms // FRAME_MS))
        self._run = 0
        self._in_speech = False
        self._silence = 0
        self._frames = 0
        self.speech_ms = 0

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def is_speech(self, frame: bytes) -> bool:
        return bool(self._vad.is_speech(frame, SAMPLE_RATE))

    def push(self, frame: bytes) -> VadEvent | None:
        if len(frame) != FRAME_BYTES:
            raise ValueError(f"the endpointer takes 20 ms frames of {FRAME_BYTES} bytes, got {len(frame)}")
        voiced = self.is_speech(frame)
        cfg = self.config
        if not self._in_speech:
            self._preroll.append(frame)
            self._run = self._run + 1 if voiced else 0
            if self._run * FRAME_MS >= cfg.start_ms:
                self._in_speech = True
                self._silence = 0
                self._frames = len(self._preroll)
                self.speech_ms = self._run * FRAME_MS
                pcm = b"".join(self._preroll)
                self._preroll.clear()
                return VadEvent(Kind.STARTED, pcm, self.speech_ms)
            return None
        self._frames += 1
        if voiced:
            self._silence = 0
            self.speech_ms += FRAME_MS
        else:
            self._silence += 1
        if self._silence * FRAME_MS >= cfg.trailing_silence_ms or self._frames * FRAME_MS >= cfg.max_utterance_ms:
            self._in_speech = False
            self._run = 0
            kind = Kind.ENDED if self.speech_ms >= cfg.min_speech_ms else Kind.DISCARDED
            return VadEvent(kind, frame, self.speech_ms)
        return VadEvent(Kind.SPEECH, frame, self.speech_ms)
