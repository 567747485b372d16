"""Hub-side recording (D§7): 3CX has no record action, so the hub records a leg on its own DN itself.

The caller's side is the leg's participant stream (GET, s16le 8 kHz); the hub's own side is whatever the hub
plays to that leg, which its writers publish on the leg's audio tap (``ml.int.<pbx>.audio.<call>.<participant>``)
with the time each frame plays. Both are mixed into one mono WAV in the recordings store, written as the call goes
(so a long call does not sit in memory), and finished when the recording is stopped or the leg goes away.

Any worker may take ``stop_recording``: the one holding the recording is found through KV (``ML_RECORDINGS``)
and asked on the recording's control subject. ``recording.started`` and ``recording.stopped`` carry the file's
location; the stopped event is published exactly once, by the holder.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import sys
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from hub.audio.format import BYTES_PER_MS
from hub.audio.participant import StreamRefused, participant_audio
from hub.audio.tap import PLAYS_AT
from hub.logs import get_logger
from hub.pbx.token import TokenSource
from hub.worker.gateway import CommandFailure
from schemas import events as ev
from schemas import subjects
from schemas.commands import CommandBase
from schemas.common import ErrorCode, LegRef, utcnow
from schemas.identity import deterministic_event_id

log = get_logger(__name__)

RATE = 8000
MARGIN = RATE // 5  # 200 ms: the hub's frames are sent up to 500 ms ahead, so they arrive before the caller's
Publish = Callable[[ev.EventBase], Awaitable[None]]


def _mix_into(target: array.array[int], offset: int, frame: bytes) -> None:
    samples = array.array("h", frame)
    if sys.byteorder == "big":  # the wire is little-endian
        samples.byteswap()
    for i, s in enumerate(samples):
        j = offset + i
        if 0 <= j < len(target):
            v = target[j] + s
            target[j] = 32767 if v > 32767 else (-32768 if v < -32768 else v)


@dataclass
class Recording:
    recording_id: str
    pbx_id: str
    call_id: str
    leg: LegRef
    path: Path
    started_wall: float = field(default_factory=time.time)
    samples_written: int = 0
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    _t0: float | None = None  # wall time of the first caller sample
    _pending: array.array[int] = field(default_factory=lambda: array.array("h"))  # samples not yet written
    _base: int = 0  # sample index of _pending[0]
    _ahead: dict[int, bytes] = field(default_factory=dict)  # hub frames for samples the caller side has not reached

    @property
    def location(self) -> str:
        return self.path.resolve().as_uri()

    @property
    def seconds(self) -> float:
        return self.samples_written / RATE

    def caller_audio(self, chunk: bytes, at: float) -> None:
        if self._t0 is None:
            self._t0 = at - len(chunk) / 2 / RATE
        samples = array.array("h", chunk[: len(chunk) - len(chunk) % 2])
        if sys.byteorder == "big":
            samples.byteswap()
        self._pending.extend(samples)
        end = self._base + len(self._pending)
        for index in [i for i, f in self._ahead.items() if i + len(f) // 2 <= end]:
            _mix_into(self._pending, index - self._base, self._ahead.pop(index))

    def hub_audio(self, frame: bytes, plays_at: float) -> None:
        if self._t0 is None:
            return  # nothing of the call recorded yet: the hub's side alone has no timeline
        index = int((plays_at - self._t0) * RATE)
        if index < self._base:
            return  # too late to mix in (already written)
        if index + len(frame) // 2 <= self._base + len(self._pending):
            _mix_into(self._pending, index - self._base, frame)
        else:
            self._ahead[index] = frame

    def flush(self, out: wave.Wave_write, *, final: bool = False) -> None:
        keep = 0 if final else MARGIN
        ready = max(0, len(self._pending) - keep)
        if ready:
            chunk = self._pending[:ready]
            if sys.byteorder == "big":
                chunk.byteswap()
            out.writeframes(chunk.tobytes())
            del self._pending[:ready]
            self._base += ready
            self.samples_written += ready


class HubRecorder:
    """The recordings this worker holds, and the way to any other worker's."""

    def __init__(
        self,
        nc: Client,
        http: httpx.AsyncClient,
        tokens: TokenSource,
        store: Path,
        kv: KeyValue,
        publish: Publish,
        *,
        holder: str,
    ) -> None:
        self._nc = nc
        self._http = http
        self._tokens = tokens
        self.store = store
        self._kv = kv
        self._publish = publish
        self.holder = holder
        self.active: dict[str, Recording] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def _key(pbx_id: str, call_id: str, leg: LegRef) -> str:
        return f"{pbx_id}.{call_id}.{leg.participant_id}"

    async def start(self, command: CommandBase) -> dict[str, Any]:
        assert command.leg is not None
        assert command.call_id is not None
        key = self._key(command.pbx_id, command.call_id, command.leg)
        recording_id = str(deterministic_event_id("recording", command.command_id))
        existing = await self._lookup(key)
        if existing is not None:
            raise CommandFailure(ErrorCode.INVALID_STATE, f"this leg is already being recorded ({existing['id']})")
        self.store.mkdir(parents=True, exist_ok=True)
        path = self.store / f"{command.call_id}-{command.leg.participant_id}-{recording_id[:8]}.wav"
        recording = Recording(recording_id, command.pbx_id, command.call_id, command.leg, path)
        await self._kv.put(key, json.dumps({"id": recording_id, "holder": self.holder,
                                            "location": recording.location}).encode())  # fmt: skip
        self.active[recording_id] = recording
        started = asyncio.Event()
        task = asyncio.create_task(self._run(recording, key, started))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await started.wait()
        await self._event(recording, ev.RecordingStarted,
                          ev.RecordingStartedData(recording_id=recording_id, location=recording.location))  # fmt: skip
        return {"recording_id": recording_id, "location": recording.location}

    async def stop(self, command: CommandBase) -> dict[str, Any]:
        assert command.leg is not None
        assert command.call_id is not None
        entry = await self._lookup(self._key(command.pbx_id, command.call_id, command.leg))
        if entry is None:
            raise CommandFailure(ErrorCode.INVALID_STATE, "this leg is not being recorded")
        local = self.active.get(str(entry["id"]))
        if local is not None:
            return await self._stop_local(local)
        try:
            reply = await self._nc.request(subjects.recording_control_subject(command.pbx_id, str(entry["id"])),
                                           b"stop", timeout=5)  # fmt: skip
        except (NoRespondersError, TimeoutError, NatsTimeoutError):
            raise CommandFailure(
                ErrorCode.OUTCOME_UNKNOWN,
                f"the worker holding recording {entry['id']} does not answer (it may have stopped); the file so far "
                f"is at {entry['location']}",
            ) from None
        result: dict[str, Any] = json.loads(reply.data)
        return result

    async def _stop_local(self, recording: Recording) -> dict[str, Any]:
        recording.stopped.set()
        await recording.finished.wait()
        return {"recording_id": recording.recording_id, "location": recording.location,
                "seconds": round(recording.seconds, 3)}  # fmt: skip

    async def _lookup(self, key: str) -> dict[str, Any] | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return json.loads(entry.value) if entry.value else None

    async def _run(self, recording: Recording, key: str, started: asyncio.Event) -> None:
        leg = recording.leg
        tap: Subscription | None = None
        control: Subscription | None = None

        async def on_tap(msg: Msg) -> None:
            plays_at = float((msg.headers or {}).get(PLAYS_AT, "0") or 0)
            recording.hub_audio(msg.data, plays_at)

        async def on_control(msg: Msg) -> None:
            await msg.respond(json.dumps(await self._stop_local(recording)).encode())

        try:
            tap = await self._nc.subscribe(subjects.audio_tap_subject(recording.pbx_id, recording.call_id,
                                                                      leg.participant_id), cb=on_tap)  # fmt: skip
            control = await self._nc.subscribe(
                subjects.recording_control_subject(recording.pbx_id, recording.recording_id), cb=on_control
            )
            with wave.open(str(recording.path), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(RATE)
                started.set()
                await self._record(recording, out)
                recording.flush(out, final=True)
        except StreamRefused as exc:
            log.warning("recording could not read the leg", recording=recording.recording_id, error=str(exc))
        finally:
            started.set()
            for sub in (tap, control):
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
            self.active.pop(recording.recording_id, None)
            with contextlib.suppress(Exception):
                await self._kv.delete(key)
            size = recording.path.stat().st_size if recording.path.exists() else 0
            with contextlib.suppress(Exception):
                await self._event(recording, ev.RecordingStopped, ev.RecordingStoppedData(
                    recording_id=recording.recording_id, location=recording.location,
                    seconds=round(recording.seconds, 3), bytes=size,
                ))  # fmt: skip
            recording.finished.set()

    async def _record(self, recording: Recording, out: wave.Wave_write) -> None:
        leg = recording.leg
        stop = asyncio.ensure_future(recording.stopped.wait())
        stream = participant_audio(self._http, self._tokens, leg.dn, leg.participant_id, connect_timeout_s=10)
        try:
            while True:
                chunk_task = asyncio.ensure_future(anext(stream))
                done, _ = await asyncio.wait({chunk_task, stop}, return_when=asyncio.FIRST_COMPLETED)
                if chunk_task not in done:
                    chunk_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await chunk_task
                    return
                try:
                    chunk = chunk_task.result()
                except StopAsyncIteration:
                    return  # the leg went away: the recording ends with it
                recording.caller_audio(chunk, time.time())
                if len(chunk) >= BYTES_PER_MS:
                    recording.flush(out)
        finally:
            stop.cancel()
            await stream.aclose()

    async def _event(self, recording: Recording, cls: type[ev.EventBase], data: Any) -> None:
        await self._publish(cls.model_validate({
            "event_id": deterministic_event_id("recording", recording.recording_id, cls.NAME),
            "pbx_id": recording.pbx_id, "call_id": recording.call_id, "leg": recording.leg,
            "occurred_at": utcnow(), "data": data,
        }))  # fmt: skip

    async def close(self) -> None:
        for recording in list(self.active.values()):
            recording.stopped.set()
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)
