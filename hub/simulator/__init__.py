"""A faithful 3CX V20 simulator: Call Control REST, websocket and audio streams, the XAPI subset, a call engine,
and the ground-truth journal."""

from hub.simulator.app import Simulator
from hub.simulator.clock import SimClock
from hub.simulator.config import ExtensionConfig, SimConfig
from hub.simulator.directory import Directory, User
from hub.simulator.engine import Call, CallEngine, Leg, Segment, SimError
from hub.simulator.journal import Journal, JournalEntry
from hub.simulator.media import InboundAudio, LegMedia, Media, Playout, ReplyUtterance, Underrun, Utterance
from hub.simulator.odata import ODataError
from hub.simulator.server import SimHandle, running_simulator
from hub.simulator.sound import Synthesizer, noise, peak, read_wav, silence, tone, tone_synthesizer, write_wav

__all__ = [
    "Call",
    "CallEngine",
    "Directory",
    "ExtensionConfig",
    "InboundAudio",
    "Journal",
    "JournalEntry",
    "Leg",
    "LegMedia",
    "Media",
    "ODataError",
    "Playout",
    "ReplyUtterance",
    "Segment",
    "SimClock",
    "SimConfig",
    "SimError",
    "SimHandle",
    "Simulator",
    "Synthesizer",
    "Underrun",
    "User",
    "Utterance",
    "noise",
    "peak",
    "read_wav",
    "running_simulator",
    "silence",
    "tone",
    "tone_synthesizer",
    "write_wav",
]
