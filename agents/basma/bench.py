"""voice.turn: Basma's turn latency over the real stream path, concurrent calls on this machine, RSS per call (D§11).

Each call is a route-point call on the simulator: the caller speaks with the piper voice (``sim.say``), Basma hears
it over the participant stream (GET, paced in real time) and answers over the chunked POST into the simulator's
real-time playout buffer. Latency is from the simulator's ground-truth end of the caller's utterance to the first
non-silent reply frame the simulator receives (both from its journal). Underruns are the simulator's: its playout
buffer running empty for more than 40 ms inside a reply utterance.

The baseline, measured in the same run on the same audio, is the raw work a turn cannot avoid: faster-whisper on the
utterance plus piper on the reply's first sentence; the endpointing silence is reported next to it. Concurrency runs
N calls at once in one process (the models are shared). The simulator runs in the same process (its share of the
CPU is small: pacing and counting 20 ms frames); the bus is not involved (commands go to an in-memory control),
so the figures are the audio path's. RSS is sampled every 0.2 s; growth per call is between the smallest and the
largest level.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx

from agents.basma.caller import PiperCaller
from agents.basma.httpaudio import HttpStreamAudio
from agents.basma.loopback import MemoryCallControl
from agents.basma.policy import PolicyBrain, parse_policy
from agents.basma.ports import CallInfo
from agents.basma.session import VoiceSession
from agents.basma.settings import SessionConfig
from agents.basma.stt import WhisperStt
from agents.basma.tts import PiperTts
from hub.bench.registry import BenchOptions, BenchResult, Figure, benchmark, percentile
from hub.pbx import TokenProvider
from hub.simulator import SimHandle, running_simulator
from schemas.common import LegRef

POLICY = """\
greeting: "Hello, how can I help?"
destinations:
  - {name: billing, keywords: [bill, invoice], transfer: "101"}
  - {name: support, keywords: [broken, help], transfer: "102"}
"""
ASK = "I have a question about my bill."
NO = "No."
REPLY = "You'd like billing, is that right?"
ROUTE_POINT = "800"


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class _Line:
    """What every call of a run shares: the simulator, one HTTP client and one PBX token (3CX keeps one per client)."""

    sim: SimHandle
    http: httpx.AsyncClient
    tokens: TokenProvider
    stt: WhisperStt
    tts: PiperTts


@dataclass
class _CallFigures:
    latencies: list[float] = field(default_factory=list)
    underruns: int = 0
    missed: int = 0


@contextlib.asynccontextmanager
async def _line(stt: WhisperStt, tts: PiperTts) -> AsyncIterator[_Line]:
    async with (
        running_simulator(synthesizer=PiperCaller(tts)) as sim,
        httpx.AsyncClient(base_url=sim.base_url, limits=httpx.Limits(max_connections=None)) as http,
    ):
        tokens = TokenProvider(http, sim.config.client_id, sim.config.client_secret)
        yield _Line(sim, http, tokens, stt, tts)


async def _conversation(line: _Line, turns: int, delay: float) -> _CallFigures:
    await asyncio.sleep(delay)
    policy = parse_policy(POLICY)
    call = line.sim.engine.place_call("+15550100", ROUTE_POINT)
    leg = line.sim.route_point_leg(call.callid)
    info = CallInfo(
        pbx_id="bench", call_id=f"BENCH{call.callid:04d}", leg=LegRef(dn=ROUTE_POINT, participant_id=leg.id)
    )
    audio = HttpStreamAudio(line.http, line.tokens, dn=ROUTE_POINT, participant_id=leg.id, connect_timeout_s=10)
    session = VoiceSession(
        info, audio, stt=line.stt, tts=line.tts, brain=PolicyBrain(policy), control=MemoryCallControl(),
        destinations=policy.destinations(), config=SessionConfig(),
    )  # fmt: skip
    task = asyncio.create_task(session.run())
    figures = _CallFigures()

    def agent_turns() -> int:
        return sum(1 for t in session.dialogue if t.role == "agent")

    async def replied(count: int) -> bool:
        deadline = time.monotonic() + 30
        while agent_turns() < count and time.monotonic() < deadline:  # noqa: ASYNC110 - polling the session's state
            await asyncio.sleep(0.02)
        return agent_turns() >= count

    try:
        await replied(1)
        for turn in range(turns):
            said = await line.sim.say(leg.id, ASK if turn % 2 == 0 else NO)
            if not await replied(2 + turn):
                figures.missed += 1
                break
            reply = next((r for r in line.sim.playout(leg.id).replies if r.first_loud_received_at > said.end), None)
            if reply is None:
                figures.missed += 1
            else:
                figures.latencies.append((reply.first_loud_received_at - said.end) * 1000)
    finally:
        line.sim.engine.hangup(call.callid)
        await asyncio.wait_for(task, 10)
    figures.underruns = len(line.sim.playout(leg.id).underruns)
    return figures


async def _level(n: int, turns: int, stt: WhisperStt, tts: PiperTts) -> tuple[_CallFigures, float]:
    """``n`` calls at once (starts 0.7 s apart); returns their figures together and the peak RSS (MB)."""
    peak = _rss_mb()

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, _rss_mb())
            await asyncio.sleep(0.2)

    async with _line(stt, tts) as line:
        sampler = asyncio.create_task(sample())
        try:
            results = await asyncio.gather(*(_conversation(line, turns, 0.7 * i) for i in range(n)))
        finally:
            sampler.cancel()
    total = _CallFigures(
        latencies=[x for r in results for x in r.latencies],
        underruns=sum(r.underruns for r in results),
        missed=sum(r.missed for r in results),
    )
    return total, peak


@benchmark("voice.turn", description="Basma's turn latency on the simulator's stream path, concurrent calls, RSS/call")
async def voice_turn(options: BenchOptions) -> BenchResult:
    stt, tts = WhisperStt(), PiperTts()
    loaded_at = time.perf_counter()
    await asyncio.to_thread(stt.load)
    await asyncio.to_thread(tts.load)
    load_s = time.perf_counter() - loaded_at
    caller = PiperCaller(tts)
    ask = await asyncio.to_thread(caller.speech, ASK)

    raw: list[float] = []
    for _ in range(options.scale(5, 2)):
        started = time.perf_counter()
        stt.transcribe_sync(ask)
        tts.render(REPLY)
        raw.append((time.perf_counter() - started) * 1000)
    raw_p50 = statistics.median(raw)

    single, _ = await _level(1, options.scale(8, 2), stt, tts)
    lat = single.latencies
    p50, p95 = percentile(lat, 50), percentile(lat, 95)

    levels = [1, 2, 3, 4] if not options.quick else [1, 2]
    rss: dict[int, float] = {}
    underruns: dict[int, int] = {}
    missed: dict[int, int] = {}
    level_p50: dict[int, float] = {}
    for n in levels:
        result, rss[n] = await _level(n, options.scale(3, 1), stt, tts)
        underruns[n], missed[n] = result.underruns, result.missed
        level_p50[n] = round(percentile(result.latencies, 50), 1) if result.latencies else float("nan")
    clean = [n for n in levels if underruns[n] == 0 and missed[n] == 0]
    concurrent = max((n for n in levels if all(m in clean for m in levels if m <= n)), default=0)
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
        notes=(
            f"{len(lat)} turns on one call; per level (calls: underruns / turns missed / turn p50 ms): "
            + ", ".join(f"{n}: {underruns[n]}/{missed[n]}/{level_p50[n]}" for n in levels)
            + "; simulator in the same process; D§11 times from the simulator's journal"
        ),
    )
