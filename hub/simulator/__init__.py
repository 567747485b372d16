"""A faithful 3CX V20 simulator: Call Control REST, websocket and audio streams, the XAPI subset, a call engine,
the ground-truth journal, scenarios, load mode and fault injection."""

from hub.simulator.app import Simulator
from hub.simulator.clock import SimClock
from hub.simulator.config import ExtensionConfig, SimConfig
from hub.simulator.directory import Directory, User
from hub.simulator.engine import Call, CallEngine, Leg, Segment, SimError
from hub.simulator.faults import FAULT_KINDS, Faults
from hub.simulator.journal import Journal, JournalEntry
from hub.simulator.load import LoadStats, run_load
from hub.simulator.media import InboundAudio, LegMedia, Media, Playout, ReplyUtterance, Underrun, Utterance
from hub.simulator.odata import ODataError
from hub.simulator.runner import ScenarioRun, run_scenario
from hub.simulator.scenario import Scenario, ScenarioError, Step, load_scenario, parse_scenario
from hub.simulator.server import SimHandle, running_simulator
from hub.simulator.sound import Synthesizer, noise, peak, read_wav, silence, tone, tone_synthesizer, write_wav

__all__ = [
    "FAULT_KINDS",
    "Call",
    "CallEngine",
    "Directory",
    "ExtensionConfig",
    "Faults",
    "InboundAudio",
    "Journal",
    "JournalEntry",
    "Leg",
    "LegMedia",
    "LoadStats",
    "Media",
    "ODataError",
    "Playout",
    "ReplyUtterance",
    "Scenario",
    "ScenarioError",
    "ScenarioRun",
    "Segment",
    "SimClock",
    "SimConfig",
    "SimError",
    "SimHandle",
    "Simulator",
    "Step",
    "Synthesizer",
    "Underrun",
    "User",
    "Utterance",
    "load_scenario",
    "noise",
    "parse_scenario",
    "peak",
    "read_wav",
    "run_load",
    "run_scenario",
    "running_simulator",
    "silence",
    "tone",
    "tone_synthesizer",
    "write_wav",
]
