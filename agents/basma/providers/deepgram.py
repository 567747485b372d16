"""Deepgram live speech-to-text over a websocket, one connection per call.

Shapes from Deepgram's published streaming reference (developers.deepgram.com/reference/speech-to-text/
listen-streaming, and the generated types of deepgram-python-sdk ``listen/v1``: ``ListenV1Results``,
``ListenV1Metadata``, ``ListenV1UtteranceEnd``, ``ListenV1SpeechStarted``, ``ListenV1Error``, and the
``Finalize``/``KeepAlive``/``CloseStream`` control messages), and voice-offline.md §6:
- ``wss://api.deepgram.com/v1/listen?model=nova-3&encoding=linear16&sample_rate=8000&channels=1&...`` with
  ``Authorization: Token KEY``; audio as binary frames (s16le, as the 3CX stream carries it).
- Text frames ``{"type": "KeepAlive"}`` during silence (the server closes an idle stream after about 10 s),
  ``{"type": "Finalize"}`` to flush (the flushed result carries ``from_finalize: true``) and
  ``{"type": "CloseStream"}``.
- Server messages: ``Results`` (``is_final``, ``speech_final``, ``channel.alternatives[0].transcript``), ``Metadata``,
  ``UtteranceEnd``, ``SpeechStarted``, ``Error`` (``variant``, ``description``).
Basma's own VAD ends utterances; at each end the stream sends ``Finalize`` and the utterance's text is every final
transcript up to the flushed one (or up to ``finalize_timeout_s``: a Finalize with little audio may not be
marked).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from agents.basma.errors import ProviderError, redact
from agents.basma.stt import PendingText, SttStream

log = logging.getLogger(__name__)
DEFAULT_URL = "wss://api.deepgram.com/v1/listen"


class _Pending:
    def __init__(self, future: asyncio.Future[str], timeout: float, stream: _DeepgramStream) -> None:
        self._future = future
        self._timeout = timeout
        self._stream = stream

    async def text(self) -> str:
        try:
            return await asyncio.wait_for(asyncio.shield(self._future), self._timeout)
        except TimeoutError:
            return self._stream._resolve_oldest()


class _DeepgramStream:
    def __init__(self, ws: ClientConnection, *, keepalive_s: float, finalize_timeout_s: float) -> None:
        self._ws = ws
        self._out: asyncio.Queue[bytes | str] = asyncio.Queue()
        self._pending: deque[asyncio.Future[str]] = deque()
        self._finals: list[str] = []
        self._keepalive_s = keepalive_s
        self._finalize_timeout_s = finalize_timeout_s
        self.keepalives = 0
        self.error: ProviderError | None = None

    def feed(self, pcm: bytes) -> None:
        self._out.put_nowait(pcm)

    def end(self) -> PendingText:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        self._out.put_nowait(json.dumps({"type": "Finalize"}))
        return _Pending(future, self._finalize_timeout_s, self)

    def discard(self) -> None:
        self.end()  # what was sent cannot be taken back: flush it and let its text go

    def _resolve_oldest(self) -> str:
        text = " ".join(self._finals).strip()
        self._finals = []
        if self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_result(text)
        return text

    def _fail(self, error: ProviderError) -> None:
        self.error = error
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here: a dropped handle must not warn

    async def send_loop(self) -> None:
        while True:
            try:
                item = await asyncio.wait_for(self._out.get(), self._keepalive_s)
            except TimeoutError:
                self.keepalives += 1
                item = json.dumps({"type": "KeepAlive"})
            await self._ws.send(item)

    async def receive_loop(self) -> None:
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    continue
                self._on_message(json.loads(message))
        except WebSocketException as exc:
            self._fail(ProviderError("deepgram", f"the connection broke ({type(exc).__name__})"))
        else:
            self._fail(ProviderError("deepgram", "the server closed the stream"))

    def _on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "Results":
            alternatives = msg.get("channel", {}).get("alternatives") or [{}]
            transcript = str(alternatives[0].get("transcript", "")).strip()
            if msg.get("is_final") and transcript:
                self._finals.append(transcript)
            if msg.get("from_finalize"):
                self._resolve_oldest()
        elif kind == "Error":
            description = f"{msg.get('variant', 'Error')}: {msg.get('description', '')}"
            log.error("voice: deepgram error %s", description)
            self._fail(ProviderError("deepgram", description, kind=str(msg.get("variant", ""))))


class DeepgramStt:
    def __init__(
        self,
        api_key: SecretStr,
        *,
        url: str = DEFAULT_URL,
        model: str = "nova-3",
        language: str = "en",
        keepalive_s: float = 4.0,
        finalize_timeout_s: float = 3.0,
    ) -> None:
        self._key = api_key
        self.url = url
        self.params = {
            "model": model,
            "language": language,
            "encoding": "linear16",
            "sample_rate": "8000",
            "channels": "1",
            "interim_results": "true",
            "punctuate": "true",
            "smart_format": "true",
        }
        self._keepalive_s = keepalive_s
        self._finalize_timeout_s = finalize_timeout_s

    def __repr__(self) -> str:
        return f"DeepgramStt(url={self.url!r}, api_key=**********)"

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[SttStream]:
        secret = self._key.get_secret_value()
        try:
            ws = await connect(
                f"{self.url}?{urlencode(self.params)}",
                additional_headers={"Authorization": f"Token {secret}"},
                open_timeout=10,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = redact(exc.response.body.decode(errors="replace")[:200], secret) if exc.response.body else ""
            raise ProviderError("deepgram", f"the server refused the stream {body}".strip(), status=status) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ProviderError("deepgram", f"could not reach the service ({type(exc).__name__})") from None
        stream = _DeepgramStream(ws, keepalive_s=self._keepalive_s, finalize_timeout_s=self._finalize_timeout_s)
        sender = asyncio.create_task(stream.send_loop())
        receiver = asyncio.create_task(stream.receive_loop())
        try:
            yield stream
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketException):
                await sender
            with contextlib.suppress(WebSocketException):
                await ws.send(json.dumps({"type": "CloseStream"}))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(receiver), 2.0)
            receiver.cancel()
            await ws.close()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
