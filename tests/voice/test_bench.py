"""The voice.turn benchmark runs (quick sizes) over the simulator's stream path and reports its figures next to the
raw STT + TTS time (about 30 s of real-time calls: a long variant)."""

from __future__ import annotations

import math

import pytest

from agents.basma.bench import voice_turn
from hub.bench.registry import BenchOptions, all_benchmarks

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_voice_turn_is_measured_on_the_simulator_next_to_raw_stt_and_tts() -> None:
    assert "voice.turn" in all_benchmarks()
    result = await voice_turn(BenchOptions(quick=True))
    figures = {f.name: f.value for f in result.figures + result.baseline}
    assert {"turn p50", "turn p95", "calls without underrun", "raw STT + TTS (first sentence)"} <= set(figures)
    assert 0 < figures["turn p50"] <= figures["turn p95"] < 5000
    assert figures["calls without underrun"] >= 1
    assert not math.isnan(figures["RSS per added call"])
    assert result.ratio is not None and result.ratio > 0
