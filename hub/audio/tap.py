"""The hub's own outgoing audio, published for the hub-side recorder (D§7: recordings mix it in).

A :class:`hub.audio.PacedWriter` calls its ``tap`` with each audio frame and how long until it plays; the tap
publishes the frame on the leg's audio subject (core NATS, never streamed or recorded in the event log) with the
wall-clock time it plays, so a recorder in another process can put it at the right place in the mix.
"""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client

from schemas import subjects

PLAYS_AT = "Ml-Plays-At"


class AudioTap:
    def __init__(self, nc: Client, pbx_id: str, call_id: str, participant_id: int) -> None:
        self._nc = nc
        self.subject = subjects.audio_tap_subject(pbx_id, call_id, participant_id)
        self._pending: set[asyncio.Future[None]] = set()
        self.frames = 0

    def __call__(self, frame: bytes, plays_in_s: float) -> None:
        future = asyncio.ensure_future(
            self._nc.publish(self.subject, frame, headers={PLAYS_AT: f"{time.time() + plays_in_s:.6f}"})
        )
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        self.frames += 1
