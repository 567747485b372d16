"""voice.turn: turn latency with the offline stack, concurrent calls on this machine, RSS per call (D§11).

Latency is from the ground-truth end of the caller's speech (the last voiced frame the simulated line sent) to the
first non-silent reply frame the far end receives, on a real-time line (20 ms frames, the writer's 500 ms lead).
The baseline, measured in the same run on the same audio, is the raw work a turn cannot avoid: faster-whisper on the
utterance plus piper on the reply's first sentence (the endpointing silence is reported next to it). Concurrency runs
N calls at once in one process (the models are shared) and counts underruns: a reply frame reaching a real-time
playout buffer more than 40 ms after it ran dry.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from agents.basma.g711 import ulaw_decode, ulaw_encode
from agents.basma.loopback import LoopbackAudio, MemoryCallControl
from agents.basma.policy import PolicyBrain, parse_policy
from agents.basma.ports import CallInfo
from agents.basma.session import VoiceSession
from agents.basma.settings import SessionConfig
from agents.basma.stt import WhisperStt, resample
from agents.basma.tts import PiperTts
from hub.bench.registry import BenchOptions, BenchResult, Figure, benchmark, percentile
from schemas.common import LegRef

POLICY = """\
greeting: "Hello, how can I help?"
destinations:
  - {name: billing, keywords: [bill, invoice], transfer: "101"}
  - {name: support, keywords: [broken, help], transfer: "102"}
"""
ASK = "I have a question about my bill."
REPLY = "You'd like billing, is that right?"


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _phone(tts: PiperTts, text: str) -> bytes:
    rate, audio = tts.render(text)
    pcm8 = resample(np.frombuffer(audio, dtype=np.int16), rate, 8000).astype(np.int16)
    return ulaw_decode(ulaw_encode(pcm8)).tobytes()


async def _conversation(
    index: int, turns: int, stt: WhisperStt, tts: PiperTts, ask: bytes, no: bytes, delay: float
) -> dict[str, Any]:
    policy = parse_policy(POLICY)
    await asyncio.sleep(delay)
    audio = LoopbackAudio(realtime=True)
    call = CallInfo(pbx_id="bench", call_id=f"BENCH{index:04d}", leg=LegRef(dn="800", participant_id=index + 1))
    session = VoiceSession(
        call, audio, stt=stt, tts=tts, brain=PolicyBrain(policy), control=MemoryCallControl(),
        destinations=policy.destinations(), config=SessionConfig(),
    )  # fmt: skip
    task = asyncio.create_task(session.run())
    latencies: list[float] = []

    def agent_turns() -> int:
        return sum(1 for t in session.dialogue if t.role == "agent")

    async def reply_done(count: int) -> None:
        deadline = time.monotonic() + 30
        while agent_turns() < count and time.monotonic() < deadline:  # noqa: ASYNC110 - polling the session's state
            await asyncio.sleep(0.02)

    await reply_done(1)
    for turn in range(turns):
        utterance = audio.say(ask if turn % 2 == 0 else no)
        await reply_done(2 + turn)
        if utterance.speech_end is not None:
            arrivals = audio.voiced_arrivals(utterance.speech_end)
            if arrivals:
                latencies.append((arrivals[0] - utterance.speech_end) * 1000)
    audio.hang_up()
    await task
    return {"latencies": latencies, "underruns": audio.underruns()}


async def _level(n: int, turns: int, stt: WhisperStt, tts: PiperTts, ask: bytes, no: bytes) -> dict[str, Any]:
    peak = _rss_mb()

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, _rss_mb())
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    try:
        results = await asyncio.gather(*(_conversation(i, turns, stt, tts, ask, no, 0.7 * i) for i in range(n)))
    finally:
        sampler.cancel()
    return {
        "latencies": [x for r in results for x in r["latencies"]],
        "underruns": sum(len(r["underruns"]) for r in results),
        "rss_mb": peak,
    }


@benchmark("voice.turn", description="Basma's turn latency (offline stack), concurrent calls, RSS per call")
async def voice_turn(options: BenchOptions) -> BenchResult:
    stt, tts = WhisperStt(), PiperTts()
    loaded_at = time.perf_counter()
    await asyncio.to_thread(stt.load)
    tts.load()
    load_s = time.perf_counter() - loaded_at
    ask, no = _phone(tts, ASK), _phone(tts, "No.")

    raw: list[float] = []
    for _ in range(options.scale(5, 2)):
        started = time.perf_counter()
        stt.transcribe_sync(ask)
        tts.render(REPLY)
        raw.append((time.perf_counter() - started) * 1000)
    raw_p50 = statistics.median(raw)

    single = await _level(1, options.scale(8, 2), stt, tts, ask, no)
    lat = single["latencies"]
    p50, p95 = percentile(lat, 50), percentile(lat, 95)

    levels = [1, 2, 3, 4] if not options.quick else [1, 2]
    rss: dict[int, float] = {}
    ok_levels: list[int] = []
    underruns: dict[int, int] = {}
    for n in levels:
        result = await _level(n, options.scale(3, 1), stt, tts, ask, no)
        rss[n], underruns[n] = result["rss_mb"], result["underruns"]
        if result["underruns"] == 0:
            ok_levels.append(n)
    concurrent = max((n for n in levels if all(m in ok_levels for m in levels if m <= n)), default=0)
    per_call = (rss[levels[-1]] - rss[levels[0]]) / (levels[-1] - levels[0])
    trailing = SessionConfig().vad.trailing_silence_ms
    return BenchResult(
        name="voice.turn",
        figures=[
            Figure(name="turn p50", value=round(p50, 1), unit="ms"),
            Figure(name="turn p95", value=round(p95, 1), unit="ms"),
            Figure(name="calls without underrun", value=concurrent, unit="calls"),
            Figure(name="RSS per added call", value=round(per_call, 1), unit="MB"),
            Figure(name="RSS with one call", value=round(rss[levels[0]], 1), unit="MB"),
        ],
        baseline=[
            Figure(name="raw STT + TTS (first sentence)", value=round(raw_p50, 1), unit="ms"),
            Figure(name="endpointing silence", value=trailing, unit="ms"),
            Figure(name="model load", value=round(load_s * 1000, 1), unit="ms"),
        ],
        headline="turn p50 / (raw STT + TTS + endpointing silence)",
        ratio=round(p50 / (raw_p50 + trailing), 3),
        better="lower",
        target="p50 <= 1500 ms; >= 3 concurrent calls with no underrun on 2 cores",
        met=None if options.quick else (p50 <= 1500 and concurrent >= 3),
        notes=f"{len(lat)} turns; underruns per level {underruns}; levels run {levels}",
    )
