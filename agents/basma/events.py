"""voice.turn and voice.transcript events for a session, with deterministic ids (a re-run of the same call's
publication is dropped by JetStream's dedup and the log's unique key)."""

from __future__ import annotations

from collections.abc import Sequence

from agents.basma.brain import Turn
from agents.basma.ports import CallInfo
from schemas.common import utcnow
from schemas.events import TranscriptLine, VoiceTranscript, VoiceTranscriptData, VoiceTurn, VoiceTurnData
from schemas.identity import deterministic_event_id
from schemas.tokens import check_token


def turn_event(call: CallInfo, index: int, turn: Turn) -> VoiceTurn:
    return VoiceTurn(
        event_id=deterministic_event_id("voice.turn", call.pbx_id, call.call_id, call.agent, index),
        pbx_id=call.pbx_id,
        call_id=call.call_id,
        leg=call.leg,
        occurred_at=turn.ended_at,
        issued_by=f"agent:{check_token(call.agent)}",
        data=VoiceTurnData(
            turn=index,
            role=turn.role,
            text=turn.text,
            started_at=turn.started_at,
            ended_at=turn.ended_at,
            latency_ms=turn.latency_ms,
            interrupted=turn.interrupted,
        ),
    )


def transcript_event(call: CallInfo, dialogue: Sequence[Turn], summary: str) -> VoiceTranscript:
    ended = dialogue[-1].ended_at if dialogue else None
    return VoiceTranscript(
        event_id=deterministic_event_id("voice.transcript", call.pbx_id, call.call_id, call.agent),
        pbx_id=call.pbx_id,
        call_id=call.call_id,
        leg=call.leg,
        occurred_at=ended or utcnow(),
        issued_by=f"agent:{check_token(call.agent)}",
        data=VoiceTranscriptData(
            lines=[TranscriptLine(role=t.role, text=t.text, at=t.started_at) for t in dialogue],
            summary=summary,
        ),
    )
