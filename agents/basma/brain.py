"""What decides what Basma says and does: the deterministic receptionist policy (offline) or an LLM.

A brain gets the dialogue so far and what just happened (the call started, the caller said something, the caller
pressed keys) and streams the reply's text; it acts through the :class:`Toolbox`, which is bound to the call the
session owns and waits until everything said so far has been played before a transfer, park or drop.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol


@dataclass(frozen=True)
class CallStarted:
    pass


@dataclass(frozen=True)
class CallerSaid:
    text: str


@dataclass(frozen=True)
class CallerPressed:
    digits: str


Heard = CallStarted | CallerSaid | CallerPressed


@dataclass
class Turn:
    role: Literal["caller", "agent"]
    text: str
    started_at: datetime
    ended_at: datetime
    latency_ms: float | None = None
    interrupted: bool = False
    dtmf: bool = False


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    message: str
    ends_call: bool = False


@dataclass(frozen=True)
class Destination:
    """Somewhere a caller can be sent: a human (extension or queue) by name."""

    name: str
    number: str
    description: str = ""
    keywords: tuple[str, ...] = field(default=())


class Toolbox(Protocol):
    destinations: Mapping[str, Destination]

    async def transfer(self, destination: str, summary: str) -> ToolResult: ...
    async def park(self) -> ToolResult: ...
    async def drop(self) -> ToolResult: ...
    async def send_message(self, text: str) -> ToolResult: ...


class Brain(Protocol):
    def respond(self, dialogue: Sequence[Turn], heard: Heard, tools: Toolbox) -> AsyncGenerator[str, None]:
        """The reply's text as it is produced (any split: the session cuts it at sentence boundaries)."""
