"""A faithful 3CX V20 simulator: Call Control REST and websocket, a call engine, and the ground-truth journal."""

from hub.simulator.app import Simulator
from hub.simulator.config import ExtensionConfig, SimConfig
from hub.simulator.engine import Call, CallEngine, Leg, SimError
from hub.simulator.journal import Journal, JournalEntry
from hub.simulator.server import SimHandle, running_simulator

__all__ = [
    "Call",
    "CallEngine",
    "ExtensionConfig",
    "Journal",
    "JournalEntry",
    "Leg",
    "SimConfig",
    "SimError",
    "SimHandle",
    "Simulator",
    "running_simulator",
]
