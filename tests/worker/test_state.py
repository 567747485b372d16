"""Worker state in NATS KV: idempotency claims, takeover of abandoned commands, the shared rate limit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from nats.js import JetStreamContext

from hub.bus import connect
from hub.bus.kv import IDEMPOTENCY, RATE, open_bucket
from hub.worker.idempotency import ClaimOutcome, IdempotencyStore
from hub.worker.ratelimit import SharedRateLimiter
from schemas.commands import CommandResult, Drop, Transfer, TransferArgs
from schemas.common import CommandError, ErrorCode, LegRef, utcnow

pytestmark = [pytest.mark.nats, pytest.mark.anyio]


@pytest.fixture
async def js(nats_server: str) -> AsyncIterator[JetStreamContext]:
    nc = await connect(nats_server, name="test-worker-state")
    js = nc.jetstream()
    for bucket in (IDEMPOTENCY, RATE):
        with contextlib.suppress(Exception):
            await js.delete_key_value(bucket.name)
    yield js
    await nc.close()


def _drop(key: str = "k1", **kw: Any) -> Drop:
    return Drop(
        pbx_id="main",
        issued_by="mcp:tok1",
        idempotency_key=key,
        call_id="01JCALL",
        leg=LegRef(dn="800", participant_id=3),
        **kw,
    )


async def test_the_first_claim_wins_and_a_repeat_gets_the_stored_result(js: JetStreamContext) -> None:
    store = IdempotencyStore(await open_bucket(js, IDEMPOTENCY))
    first = await store.claim(_drop(), "w1")
    assert first.outcome is ClaimOutcome.NEW
    again = await store.claim(_drop(), "w2")  # a second worker, before the first finished
    assert again.outcome is ClaimOutcome.IN_PROGRESS
    await store.complete(first, CommandResult(command_id="c1", ok=True, result={"already_gone": False}))
    repeat = await store.claim(_drop(), "w2")
    assert repeat.outcome is ClaimOutcome.DONE
    assert repeat.result is not None
    assert repeat.result.result == {"already_gone": False}


async def test_same_key_with_another_payload_is_a_conflict(js: JetStreamContext) -> None:
    store = IdempotencyStore(await open_bucket(js, IDEMPOTENCY))
    leg = LegRef(dn="1", participant_id=1)

    def transfer(to: str) -> Transfer:
        return Transfer(
            pbx_id="main", issued_by="mcp:tok1", idempotency_key="k2", call_id="01J", leg=leg, args=TransferArgs(to=to)
        )

    assert (await store.claim(transfer("101"), "w1")).outcome is ClaimOutcome.NEW
    other = await store.claim(transfer("102"), "w1")
    assert other.outcome is ClaimOutcome.CONFLICT


async def test_keys_are_per_issuer(js: JetStreamContext) -> None:
    store = IdempotencyStore(await open_bucket(js, IDEMPOTENCY))
    assert (await store.claim(_drop("shared"), "w1")).outcome is ClaimOutcome.NEW
    other_issuer = _drop("shared").model_copy(update={"issued_by": "agent:routing"})
    assert (await store.claim(other_issuer, "w1")).outcome is ClaimOutcome.NEW


async def test_an_in_flight_command_past_its_deadline_is_abandoned_not_rerun(js: JetStreamContext) -> None:
    store = IdempotencyStore(await open_bucket(js, IDEMPOTENCY), grace_s=0)
    expired = _drop("k3", deadline=utcnow() - timedelta(seconds=1))
    assert (await store.claim(expired, "w1")).outcome is ClaimOutcome.NEW
    takeover = await store.claim(expired, "w2")
    assert takeover.outcome is ClaimOutcome.ABANDONED
    assert takeover.entry["worker"] == "w2"
    unknown = CommandError(code=ErrorCode.OUTCOME_UNKNOWN, message="worker died mid-call")
    await store.complete(takeover, CommandResult(command_id="c", ok=False, error=unknown))
    assert (await store.claim(expired, "w3")).outcome is ClaimOutcome.DONE


async def test_released_claims_can_run_again(js: JetStreamContext) -> None:
    store = IdempotencyStore(await open_bucket(js, IDEMPOTENCY))
    claim = await store.claim(_drop("k4"), "w1")
    await store.release(claim)
    assert (await store.claim(_drop("k4"), "w1")).outcome is ClaimOutcome.NEW


async def test_the_rate_limit_holds_across_two_workers(js: JetStreamContext) -> None:
    kv = await open_bucket(js, RATE)
    now = [1_900_000_000.2]
    a = SharedRateLimiter(kv, "main", 5, clock=lambda: now[0])
    b = SharedRateLimiter(kv, "main", 5, clock=lambda: now[0])
    granted = [await limiter.try_acquire() for limiter in (a, b) * 6]
    assert sum(granted) == 5
    now[0] += 1  # the next second opens a new window for both
    assert await b.try_acquire()


async def test_acquire_gives_up_at_the_deadline(js: JetStreamContext) -> None:
    now = [1_900_000_100.5]
    limiter = SharedRateLimiter(await open_bucket(js, RATE), "main", 1, clock=lambda: now[0])
    assert await limiter.acquire(deadline=now[0] + 0.3)
    assert not await limiter.acquire(deadline=now[0] + 0.3)  # the next window opens after the deadline


async def test_a_lifted_limit_always_grants(js: JetStreamContext) -> None:
    limiter = SharedRateLimiter(await open_bucket(js, RATE), "main", 0)
    assert all([await limiter.try_acquire() for _ in range(50)])
