"""OpenAI transcription (``POST /v1/audio/transcriptions``, multipart) and speech (``POST /v1/audio/speech``).

Shapes from /work/shared/voice-offline.md §6: transcription takes ``file`` (a WAV of the 8 kHz utterance), ``model``
and ``language`` and answers ``{"text": ...}``; speech takes JSON ``model``, ``input``, ``voice``,
``response_format: "pcm"`` and streams raw 24 kHz s16le mono, resampled here to 8 kHz. Auth: ``Authorization: Bearer``.
"""

from __future__ import annotations

import contextlib
import io
import wave
from collections.abc import AsyncIterator

import httpx
from pydantic import SecretStr

from agents.basma.errors import ProviderError
from agents.basma.providers._http import raise_for_status, transport_error
from agents.basma.stt import BufferedStream, SttStream
from agents.basma.tts import Resampler
from hub.audio.format import SAMPLE_RATE

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PCM_RATE = 24000


def wav_bytes(pcm: bytes, rate: int = SAMPLE_RATE) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


class _OpenAi:
    def __init__(self, http: httpx.AsyncClient, api_key: SecretStr, base_url: str = DEFAULT_BASE_URL) -> None:
        self._http = http
        self._key = api_key
        self._base = base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base!r}, api_key=**********)"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key.get_secret_value()}"}


class OpenAiStt(_OpenAi):
    def __init__(
        self,
        http: httpx.AsyncClient,
        api_key: SecretStr,
        *,
        model: str = "gpt-4o-mini-transcribe",
        language: str = "en",
        base_url: str = DEFAULT_BASE_URL,
    ) -> None:
        super().__init__(http, api_key, base_url)
        self.model = model
        self.language = language

    async def transcribe(self, pcm: bytes) -> str:
        if not pcm:
            return ""
        try:
            response = await self._http.post(
                f"{self._base}/audio/transcriptions",
                headers=self._headers(),
                files={"file": ("utterance.wav", wav_bytes(pcm), "audio/wav")},
                data={"model": self.model, "language": self.language, "response_format": "json"},
            )
        except httpx.HTTPError as exc:
            raise transport_error("openai", exc) from None
        await raise_for_status("openai", response, self._key.get_secret_value())
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise ProviderError("openai", "the transcription answer has no text", status=response.status_code)
        return str(body["text"]).strip()

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[SttStream]:
        yield BufferedStream(self.transcribe)


class OpenAiTts(_OpenAi):
    def __init__(
        self,
        http: httpx.AsyncClient,
        api_key: SecretStr,
        *,
        model: str = "gpt-4o-mini-tts",
        voice: str = "alloy",
        base_url: str = DEFAULT_BASE_URL,
    ) -> None:
        super().__init__(http, api_key, base_url)
        self.model = model
        self.voice = voice

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        body = {"model": self.model, "input": text[:4096], "voice": self.voice, "response_format": "pcm"}
        resampler = Resampler(PCM_RATE)
        try:
            async with self._http.stream(
                "POST", f"{self._base}/audio/speech", headers=self._headers(), json=body
            ) as response:
                await raise_for_status("openai", response, self._key.get_secret_value())
                async for chunk in response.aiter_bytes():
                    out = resampler.push(chunk)
                    if out:
                        yield out
        except httpx.HTTPError as exc:
            raise transport_error("openai", exc) from None
        tail = resampler.push(b"", last=True)
        if tail:
            yield tail
