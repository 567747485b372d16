"""The seams Basma plugs into: audio in and out, call control, events. Each is a small Protocol; the live
implementations are :mod:`agents.basma.httpaudio` (3CX participant streams), :mod:`agents.basma.control` (commands
through the agent SDK's context of the owned call) and the runtime's event publisher; the in-memory ones are in
:mod:`agents.basma.loopback`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from hub.audio.format import FRAME_BYTES
from schemas.common import LegRef
from schemas.events import EventBase


@dataclass(frozen=True, kw_only=True)
class CallInfo:
    """The call a session owns: every command and event it makes is bound to this call and leg."""

    pbx_id: str
    call_id: str
    leg: LegRef
    caller_number: str = ""
    agent: str = "basma"


class ReplyWriter(Protocol):
    """Where reply audio goes: :class:`hub.audio.PacedWriter` (20 ms frames, at most ``lead_ms`` ahead)."""

    drained: asyncio.Event

    def write(self, pcm: bytes) -> None: ...
    def flush(self) -> None: ...
    def clear(self) -> float: ...
    def cancel(self) -> None: ...
    @property
    def played_ms(self) -> float: ...
    @property
    def queued_ms(self) -> float: ...
    @property
    def ahead_ms(self) -> float: ...


class AudioPort(Protocol):
    """One call's audio. Enter it to connect; ``caller_frames`` yields 20 ms s16le 8 kHz frames and ends when the
    call's audio ends (hang-up, or the leg left after a transfer); ``ended`` is set then."""

    ended: asyncio.Event

    @property
    def writer(self) -> ReplyWriter: ...
    def caller_frames(self) -> AsyncIterator[bytes]: ...
    def session(self) -> AbstractAsyncContextManager[AudioPort]: ...


@dataclass(frozen=True)
class ControlResult:
    ok: bool
    code: str = ""
    message: str = ""


class CallControl(Protocol):
    """Hub commands the brain may use, bound to the owned call (so a tool can never act on another call)."""

    async def transfer(self, to: str, summary: str | None, context: Mapping[str, Any] | None = None) -> ControlResult:
        """A warm transfer (D§7): the summary and context go with the call to the person who takes it."""
        ...

    async def park(self) -> ControlResult: ...
    async def drop(self) -> ControlResult: ...
    async def send_message(self, to: str, text: str) -> ControlResult: ...


class EventSink(Protocol):
    """:class:`hub.bus.EventPublisher` satisfies this."""

    async def publish(self, event: EventBase) -> object: ...  # EventPublisher returns the ack future
    async def flush(self, ack_wait: float = 10.0) -> None: ...


async def reframe(chunks: AsyncIterable[bytes], frame_bytes: int = FRAME_BYTES) -> AsyncIterator[bytes]:
    """Chunks of any size in, whole 20 ms frames out (a trailing partial frame is dropped at the end)."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        whole = len(buffer) - len(buffer) % frame_bytes
        for i in range(0, whole, frame_bytes):
            yield bytes(buffer[i : i + frame_bytes])
        del buffer[:whole]
