"""The small pieces: policy files and their errors, G.711, endpointing, sentence splitting, TTS selection."""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from agents.basma.caller import PiperCaller
from agents.basma.errors import MissingExtra, PolicyError, VoiceError
from agents.basma.g711 import ulaw_decode, ulaw_encode
from agents.basma.loopback import frames_of
from agents.basma.policy import load_policy, parse_policy
from agents.basma.settings import VadConfig
from agents.basma.text import SentenceSplitter, Spoken, heard_part, wer
from agents.basma.tts import EspeakTts, PiperTts, offline_tts, wav_pcm
from agents.basma.vad import Endpointer, Kind
from tests.voice.conftest import POLICY, caller_speech

BAD = [
    ('    transfer: "101"', '    transfer: "10 1"', 6, "transfer needs a number"),
    ('    dtmf: "2"', '    dtmf: "1"', 9, "key 1 already goes to 'billing'"),
    ("    keywords: [help", "    keyword: [help", 8, "unknown key 'keyword'"),
    ("fallback:", "fallbak:", 11, "unknown section 'fallbak'"),
    ('    transfer: "102"', "    park: true\n    drop: true", 7, "exactly one action"),
    ('greeting: "Hello, how can I help?"', 'greeting: "Hello"\nprompts: {retry: "Try {name}"}', 2, "only use"),
    ("  - name: billing", "  - name: [billing", 4, "not valid YAML"),
]


@pytest.mark.parametrize(("old", "new", "line", "message"), BAD)
def test_bad_policy_files_are_rejected_naming_the_line(
    tmp_path: Path, old: str, new: str, line: int, message: str
) -> None:
    assert old in POLICY
    path = tmp_path / "basma.yaml"
    path.write_text(POLICY.replace(old, new, 1))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.line == line, str(caught.value)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_the_policy_matches_keywords_digits_and_answers() -> None:
    policy = parse_policy(POLICY)
    assert policy.match("I have a problem with my invoice")  # both destinations mention one word: file order wins
    assert policy.match("my internet is broken, I need help") == policy.routes[1]
    assert policy.match("good morning") is None
    assert policy.by_dtmf("2") == policy.routes[1]
    assert policy.answer("Yes, please.") is True and policy.answer("No, that's not right") is False
    assert policy.answer("hmm") is None
    assert set(policy.destinations()) == {"billing", "support", "fallback"}


def test_ulaw_is_bit_exact_with_audioop() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop", reason="audioop is gone from Python 3.13")
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert ulaw_encode(every).tobytes() == audioop.lin2ulaw(every.tobytes(), 2)
    codes = np.arange(256, dtype=np.uint8)
    assert ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes.tobytes(), 2)


def test_endpointing_finds_the_utterance_and_its_trailing_silence() -> None:
    silence = b"\x00" * 320 * 25
    speech = caller_speech("Hello, I would like to pay my bill.")
    endpointer = Endpointer(VadConfig(trailing_silence_ms=300))
    events = [(i, e.kind) for i, f in enumerate(frames_of(silence + speech + silence * 2)) if (e := endpointer.push(f))]
    kinds = [k for _, k in events]
    assert kinds[0] is Kind.STARTED and kinds.count(Kind.ENDED) == 1
    ended_at = next(i for i, k in events if k is Kind.ENDED)
    speech_end = 25 + len(speech) // 320
    assert speech_end <= ended_at <= speech_end + 300 // 20 + 2  # at most the trailing silence after the speech
    with pytest.raises(ValueError, match="20 ms frames"):
        endpointer.push(b"\x00" * 100)


def test_sentences_are_cut_as_they_stream_and_heard_parts_are_prefixes() -> None:
    splitter = SentenceSplitter()
    out = []
    for delta in ["Hello Mr. Smith. Your ", "order is ready! Is ", "there anything else?"]:
        out += splitter.push(delta)
    assert out == ["Hello Mr. Smith.", "Your order is ready!"]
    assert splitter.flush() == "Is there anything else?"
    spoken = [Spoken("One two three.", 0, 1000), Spoken("Four five six seven.", 1000, 2000)]
    assert heard_part(spoken, 1500) == "One two three. Four five"
    assert heard_part(spoken, 100) == ""
    assert wer("one two three", "one too three") == pytest.approx(1 / 3)


def test_without_any_tts_the_error_names_the_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "piper", None)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(VoiceError) as caught:
        offline_tts()
    assert "masterlinc[voice,voice-piper]" in str(caught.value) and "espeak-ng" in str(caught.value)
    with pytest.raises(MissingExtra, match=r"masterlinc\[voice-piper\]"):
        offline_tts("piper")


@pytest.mark.anyio
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="Debian's espeak-ng is not installed")
async def test_espeak_speaks_at_8khz_and_is_understood() -> None:
    from agents.basma.stt import WhisperStt

    audio = b"".join([c async for c in EspeakTts().synthesize("Please hold for billing.")])
    assert len(audio) > 8000
    text = await WhisperStt().transcribe(audio)
    assert "hold" in text.lower() or "billing" in text.lower(), text  # keyword check: espeak is the robotic voice


def test_a_wav_from_a_pipe_is_read_even_with_placeholder_sizes() -> None:
    header = b"RIFF\xff\xff\xff\xffWAVEfmt " + (16).to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (22050).to_bytes(4, "little")
    header += (44100).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    data = header + b"data\xff\xff\xff\xff" + b"\x01\x00" * 10 + b"\x07"
    assert wav_pcm(data) == (22050, b"\x01\x00" * 10)


def test_the_scripted_caller_sounds_the_same_on_every_run(piper: PiperTts) -> None:
    """Piper samples noise: the agent's voice varies, the simulated caller's must not (reproducible tests)."""
    text = "My internet is broken, I need technical help."
    assert piper.render(text, vary=False) == piper.render(text, vary=False)
    assert PiperCaller(piper).speech(text) == PiperCaller(piper).speech(text)
    assert piper.render(text, vary=True) != piper.render(text, vary=True)  # a natural voice samples noise
