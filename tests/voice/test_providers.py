"""Each cloud provider's client against a local fake built from the provider's documented shapes (see fakes.py)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from agents.basma.brain import CallerSaid, Destination, ToolResult, Turn
from agents.basma.errors import ProviderError
from agents.basma.providers.anthropic import AnthropicBrain
from agents.basma.providers.deepgram import DeepgramStt
from agents.basma.providers.elevenlabs import ElevenLabsTts
from agents.basma.providers.openai import OpenAiStt, OpenAiTts
from schemas.common import utcnow
from tests.voice.fakes import (
    KEY,
    AnthropicFake,
    DeepgramFake,
    ElevenLabsFake,
    OpenAiFake,
    anthropic_text,
    anthropic_tool,
)
from tests.voice.localserver import serving

pytestmark = pytest.mark.anyio
SECRET = SecretStr(KEY)


def peak_hz(pcm: bytes, rate: int = 8000) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * rate / len(samples))


async def collect(chunks: object) -> bytes:
    return b"".join([c async for c in chunks])  # type: ignore[attr-defined]


async def test_openai_transcription_uploads_the_utterance_as_an_8khz_wav() -> None:
    fake = OpenAiFake()
    async with serving(fake.app()) as url, httpx.AsyncClient() as http:
        stt = OpenAiStt(http, SECRET, base_url=f"{url}/v1")
        async with stt.open() as stream:
            stream.feed(b"\x00\x01" * 8000)
            stream.feed(b"\x00\x01" * 4000)
            text = await stream.end().text()
    assert text == "heard 1500 ms at 8000 Hz on 1 channel"
    assert fake.requests == [{"model": "gpt-4o-mini-transcribe", "language": "en", "rate": 8000}]
    assert KEY not in repr(stt)


async def test_openai_speech_streams_24khz_pcm_resampled_to_8khz() -> None:
    fake = OpenAiFake()
    async with serving(fake.app()) as url, httpx.AsyncClient() as http:
        tts = OpenAiTts(http, SECRET, voice="coral", base_url=f"{url}/v1")
        audio = await collect(tts.synthesize("Hello there."))
    [request] = fake.requests
    assert request == {"model": "gpt-4o-mini-tts", "input": "Hello there.", "voice": "coral", "response_format": "pcm"}
    assert abs(len(audio) / 16 - 40 * len("Hello there.")) <= 20  # same duration at 8 kHz (odd chunks re-joined)
    assert abs(peak_hz(audio) - 500) < 10


async def test_openai_errors_say_what_failed_without_the_key() -> None:
    fake = OpenAiFake()
    async with serving(fake.app()) as url, httpx.AsyncClient() as http:
        wrong = SecretStr(KEY[:-4] + "zzzz")
        with pytest.raises(ProviderError) as caught:
            await OpenAiStt(http, wrong, base_url=f"{url}/v1").transcribe(b"\x00\x00" * 800)
    error = caught.value
    assert error.status == 401 and error.kind == "invalid_request_error"
    assert "Incorrect API key" in str(error)
    assert wrong.get_secret_value() not in str(error) and KEY[:12] not in str(error)


async def test_elevenlabs_ulaw_stream_is_decoded_to_pcm_and_errors_are_typed() -> None:
    fake = ElevenLabsFake()
    async with serving(fake.app()) as url, httpx.AsyncClient() as http:
        tts = ElevenLabsTts(http, SECRET, voice_id="voice 1", base_url=f"{url}/v1")
        audio = await collect(tts.synthesize("Good morning."))
        with pytest.raises(ProviderError) as empty:
            await collect(tts.synthesize(""))
        with pytest.raises(ProviderError) as denied:
            await collect(ElevenLabsTts(http, SecretStr("nope"), voice_id="v", base_url=f"{url}/v1").synthesize("x"))
    assert fake.requests[0] == {
        "voice": "voice 1",
        "format": "ulaw_8000",
        "text": "Good morning.",
        "model_id": "eleven_multilingual_v2",
    }
    assert len(audio) == 2 * 8 * 50 * len("Good morning.")
    assert abs(peak_hz(audio) - 400) < 10
    assert empty.value.status == 422 and "body.text: field required" in str(empty.value)
    assert denied.value.status == 401 and denied.value.kind == "invalid_api_key"
    assert KEY not in repr(tts)


class Tools:
    def __init__(self) -> None:
        self.destinations: Mapping[str, Destination] = {
            "billing": Destination("billing", "101", "invoices and payments"),
            "reception": Destination("reception", "100", "anything else"),
        }
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    async def transfer(self, destination: str, summary: str) -> ToolResult:
        self.calls.append(("transfer", (destination, summary)))
        return ToolResult(True, f"transferred to {destination}", ends_call=True)

    async def park(self) -> ToolResult:
        self.calls.append(("park", ()))
        return ToolResult(True, "parked", ends_call=True)

    async def drop(self) -> ToolResult:
        self.calls.append(("drop", ()))
        return ToolResult(True, "dropped", ends_call=True)

    async def send_message(self, text: str) -> ToolResult:
        self.calls.append(("send_message", (text,)))
        return ToolResult(True, "message sent")


def dialogue(*texts: tuple[str, str]) -> list[Turn]:
    now = utcnow()
    return [Turn(role, text, now, now) for role, text in texts]  # type: ignore[arg-type]


async def collect_stream(brain: AnthropicBrain, tools: Tools) -> None:
    async for _ in brain._stream([{"role": "user", "content": "x"}], tools):
        pass


async def reply(brain: AnthropicBrain, turns: list[Turn], tools: Tools) -> list[str]:
    return [d async for d in brain.respond(turns, CallerSaid(turns[-1].text), tools)]


async def test_anthropic_streams_text_and_transfers_through_a_tool_call() -> None:
    args = {"destination": "billing", "summary": "Invoice query from Ann."}
    fake = AnthropicFake([anthropic_tool("Sure, let me get billing.", "toolu_01", "transfer_to_human", args)])
    tools = Tools()
    async with serving(fake.app()) as url, httpx.AsyncClient() as http:
        brain = AnthropicBrain(http, SECRET, greeting="Hi!", fallback="reception", base_url=f"{url}/v1")
        turns = dialogue(("agent", "Hi!"), ("caller", "It's Ann, about my invoice."))
        deltas = await reply(brain, turns, tools)
    assert "".join(deltas) == "Sure, let me get billing."
    assert tools.calls == [("transfer", ("billing", "Invoice query from Ann."))]
    [request] = fake.requests
    assert request["stream"] is True and request["max_tokens"] == 300
    assert request["messages"] == [
        {"role": "user", "content": "(The call has connected.)"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "It's Ann, about my invoice."},
    ]
    transfer = next(t for t in request["tools"] if t["name"] == "transfer_to_human")
    assert transfer["input_schema"]["properties"]["destination"]["enum"] == ["billing", "reception"]
    assert "invoices and payments" in request["system"]
    assert KEY not in repr(brain)


async def test_anthropic_tool_results_go_back_first_with_their_ids() -> None:
    fake = AnthropicFake([
        anthropic_tool("I'll text you our address.", "toolu_07", "send_message", {"text": "1 High St"}),
        anthropic_text(["Done. ", "Anything else?"]),
    ])  # fmt: skip
    tools = Tools()
    async with serving(fake.app()) as url, httpx.AsyncClient() as http:
        brain = AnthropicBrain(http, SECRET, greeting="Hi!", base_url=f"{url}/v1")
        deltas = await reply(brain, dialogue(("caller", "Where are you?")), tools)
    assert "".join(deltas) == "I'll text you our address.Done. Anything else?"
    assert tools.calls == [("send_message", ("1 High St",))]
    second = fake.requests[1]["messages"]
    assert second[-2]["content"][1] == {"type": "tool_use", "id": "toolu_07", "name": "send_message",
                                        "input": {"text": "1 High St"}}  # fmt: skip
    assert second[-1] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_07",
                                                       "content": "message sent"}]}  # fmt: skip


async def test_anthropic_failures_hand_the_caller_to_a_person() -> None:
    overloaded = [*anthropic_text(["Let me"])[:4], ("error", {"type": "error",
                  "error": {"type": "overloaded_error", "message": "Overloaded"}})]  # fmt: skip
    fake = AnthropicFake([overloaded, (429, {"type": "error", "error": {"type": "rate_limit_error",
                                                                         "message": "slow down"}})])  # fmt: skip
    tools = Tools()
    async with serving(fake.app()) as url, httpx.AsyncClient() as http:
        brain = AnthropicBrain(http, SECRET, greeting="Hi!", fallback="reception", base_url=f"{url}/v1")
        first = await reply(brain, dialogue(("caller", "Hello?")), tools)
        second = await reply(brain, dialogue(("caller", "Hello?")), tools)
        bad = AnthropicBrain(http, SecretStr("wrong-key-123456789"), greeting="Hi!", base_url=f"{url}/v1")
        with pytest.raises(ProviderError) as denied:
            await collect_stream(bad, tools)
    assert first[0] == "Let me" and "trouble" in "".join(first)
    assert "trouble" in "".join(second)
    assert [c[0] for c in tools.calls] == ["transfer", "transfer"]
    assert tools.calls[0][1][0] == "reception"
    assert denied.value.status == 401 and denied.value.kind == "authentication_error"
    assert "wrong-key" not in str(denied.value)


async def test_deepgram_streams_audio_and_flushes_each_utterance() -> None:
    fake = DeepgramFake()
    async with fake.serving() as url:
        stt = DeepgramStt(SECRET, url=url, keepalive_s=0.05)
        async with stt.open() as stream:
            stream.feed(b"\x00\x00" * 8000)  # 1 s
            first = await stream.end().text()
            stream.feed(b"\x00\x00" * 4000)
            second = await stream.end().text()
            while fake.keepalives == 0:
                await __import__("asyncio").sleep(0.02)
    assert first == "first part of 1000 ms and the rest."
    assert second == "first part of 500 ms and the rest."
    assert fake.finalizes == 2 and fake.closed and fake.audio_bytes == 24000
    assert fake.params["encoding"] == "linear16" and fake.params["sample_rate"] == "8000"
    assert fake.params["channels"] == "1" and fake.params["model"] == "nova-3"
    assert KEY not in repr(stt)


async def test_deepgram_refuses_a_bad_key_with_a_clear_error() -> None:
    fake = DeepgramFake()
    async with fake.serving() as url:
        with pytest.raises(ProviderError) as caught:
            async with DeepgramStt(SecretStr("bad-key-0123456789"), url=url).open():
                pass
    assert caught.value.status == 401 and "refused" in str(caught.value)
    assert "bad-key" not in str(caught.value)
