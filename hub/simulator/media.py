"""Audio on the simulated legs (reference §4), sans-IO: what the remote party says, and what the app plays to them.

Each Connected leg has a media timeline whose sample 0 is the moment it connected:

- ``InboundAudio`` is what the remote party says into the leg, i.e. what the app hears on GET ``/stream``.
  Scripted callers schedule utterances on it (back to back, never overlapping); anywhere nobody speaks is silence.
  The schedule *is* the ground truth: every utterance's start and end go in the journal when it is scheduled, and a
  GET reader renders its bytes from the schedule, so what the app receives matches the journal to the sample.
- ``Playout`` is the real-time playout buffer behind POST ``/stream``. Audio plays from the moment it arrives (or
  when what is already buffered has played), at 16 bytes/ms; sending ahead only fills the buffer. Because the buffer
  changes only when audio arrives, playout is computed exactly at each arrival, with no timer. D§11 terms:
  a *reply utterance* is a run of non-silent audio whose loud parts are less than ``utterance_gap_ms`` apart; an
  *underrun* is the buffer running empty for more than ``underrun_ms`` between two loud parts of one utterance.
  The first loud sample of each reply utterance is journalled with when it arrived and when it played (the voice
  latency benchmark measures from the caller's utterance end to it).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hub.audio.format import BYTES_PER_MS, SAMPLE_RATE
from hub.simulator.config import SimConfig
from hub.simulator.engine import CallEngine, ChangeKind, Leg, SimError
from hub.simulator.sound import first_loud_sample, peak

BYTES_PER_S = BYTES_PER_MS * 1000
SLICE_BYTES = 320  # loudness is judged per 20 ms slice, then to the sample inside the first loud one


@dataclass(frozen=True)
class Utterance:
    """Something the remote party said into a leg: ground-truth times in simulated epoch seconds."""

    id: int
    participant_id: int
    callid: int
    start: float
    end: float
    samples: int
    label: str = ""

    @property
    def ms(self) -> float:
        return self.samples / (SAMPLE_RATE // 1000)


@dataclass
class _Scheduled:
    utterance: Utterance
    first_byte: int
    pcm: bytes

    @property
    def end_byte(self) -> int:
        return self.first_byte + len(self.pcm)


class InboundAudio:
    def __init__(self, epoch: float) -> None:
        self.epoch = epoch
        self._items: list[_Scheduled] = []

    def position(self, now: float) -> int:
        """The byte offset of ``now`` on this leg's timeline (whole samples)."""
        return 2 * max(0, math.floor((now - self.epoch) * SAMPLE_RATE))

    def time_of(self, byte: int) -> float:
        return self.epoch + byte / BYTES_PER_S

    def schedule(self, pcm: bytes, now: float) -> tuple[float, float, int]:
        """Queue ``pcm`` after anything already scheduled; returns (start, end, first byte)."""
        first = 2 * max(0, math.ceil((now - self.epoch) * SAMPLE_RATE))
        if self._items:
            first = max(first, self._items[-1].end_byte)
        keep_from = first - 10 * BYTES_PER_S  # a late reader still finds the last 10 s
        self._items = [item for item in self._items if item.end_byte > keep_from]
        return self.time_of(first), self.time_of(first + len(pcm)), first

    def add(self, item: _Scheduled) -> None:
        self._items.append(item)

    def render(self, start: int, length: int) -> bytes:
        """Bytes [start, start + length) of what the remote party says (silence where nobody speaks)."""
        out = bytearray(length)
        end = start + length
        for item in self._items:
            if item.end_byte <= start or item.first_byte >= end:
                continue
            lo, hi = max(start, item.first_byte), min(end, item.end_byte)
            out[lo - start : hi - start] = item.pcm[lo - item.first_byte : hi - item.first_byte]
        return bytes(out)

    def cut(self, at_byte: int) -> list[Utterance]:
        """The leg ended: drop what was not yet said; returns utterances that were cut short."""
        cut = [item.utterance for item in self._items if item.end_byte > at_byte]
        self._items = [item for item in self._items if item.first_byte < at_byte]
        return cut


@dataclass
class ReplyUtterance:
    """A run of loud audio the app played to the remote party."""

    stream: int
    first_loud_received_at: float
    first_loud_played_at: float
    last_loud_played_at: float
    underruns: int = 0


@dataclass(frozen=True)
class Underrun:
    start: float
    end: float

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000


Journal = Callable[..., None]


class Playout:
    def __init__(self, config: SimConfig, journal: Journal) -> None:
        self._config = config
        self._journal = journal
        self.pcm = bytearray()  # everything accepted, in play order
        self.dropped_bytes = 0
        self.streams = 0
        self.replies: list[ReplyUtterance] = []
        self.underruns: list[Underrun] = []
        self.play_end: float | None = None  # when everything accepted so far has played
        self._carry = b""
        self._last_loud: float | None = None
        self._starved: list[Underrun] = []  # empty-buffer stretches since the last loud audio

    def open_stream(self) -> int:
        self.streams += 1
        self._carry = b""
        return self.streams

    def buffered_ms(self, now: float) -> float:
        return max(0.0, (self.play_end or now) - now) * 1000

    def played_ms(self, now: float) -> float:
        """How much of the accepted audio has played by ``now``."""
        return max(0.0, len(self.pcm) / BYTES_PER_MS - self.buffered_ms(now))

    def feed(self, data: bytes, now: float, stream: int) -> None:
        data = self._carry + data
        whole = len(data) - len(data) % 2
        data, self._carry = data[:whole], data[whole:]
        if not data:
            return
        limit = self._config.playout_max_ahead_ms
        if limit is not None and self.buffered_ms(now) > limit:
            self.dropped_bytes += len(data)
            self._journal("playout_dropped", stream=stream, bytes=len(data), buffered_ms=self.buffered_ms(now))
            return
        if self.play_end is not None and self.play_end < now:
            self._starved.append(Underrun(self.play_end, now))
        start = now if self.play_end is None else max(self.play_end, now)
        for offset in range(0, len(data), SLICE_BYTES):
            piece = data[offset : offset + SLICE_BYTES]
            if peak(piece) <= self._config.silence_threshold:
                continue
            at = start + offset / BYTES_PER_S
            self._loud(piece, at, now, stream)
        self.play_end = start + len(data) / BYTES_PER_S
        self.pcm += data

    def _loud(self, piece: bytes, at: float, now: float, stream: int) -> None:
        gap_s = self._config.utterance_gap_ms / 1000
        if self._last_loud is None or at - self._last_loud > gap_s:
            index = first_loud_sample(piece, self._config.silence_threshold) or 0
            first = at + 2 * index / BYTES_PER_S
            self.replies.append(ReplyUtterance(stream, now, first, first))
            self._journal("reply_started", stream=stream, received_at=now, played_at=first,
                          reply=len(self.replies))  # fmt: skip
        else:
            for starved in self._starved:
                if starved.ms > self._config.underrun_ms:
                    self.underruns.append(starved)
                    self.replies[-1].underruns += 1
                    self._journal("underrun", stream=stream, start=starved.start, end=starved.end, ms=starved.ms)
        self._starved.clear()
        self._last_loud = at + len(piece) / BYTES_PER_S
        self.replies[-1].last_loud_played_at = self._last_loud


@dataclass
class LegMedia:
    participant_id: int
    callid: int
    dn: str
    inbound: InboundAudio
    playout: Playout
    utterances: list[Utterance] = field(default_factory=list)
    ended_at: float | None = None


class Media:
    """Every leg's audio, created when the leg connects and kept after it ends (for tests to read)."""

    def __init__(self, engine: CallEngine) -> None:
        self.engine = engine
        self.config = engine.config
        self.legs: dict[int, LegMedia] = {}
        self._utterance_ids = itertools.count(1)
        engine.subscribe(self._on_change)

    def record(self, leg: Leg | LegMedia, action: str, **detail: Any) -> None:
        pid = leg.id if isinstance(leg, Leg) else leg.participant_id
        self.engine.journal.add(self.engine.clock(), "media", callid=leg.callid, dn=leg.dn, participant_id=pid,
                                legid=leg.legid if isinstance(leg, Leg) else None,
                                detail={"action": action, **detail})  # fmt: skip

    def _on_change(self, kind: ChangeKind, leg: Leg, attached: dict[str, Any] | None) -> None:
        media = self.legs.get(leg.id)
        if kind == "upsert" and leg.status == "Connected" and (media is None or media.ended_at is not None):
            snapshot = dataclasses.replace(leg)

            def journal(action: str, **detail: Any) -> None:
                self.record(snapshot, action, **detail)

            media = LegMedia(
                leg.id, leg.callid, leg.dn, InboundAudio(self.engine.clock()), Playout(self.config, journal)
            )
            self.legs[leg.id] = media
        elif kind == "remove" and media is not None and media.ended_at is None:
            now = self.engine.clock()
            media.ended_at = now
            for utterance in media.inbound.cut(media.inbound.position(now)):
                self.record(media, "utterance_cut", utterance=utterance.id, end=max(now, utterance.start))

    def leg(self, participant_id: int) -> LegMedia:
        media = self.legs.get(participant_id)
        if media is None:
            raise SimError(404, f"participant {participant_id} has no media (it never connected)")
        return media

    def live(self, participant_id: int) -> LegMedia:
        media = self.leg(participant_id)
        if media.ended_at is not None:
            raise SimError(404, f"participant {participant_id} has ended")
        return media

    def say(self, participant_id: int, pcm: bytes, *, label: str = "") -> Utterance:
        """The remote party of a Connected leg speaks ``pcm`` (s16le 8 kHz), after anything they already said."""
        if len(pcm) % 2:
            raise ValueError("s16le PCM has an even number of bytes")
        if not pcm:
            raise ValueError("nothing to say: the audio is empty")
        leg = self.engine.legs.get(participant_id)
        if leg is None or leg.status != "Connected":
            state = "gone" if leg is None else leg.status
            raise SimError(422, f"participant {participant_id} is {state}: only a Connected leg carries speech")
        media = self.live(participant_id)
        start, end, first = media.inbound.schedule(pcm, self.engine.clock())
        utterance = Utterance(next(self._utterance_ids), participant_id, leg.callid, start, end, len(pcm) // 2, label)
        media.inbound.add(_Scheduled(utterance, first, pcm))
        media.utterances.append(utterance)
        self.record(leg, "utterance", utterance=utterance.id, start=start, end=end, ms=utterance.ms, label=label)
        return utterance

    def playout(self, participant_id: int) -> Playout:
        return self.leg(participant_id).playout
