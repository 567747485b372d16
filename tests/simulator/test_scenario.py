"""Scenarios: validation that names the line, identical replays, the accelerated clock keeping order, load mode,
and ``masterlinc sim --scenario``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from hub.simulator import SimClock, SimConfig, SimHandle, running_simulator
from hub.simulator.load import run_load
from hub.simulator.scenario import ScenarioError, parse_scenario
from tests.simulator.conftest import Frames, fetch_token, open_ws

pytestmark = pytest.mark.anyio

FULL = textwrap.dedent("""\
    name: a day at reception
    steps:
      - call: {from: "+15550100", to: "800", caller_name: Dana, did: "+15551000", as: dana}
      - say: {call: dana, tone: {hz: 440, ms: 200}}
      - dtmf: {call: dana, digits: "2#"}
        after: 0.5
      - transfer: {call: dana, to: "101"}
      - answer: {call: dana, dn: "101"}
        after: 1
      - park: {call: dana, orbit: SP1}
      - pickup: {orbit: SP1, by: "102", as: resumed}
        after: 2
      - call: {from: "101", to: "+15550199", as: out}
      - answer_remote: {call: out}
      - presence: {number: "101", profile: Away}
      - chat: {from: "+15550100", message: "thanks!"}
      - fault: {kind: rest_errors, status: 503, count: 1}
      - wait: 3
      - hangup: {call: resumed}
      - hangup: {call: out}
        at: 10
""")


def scenario_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("steps:\n  - call: {from: 1}\n", 2, "needs 'to'"),
        ("steps:\n  - call: {from: '1', to: '800'}\n  - hangup: {call: dana}\n", 3, "not defined"),
        ("steps:\n  - call: {from: '1', to: '800', as: a}\n  - dtmf: {call: a, digits: '12x'}\n", 3, "digits"),
        ("steps:\n  - call: {from: '1', to: '800'}\n  - ring: {}\n", 3, "unknown action 'ring'"),
        ("steps:\n  - call: {from: '1', to: '800'}\n    at: 5\n  - wait: 1\n    at: 2\n", 5, "only 'wait"),
        ("steps:\n  - call: {from: '1', to: '800'}\n    at: 5\n  - call: {from: '1', to: '800'}\n    at: 2\n", 5,
         "keep time order"),
        ("steps:\n  - call: {from: '1', to: '800', as: a}\n  - say: {call: a, text: hi, tone: {hz: 1, ms: 1}}\n", 3,
         "exactly one of"),
        ("steps:\n  - call: {from: '1', to: '800', as: a}\n  - say: {call: a, wav: missing.wav}\n", 3, "no such WAV"),
        ("steps:\n  - fault: {kind: explode}\n", 2, "unknown fault"),
        ("steps:\n  - call: {from: '1', to: 800}\n", 2, "quote numbers"),
        ("steps:\n  - call: {from: '1', to: '800'}\n    after: -1\n", 3, "after must be"),
        ("speed: 0\nsteps:\n  - wait: 1\n", 1, "speed"),
        ("name: x\nsteps: []\n", 2, "non-empty"),
        ("steps:\n  - call: {from: '1', to: '800'}\n  - call: {from: '1', to: '800'}\n    load: {}\n", 3,
         "exactly one action"),
        ("steps:\n  - call: {from: '1', to: '800'\n", 3, "not valid YAML"),
        ("steps:\n  - presence: {number: '101'}\n", 2, "at least one"),
        ("stepz:\n  - wait: 1\n", 1, "unknown section"),
    ],
    ids=["missing_arg", "undefined_call", "bad_digits", "unknown_action", "wait_with_at", "time_order",
         "two_sources", "missing_wav", "unknown_fault", "unquoted_number", "negative_after", "bad_speed",
         "no_steps", "two_actions", "bad_yaml", "empty_presence", "unknown_section"],
)  # fmt: skip
def test_a_broken_scenario_is_rejected_naming_its_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "broken.yaml", base_dir=tmp_path)
    assert info.value.line == line, str(info.value)
    assert message in info.value.problem
    assert str(info.value).startswith(f"broken.yaml:{line}: ")


def test_masterlinc_sim_rejects_a_broken_scenario_file_with_its_line(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "steps:\n  - call: {from: '1', to: '800', as: a}\n  - hangup: {call: b}\n")
    out = subprocess.run([sys.executable, "-m", "hub.cli", "sim", "--scenario", str(path)],
                         capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert out.returncode == 2
    assert f"{path}:3:" in out.stderr
    assert "Traceback" not in out.stderr


# --------------------------------------------------------------------------- running


async def _play(text: str, config: SimConfig) -> SimHandle:
    async with running_simulator(config) as sim:
        await sim.run_scenario(parse_scenario(text, "full.yaml"))
        return sim


async def test_a_scenario_does_what_it_says(tmp_path: Path) -> None:
    sim = await _play(FULL, SimConfig(clock_speed=20))
    dana = 1
    assert sim.journal.transitions(dana) == [
        ("800", 1, None, "Connected"),
        ("800", 1, "Connected", None),  # transferred to 101
        ("101", 2, None, "Ringing"),
        ("101", 2, "Ringing", "Connected"),
        ("101", 2, "Connected", None),  # parked at SP1
        ("102", 4, None, "Connected"),  # picked up by 102 (3 was 102's leg dialing the pickup code)
        ("102", 4, "Connected", None),  # hung up
    ]
    actions = [e.detail["action"] for e in sim.journal.of("state") if e.callid == dana and e.participant_id is None]
    assert actions == ["call_placed", "parked", "resumed", "call_ended"]
    [dtmf] = [e for e in sim.journal.of("state") if e.detail.get("action") == "dtmf"]
    assert dtmf.detail["digits"] == "2#"
    assert [e.detail["field"] for e in sim.journal.of("presence")] == ["CurrentProfileName"]
    assert [e.detail["message"] for e in sim.journal.of("chat")] == ["thanks!"]
    assert [e.detail["phase"] for e in sim.journal.of("fault")] == ["injected"]
    assert [e.detail["action"] for e in sim.journal.of("media")] == ["utterance"]
    steps = [e.detail["planned_s"] for e in sim.journal.of("scenario")]
    assert steps == sorted(steps) and steps[-1] == 10


async def test_a_scenario_replays_identically_twice() -> None:
    first = await _play(FULL, SimConfig(clock_speed=20, sequence="gaps"))
    second = await _play(FULL, SimConfig(clock_speed=20, sequence="gaps"))
    assert first.journal.replay_view() == second.journal.replay_view()
    assert len(first.journal.entries) > 30
    assert [e.at for e in first.journal.entries] != [e.at for e in second.journal.entries]  # only the clock differs


async def test_the_accelerated_clock_keeps_event_order() -> None:
    text = textwrap.dedent("""\
        steps:
          - call: {from: "+15550100", to: "101", as: a}
          - call: {from: "+15550101", to: "102", as: b}
            at: 10
          - answer: {call: b}
            at: 15
          - answer: {call: a}
            at: 15.5
          - hangup: {call: a}
            at: 40
          - call: {from: "+15550102", to: "800", as: c}
            at: 40.01
          - hangup: {call: b}
            at: 60
          - hangup: {call: c}
            at: 60
    """)
    config = SimConfig(clock_speed=200, token_lifetime_s=30, repeat_upserts_s=None)
    async with running_simulator(config) as sim:
        token = await fetch_token(sim)
        async with await open_ws(sim, token) as ws:
            started = time.monotonic()
            run = await sim.run_scenario(parse_scenario(text, "fast.yaml"))
            real = time.monotonic() - started
            frames = [await Frames(ws).next() for _ in range(8)]
        async with httpx.AsyncClient(base_url=sim.base_url) as client:
            expired = await client.get("/callcontrol", headers={"Authorization": f"Bearer {token}"})
    assert real < 3  # 60 simulated seconds
    assert run.finished_at - run.started_at >= 60
    for entry in sim.journal.of("scenario"):  # never early
        assert entry.at >= run.started_at + entry.detail["planned_s"]
    changes = [(e.dn, e.participant_id, e.new_status) for e in sim.journal.of("state") if e.participant_id]
    assert changes == [("101", 1, "Ringing"), ("102", 2, "Ringing"), ("102", 2, "Connected"),
                       ("101", 1, "Connected"), ("101", 1, None), ("800", 3, "Connected"), ("102", 2, None),
                       ("800", 3, None)]  # fmt: skip
    seen = [(f["event"]["entity"].split("/")[2], int(f["event"]["entity"].split("/")[4]), f["event"]["event_type"])
            for f in frames]  # fmt: skip
    assert seen == [(dn, pid, 1 if status is None else 0) for dn, pid, status in changes]  # the journal's order
    assert [f["sequence"] for f in frames] == list(range(1, 9))
    assert expired.status_code == 401  # the token issuer runs on the same clock: 30 simulated seconds have passed


async def test_a_step_the_pbx_refuses_stops_the_run_with_its_line() -> None:
    text = "steps:\n  - call: {from: '+15550100', to: '800', as: a}\n  - answer: {call: a}\n"
    async with running_simulator(SimConfig()) as sim:
        with pytest.raises(ScenarioError) as info:
            await sim.run_scenario(parse_scenario(text, "refused.yaml"))
    assert info.value.line == 3
    assert "Ringing" in info.value.problem and "800 (Connected)" in info.value.problem


async def test_speech_steps_use_the_pluggable_synthesizer(tmp_path: Path) -> None:
    from hub.simulator import tone

    said: list[str] = []

    def synthesizer(text: str) -> bytes:
        said.append(text)
        return tone(300, 100)

    text = "steps:\n  - call: {from: '+15550100', to: '800', as: a}\n  - say: {call: a, text: good morning}\n"
    async with running_simulator(SimConfig(), synthesizer=synthesizer) as sim:
        await sim.run_scenario(scenario_file(tmp_path, text))
        [utterance] = sim.media.legs[1].utterances
    assert said == ["good morning"]
    assert utterance.label == "good morning" and utterance.ms == 100


# --------------------------------------------------------------------------- load mode


async def test_load_mode_keeps_n_calls_up_at_a_call_rate() -> None:
    async with running_simulator(SimConfig(clock_speed=10), clock=SimClock(10)) as sim:
        stats = await run_load(sim.sim, calls=20, rate=100, hold=1.0, duration=2.0)
        assert sim.engine.calls == {}
    assert stats.peak_concurrent == 20
    assert 30 <= stats.placed <= 45  # 20 at once, then one as each ends, for 2 simulated seconds
    assert stats.ended == stats.placed


async def test_a_load_step_in_a_scenario() -> None:
    text = "speed: 20\nsteps:\n  - load: {calls: 5, rate: 50, hold: 0.5}\n"
    async with running_simulator(SimConfig(clock_speed=20)) as sim:
        run = await sim.run_scenario(parse_scenario(text, "load.yaml"))
    [stats] = run.load
    assert (stats.placed, stats.ended, stats.peak_concurrent) == (5, 5, 5)


# --------------------------------------------------------------------------- the CLI


def test_masterlinc_sim_plays_a_scenario_and_exits(tmp_path: Path) -> None:
    from hub.natsd import free_port

    path = scenario_file(tmp_path, "speed: 50\nsteps:\n  - call: {from: '+15550100', to: '800', as: a}\n"
                                   "  - hangup: {call: a}\n    after: 5\n")  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "hub.cli", "sim", "--port", str(free_port()), "--scenario", str(path),
         "--no-wait-for-client", "--exit-after"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["calls"] == {"a": 1}
    assert summary["simulated_s"] >= 5


def test_the_load_benchmark_is_registered() -> None:
    from hub.bench.registry import all_benchmarks

    assert "sim.load" in all_benchmarks()
