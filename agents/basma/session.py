"""One call with Basma: listen, endpoint, transcribe, decide, speak, and stop talking when the caller does.

Three tasks share the call: the listener (caller frames -> VAD -> speech-to-text stream, and barge-in), the
conversation (one input at a time -> the brain -> sentences -> TTS -> the paced writer) and the event publisher.
Barge-in: caller speech of ``barge_in_ms`` (or a key press) while a reply is under way clears the writer's queue and
cancels the reply; the dialogue keeps only the words played before that point. A reply that is acting (transfer,
park, drop) is not interrupted: the action waits until what was said has been played, then runs.
The call ends when its audio ends (hang-up, or the leg left) or when a transfer, park or drop succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from agents.basma.brain import Brain, CallerPressed, CallerSaid, CallStarted, Destination, Heard, ToolResult, Turn
from agents.basma.events import transcript_event, turn_event
from agents.basma.policy import summarize
from agents.basma.ports import AudioPort, CallControl, CallInfo, EventSink, ReplyWriter
from agents.basma.settings import SessionConfig
from agents.basma.stt import PendingText, SpeechToText, SttStream
from agents.basma.text import SentenceSplitter, Spoken, heard_part
from agents.basma.tts import TextToSpeech
from agents.basma.vad import Endpointer, Kind
from schemas.common import utcnow
from schemas.events import EventBase

log = logging.getLogger(__name__)
Outcome = Literal["hung_up", "transferred", "parked", "dropped"]


@dataclass
class BargeIn:
    at: float  # clock() when the reply was cut
    heard_ms: float
    dropped_ms: float


@dataclass
class SessionResult:
    outcome: Outcome
    dialogue: list[Turn]
    summary: str
    barge_ins: list[BargeIn] = field(default_factory=list)


@dataclass
class _Speech:
    pending: PendingText
    started_at: datetime
    ended_at: datetime
    last_voice: float  # clock() of the last speech frame: the end of the caller's speech


@dataclass
class _Keys:
    digits: str
    at: datetime
    mono: float


@dataclass
class _Reply:
    base_ms: float
    reference: float | None  # end of the caller's speech (clock()) that this replies to
    started_at: datetime
    splitter: SentenceSplitter = field(default_factory=SentenceSplitter)
    spoken: list[Spoken] = field(default_factory=list)
    audio_ms: float = 0.0
    first_audio: float | None = None
    committed: bool = False
    finished: bool = False


class VoiceSession:
    def __init__(
        self,
        call: CallInfo,
        audio: AudioPort,
        *,
        stt: SpeechToText,
        tts: TextToSpeech,
        brain: Brain,
        control: CallControl,
        destinations: Mapping[str, Destination],
        events: EventSink | None = None,
        config: SessionConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call = call
        self.config = config or SessionConfig()
        self._audio = audio
        self._stt = stt
        self._tts = tts
        self._brain = brain
        self._control = control
        self._events = events
        self._clock = clock
        self.destinations = dict(destinations)
        self.dialogue: list[Turn] = []
        self.barge_ins: list[BargeIn] = []
        self._inputs: asyncio.Queue[CallStarted | _Speech | _Keys] = asyncio.Queue()
        self._outbox: asyncio.Queue[EventBase | None] = asyncio.Queue()
        self._done = asyncio.Event()
        self._outcome: Outcome | None = None
        self._summary: str | None = None
        self._reply: _Reply | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._acting = 0  # a transfer, park or drop is in flight
        self._gone = False  # the leg went away (audio ended, or the bus said so)
        self.events_failed = 0

    # ------------------------------------------------------------------ public

    def dtmf(self, digits: str) -> None:
        """Keys the caller pressed (from the bus's call.dtmf in production). A key press interrupts a reply."""
        if not digits:
            return
        self._barge_in()
        self._inputs.put_nowait(_Keys(digits, utcnow(), self._clock()))

    def end(self) -> None:
        """The call's leg is gone (the bus said so: call.leg_removed or call.ended): stop talking and finish, as on
        a hang-up. Idempotent; a session that already ended (transferred, say) keeps its outcome, and one whose
        action is in flight (a transfer makes the leg leave) lets that action's result decide."""
        self._leg_gone()

    def _leg_gone(self) -> None:
        self._gone = True
        if self._acting == 0:
            self._finish("hung_up")

    async def run(self) -> SessionResult:
        async with self._audio.session() as audio, self._stt.open() as stream:
            self._inputs.put_nowait(CallStarted())
            publisher = asyncio.create_task(self._publish_events())
            listener = asyncio.create_task(self._listen(audio, stream))
            talker = asyncio.create_task(self._converse(audio.writer))
            done = asyncio.create_task(self._done.wait())
            try:
                waiting: set[asyncio.Task[object]] = {listener, talker, done}
                while not done.done():  # the listener ends with the audio; the session ends with _done
                    finished, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    for task in finished & {listener, talker}:
                        if not task.cancelled() and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
                    if talker in finished:
                        break
            finally:
                await self._stop(audio.writer, listener, talker, done)
                self._outbox.put_nowait(self._transcript())
                self._outbox.put_nowait(None)
                await publisher
        return SessionResult(
            outcome=self._outcome or "hung_up",
            dialogue=list(self.dialogue),
            summary=self._final_summary(),
            barge_ins=list(self.barge_ins),
        )

    # ------------------------------------------------------------------ listening

    async def _listen(self, audio: AudioPort, stream: SttStream) -> None:
        endpointer = Endpointer(self.config.vad)
        started_at = utcnow()
        last_voice = self._clock()
        speech_ms = 0
        async for frame in audio.caller_frames():
            event = endpointer.push(frame)
            if event is None:
                continue
            if event.kind is Kind.STARTED:
                started_at = utcnow()
                last_voice = self._clock()
                speech_ms = event.speech_ms
                stream.feed(event.pcm)
            elif event.kind is Kind.SPEECH:
                stream.feed(event.pcm)
                if event.speech_ms > speech_ms:
                    last_voice = self._clock()
                    speech_ms = event.speech_ms
            elif event.kind is Kind.ENDED:
                stream.feed(event.pcm)
                self._inputs.put_nowait(_Speech(stream.end(), started_at, utcnow(), last_voice))
                continue
            else:
                stream.discard()
                continue
            if speech_ms >= self.config.barge_in_ms:
                self._barge_in()
        self._leg_gone()

    def _barge_in(self) -> None:
        reply, task = self._reply, self._reply_task
        if reply is None or task is None or task.done() or reply.committed or reply.finished:
            return
        writer = self._audio.writer
        heard_ms = max(0.0, writer.played_ms - reply.base_ms)
        dropped = writer.clear()
        task.cancel()
        self._end_reply(reply, heard_ms=heard_ms)
        self.barge_ins.append(BargeIn(at=self._clock(), heard_ms=heard_ms, dropped_ms=dropped))

    # ------------------------------------------------------------------ talking

    async def _converse(self, writer: ReplyWriter) -> None:
        while not self._done.is_set():
            item = await self._inputs.get()
            heard: Heard
            reference: float | None = None
            if isinstance(item, _Speech):
                text = (await item.pending.text()).strip()
                if not text:
                    continue
                latency = (self._clock() - item.last_voice) * 1000
                self._add_turn(Turn("caller", text, item.started_at, utcnow(), latency_ms=round(latency, 1)))
                heard, reference = CallerSaid(text), item.last_voice
            elif isinstance(item, _Keys):
                self._add_turn(Turn("caller", item.digits, item.at, item.at, dtmf=True))
                heard, reference = CallerPressed(item.digits), item.mono
            else:
                heard = item
            reply = _Reply(base_ms=writer.played_ms + writer.queued_ms, reference=reference, started_at=utcnow())
            self._reply = reply
            self._reply_task = asyncio.create_task(self._speak(reply, heard, writer))
            await asyncio.wait({self._reply_task})
            task, self._reply_task, self._reply = self._reply_task, None, None
            if not task.cancelled() and task.exception() is not None:
                log.error("voice: the reply failed on call %s", self.call.call_id, exc_info=task.exception())

    async def _speak(self, reply: _Reply, heard: Heard, writer: ReplyWriter) -> None:
        tools = _Tools(self, reply, writer)
        async with contextlib.aclosing(self._brain.respond(list(self.dialogue), heard, tools)) as deltas:
            async for delta in deltas:
                for sentence in reply.splitter.push(delta):
                    await self._say(reply, sentence, writer)
        await self._settle(reply, writer)
        self._end_reply(reply, heard_ms=None)

    async def _say(self, reply: _Reply, sentence: str, writer: ReplyWriter) -> None:
        start = reply.audio_ms
        async for pcm in self._tts.synthesize(sentence):
            if reply.first_audio is None:
                reply.first_audio = self._clock()
            writer.write(pcm)
            reply.audio_ms += len(pcm) / 16
        reply.spoken.append(Spoken(sentence, start, reply.audio_ms))

    async def _settle(self, reply: _Reply, writer: ReplyWriter) -> None:
        """Say what is left, then wait until the caller has heard all of it."""
        rest = reply.splitter.flush()
        if rest:
            await self._say(reply, rest, writer)
        writer.flush()
        timeout = writer.queued_ms / 1000 + self.config.drain_timeout_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(writer.drained.wait(), timeout)
        if writer.ahead_ms > 0:
            await asyncio.sleep(writer.ahead_ms / 1000)

    def _end_reply(self, reply: _Reply, *, heard_ms: float | None) -> None:
        if reply.finished:
            return
        reply.finished = True
        full = heard_ms is None
        text = " ".join(s.text for s in reply.spoken) if full else heard_part(reply.spoken, heard_ms or 0.0)
        if not text:
            return
        latency = None
        if reply.first_audio is not None and reply.reference is not None:
            latency = round(max(0.0, reply.first_audio - reply.reference) * 1000, 1)
        turn = Turn("agent", text, reply.started_at, utcnow(), latency_ms=latency, interrupted=heard_ms is not None)
        self._add_turn(turn)

    # ------------------------------------------------------------------ ending, events

    def _finish(self, outcome: Outcome, summary: str | None = None) -> None:
        if self._outcome is None:
            self._outcome = outcome
            self._summary = summary
        self._done.set()

    async def _stop(self, writer: ReplyWriter, *tasks: asyncio.Task[object]) -> None:
        reply, task = self._reply, self._reply_task
        if reply is not None and task is not None and not task.done():
            heard = None if reply.committed else max(0.0, writer.played_ms - reply.base_ms)
            self._end_reply(reply, heard_ms=heard)
            task.cancel()
        writer.cancel()
        pending = [t for t in (*tasks, task) if t is not None]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _add_turn(self, turn: Turn) -> None:
        self.dialogue.append(turn)
        self._outbox.put_nowait(turn_event(self.call, len(self.dialogue) - 1, turn))

    def dialogue_lines(self, last: int = 20) -> list[dict[str, str]]:
        """The end of the dialogue as plain lines (the warm transfer's context)."""
        return [{"role": t.role, "text": t.text} for t in self.dialogue[-last:]]

    def _final_summary(self) -> str:
        outcome = {"hung_up": "the caller hung up", "transferred": "transferred", "parked": "parked"}
        base = self._summary or summarize(self.dialogue)
        return f"{base} Outcome: {outcome.get(self._outcome or 'hung_up', self._outcome or '')}."

    def _transcript(self) -> EventBase:
        return transcript_event(self.call, self.dialogue, self._final_summary())

    async def _publish_events(self) -> None:
        while (event := await self._outbox.get()) is not None:
            if self._events is None:
                continue
            try:
                await self._events.publish(event)
            except Exception:  # the call goes on without its events; counted and logged
                self.events_failed += 1
                log.exception("voice: could not publish %s for call %s", event.type_name(), self.call.call_id)
        if self._events is not None:
            try:
                await self._events.flush()
            except Exception:
                self.events_failed += 1
                log.exception("voice: events for call %s were not all acknowledged", self.call.call_id)


class _Tools:
    """The brain's hands, bound to the session's call; each action first lets what was said be played."""

    def __init__(self, session: VoiceSession, reply: _Reply, writer: ReplyWriter) -> None:
        self._session = session
        self._reply = reply
        self._writer = writer
        self.destinations: Mapping[str, Destination] = session.destinations

    async def _commit(self) -> None:
        self._reply.committed = True
        await self._session._settle(self._reply, self._writer)

    @contextlib.asynccontextmanager
    async def _in_flight(self) -> AsyncIterator[None]:
        """While the action runs, the leg leaving (which a transfer or park causes) does not end the session: the
        action's result decides; a failed action on a leg that left is a hang-up."""
        session = self._session
        session._acting += 1
        try:
            yield
        finally:
            session._acting -= 1
            if session._gone and session._acting == 0:
                session._finish("hung_up")

    async def transfer(self, destination: str, summary: str) -> ToolResult:
        target = self.destinations.get(destination)
        if target is None:
            known = ", ".join(self.destinations) or "none"
            return ToolResult(False, f"unknown destination {destination!r}; known: {known}")
        await self._commit()
        context = {"destination": target.name, "number": target.number, "dialogue": self._session.dialogue_lines()}
        async with self._in_flight():
            result = await self._session._control.transfer(target.number, summary[:2000] or None, context)
            if result.ok:
                self._session._finish("transferred", summary)
                return ToolResult(True, f"transferred to {target.name}", ends_call=True)
        return ToolResult(False, f"the transfer failed: {result.code} {result.message}".strip())

    async def park(self) -> ToolResult:
        await self._commit()
        async with self._in_flight():
            result = await self._session._control.park()
            if result.ok:
                self._session._finish("parked")
                return ToolResult(True, "the call is parked", ends_call=True)
        return ToolResult(False, f"park failed: {result.code} {result.message}".strip())

    async def drop(self) -> ToolResult:
        await self._commit()
        async with self._in_flight():
            result = await self._session._control.drop()
            if result.ok:
                self._session._finish("dropped")
                return ToolResult(True, "the call is ended", ends_call=True)
        return ToolResult(False, f"drop failed: {result.code} {result.message}".strip())

    async def send_message(self, text: str) -> ToolResult:
        to = self._session.call.caller_number
        if not to:
            return ToolResult(False, "the caller's number is unknown, so no message can be sent")
        result = await self._session._control.send_message(to, text)
        if result.ok:
            return ToolResult(True, "message sent")
        return ToolResult(False, f"the message was not sent: {result.code} {result.message}".strip())
