"""ElevenLabs streaming speech: ``POST /v1/text-to-speech/{voice_id}/stream?output_format=...`` with ``xi-api-key``.

Shapes from /work/shared/providers.md §3 and voice-offline.md §6 (elevenlabs-python ``text_to_speech/raw_client.py``):
JSON body ``text`` and ``model_id``; the response body is the raw audio, streamed. ``ulaw_8000`` (the default here) is
8 kHz µ-law, decoded to s16le; ``pcm_8000``/``pcm_16000``/``pcm_22050``/``pcm_24000`` are raw s16le, resampled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from agents.basma.errors import VoiceConfigError
from agents.basma.g711 import ulaw_decode
from agents.basma.providers._http import raise_for_status, transport_error
from agents.basma.tts import Resampler

DEFAULT_BASE_URL = "https://api.elevenlabs.io/v1"
FORMATS = ("ulaw_8000", "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000")


class ElevenLabsTts:
    def __init__(
        self,
        http: httpx.AsyncClient,
        api_key: SecretStr,
        *,
        voice_id: str,
        model_id: str = "eleven_multilingual_v2",
        output_format: str = "ulaw_8000",
        base_url: str = DEFAULT_BASE_URL,
    ) -> None:
        if output_format not in FORMATS:
            raise VoiceConfigError(f"elevenlabs output_format must be one of {', '.join(FORMATS)}")
        self._http = http
        self._key = api_key
        self._base = base_url.rstrip("/")
        self.voice_id = voice_id
        self.model_id = model_id
        self.output_format = output_format

    def __repr__(self) -> str:
        return f"ElevenLabsTts(voice_id={self.voice_id!r}, api_key=**********)"

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        ulaw = self.output_format == "ulaw_8000"
        resampler = None if ulaw else Resampler(int(self.output_format.split("_")[1]))
        url = f"{self._base}/text-to-speech/{quote(self.voice_id, safe='')}/stream"
        headers = {"xi-api-key": self._key.get_secret_value()}
        body = {"text": text, "model_id": self.model_id}
        try:
            async with self._http.stream(
                "POST", url, params={"output_format": self.output_format}, headers=headers, json=body
            ) as response:
                await raise_for_status("elevenlabs", response, self._key.get_secret_value())
                async for chunk in response.aiter_bytes():
                    if ulaw:
                        yield ulaw_decode(chunk).tobytes()
                        continue
                    assert resampler is not None
                    out = resampler.push(chunk)
                    if out:
                        yield out
        except httpx.HTTPError as exc:
            raise transport_error("elevenlabs", exc) from None
        if resampler is not None:
            tail = resampler.push(b"", last=True)
            if tail:
                yield tail
