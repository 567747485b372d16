"""The 3CX participant audio streams as Basma's :class:`AudioPort`: :class:`hub.audio.ParticipantStream` (the one
HTTP stream client, shared with the routing agent's prompts) with the caller's audio re-framed into 20 ms frames and
failures raised as :class:`AudioStreamError`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from agents.basma.errors import AudioStreamError
from agents.basma.ports import reframe
from hub.audio.stream import ParticipantStream
from hub.pbx.token import TokenSource

__all__ = ["HttpStreamAudio", "TokenSource"]


class HttpStreamAudio(ParticipantStream):
    error_type = AudioStreamError

    async def caller_frames(self) -> AsyncIterator[bytes]:
        async for frame in reframe(self.caller_audio()):
            yield frame
