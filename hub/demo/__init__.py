"""Synthetic calls for the demo: a plausible call's events, with deterministic ids, without a PBX.

Used by ``masterlinc up`` until the simulator-driven path runs, and by benchmarks that need realistic events.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from schemas import events as e
from schemas.common import CallSeq, Direction, LegRef, Participant, utcnow
from schemas.identity import leg_event_id, new_call_id


def synthetic_call(
    pbx_id: str = "demo", *, start: datetime | None = None, rng: random.Random | None = None
) -> list[e.EventBase]:
    """created -> ringing -> answered -> (dtmf) -> ended, for an external caller reaching an extension."""
    rng = rng or random.Random()
    call_id = new_call_id()
    t = start or utcnow()
    caller = f"+1555{rng.randrange(10**6, 10**7)}"
    ext = str(rng.choice([100, 101, 102, 103]))
    pid = rng.randrange(1, 500)
    leg = LegRef(dn=ext, participant_id=pid, legid=1)
    base = Participant(
        dn=ext, participant_id=pid, legid=1, status="Ringing", party_caller_id=caller, party_dn_type="Wexternalline"
    )
    counter = iter(range(1, 100))

    def env(transition: str, at: datetime) -> dict[str, object]:
        return {
            "event_id": leg_event_id(pbx_id, call_id, leg.key, transition),
            "pbx_id": pbx_id,
            "call_id": call_id,
            "pbx_call_id": pid,
            "leg": leg,
            "seq": CallSeq(epoch=1, counter=next(counter)),
            "occurred_at": at,
        }

    ring = rng.uniform(1, 6)
    talk = rng.uniform(5, 120)
    out: list[e.EventBase] = [
        e.CallCreated(
            **env("created", t),
            data=e.CallCreatedData(direction=Direction.INBOUND, from_number=caller, to_number=ext),
        ),
        e.CallRinging(**env("ringing", t), data=e.LegData(participant=base)),
        e.CallAnswered(
            **env("answered", t + timedelta(seconds=ring)),
            data=e.LegData(participant=base.model_copy(update={"status": "Connected"})),
        ),
    ]
    if rng.random() < 0.3:
        out.append(
            e.DtmfReceived(
                **env("dtmf", t + timedelta(seconds=ring + 2)),
                data=e.DtmfData(digits=str(rng.randrange(10))),
            )
        )
    out.append(
        e.CallEnded(
            **env("ended", t + timedelta(seconds=ring + talk)),
            data=e.CallEndedData(
                cause=e.EndCause.COMPLETED, answered=True, talk_seconds=round(talk, 2), ring_seconds=round(ring, 2)
            ),
        )
    )
    return out


def synthetic_stream(pbx_id: str = "demo", seed: int | None = None) -> Iterator[e.EventBase]:
    rng = random.Random(seed)
    while True:
        yield from synthetic_call(pbx_id, rng=rng)
