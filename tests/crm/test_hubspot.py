"""The HubSpot target against the local fake (real socket), through the outbox: create once, update by the kept
HubSpot id, no duplicate after a lost answer (search lags), 429 with and without Retry-After, refusals and errors."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agents.crm import CallState, CrmStore, Deliverer, HubSpotCalls, HubSpotTarget, RetryPolicy
from agents.crm.targets.hubspot import CONNECTED, properties
from tests.agents.support import PBX, ROUTE_POINT
from tests.crm.fake_hubspot import TOKEN, FakeHubSpot
from tests.crm.support import CallStory, emptied, outbox
from tests.helpers import wait_until
from tests.voice.localserver import serving

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db_url(store_url: str) -> str:
    """This suite runs on SQLite and on Postgres."""
    return await emptied(store_url)


ID_PROPERTY = "masterlinc_record_id"


@dataclass
class Rig:
    fake: FakeHubSpot
    store: CrmStore
    deliverer: Deliverer
    db_url: str

    async def queue(self, state: CallState) -> None:
        async with self.store.engine.begin() as conn:
            await self.store.enqueue(conn, state.record())

    async def deliver_until(self, state: str, *, timeout: float = 10.0) -> list[dict[str, object]]:
        async def reached() -> bool:
            await self.deliverer.pass_once()
            rows = await outbox(self.db_url)
            return bool(rows) and rows[-1]["state"] == state

        await wait_until(reached, timeout=timeout, interval=0.05, what=f"the last delivery to be {state}")
        return await outbox(self.db_url)


def ended_call(story: CallStory | None = None) -> CallState:
    story = story or CallStory.typical()
    state = CallState(pbx_id=PBX, call_id=story.call_id)
    for event in story.events:
        state.apply(event, (ROUTE_POINT,))
    return state


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def fake() -> FakeHubSpot:
    return FakeHubSpot(search_lag_s=0.5)


@pytest.fixture
async def rig(
    fake: FakeHubSpot, engine: AsyncEngine, db_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Rig]:
    token = getattr(request, "param", TOKEN)
    async with serving(fake.app()) as url, httpx.AsyncClient(base_url=url, timeout=0.5) as http:
        target = HubSpotTarget(HubSpotCalls(http, token), id_property=ID_PROPERTY, search_lag_s=2.0)
        store = CrmStore(
            engine, targets=["hubspot"], replica="r1", retry=RetryPolicy(base_s=0.05, max_s=5.0, max_attempts=6)
        )
        yield Rig(fake, store, Deliverer(store, {"hubspot": target}, None), db_url)


async def test_a_record_is_created_once_and_its_later_versions_update_the_same_call(rig: Rig) -> None:
    state = ended_call()
    await rig.queue(state)
    [first] = await rig.deliver_until("delivered")
    [call] = rig.fake.calls.values()
    assert first["external_id"] == call.id
    assert call.properties[ID_PROPERTY] == state.record().record_id
    assert (call.properties["hs_call_status"], call.properties["hs_call_disposition"]) == ("COMPLETED", CONNECTED)
    assert (call.properties["hs_call_direction"], call.properties["hs_call_duration"]) == ("INBOUND", "89500")
    late = CallStory(call_id=state.call_id, start=CallStory.typical().start).transcript(95, "Wants 12 seats")
    state.apply(late.events[0])
    await rig.queue(state)
    rows = await rig.deliver_until("delivered")
    assert [(r["version"], r["state"], r["external_id"]) for r in rows] == [(1, "delivered", call.id),
                                                                           (2, "delivered", call.id)]  # fmt: skip
    assert list(rig.fake.calls) == [call.id]  # one call in HubSpot, updated
    assert call.properties["hs_call_body"].startswith("Wants 12 seats")
    assert [(r.method, r.status) for r in rig.fake.requests] == [("POST", 201), ("PATCH", 200)]


async def test_a_create_whose_answer_was_lost_is_found_and_updated_not_made_twice(rig: Rig) -> None:
    rig.fake.slow_answers(1.0)  # the call is made; the answer comes after the client's 0.5 s timeout
    await rig.queue(ended_call())
    [row] = await rig.deliver_until("delivered", timeout=15)
    await wait_until(lambda: _answered(rig.fake, "POST", 201), what="the slow create to be answered (too late)")
    assert len(rig.fake.calls) == 1
    [call] = rig.fake.calls.values()
    assert row["external_id"] == call.id
    methods = [(r.method, r.path.rsplit("/", 1)[-1]) for r in rig.fake.requests]
    assert methods[0] == ("POST", "calls")  # the create whose answer was lost
    assert ("POST", "search") in methods and methods[-1] == ("PATCH", call.id)
    assert methods.count(("POST", "calls")) == 1


async def test_429_with_retry_after_is_retried_after_that_long(rig: Rig) -> None:
    rig.fake.rate_limit(1, retry_after=1)
    await rig.queue(ended_call())
    took = await _timed_pass(rig)
    [row] = await outbox(rig.db_url)
    assert (row["state"], row["attempts"]) == ("pending", 1)
    assert "429" in str(row["last_error"]) and "RATE_LIMIT" in str(row["last_error"])
    _waits(row, 1.0, took)
    [row] = await rig.deliver_until("delivered")
    first, second = rig.fake.requests
    assert (first.status, second.status) == (429, 201)
    assert second.at - first.at >= 0.95


async def test_429_without_retry_after_waits_for_the_rate_limit_window(rig: Rig) -> None:
    rig.fake.rate_limit(1, interval_ms=1500)
    await rig.queue(ended_call())
    took = await _timed_pass(rig)
    [row] = await outbox(rig.db_url)
    assert row["state"] == "pending"
    _waits(row, 1.5, took)


async def _timed_pass(rig: Rig) -> float:
    started = time.monotonic()
    await rig.deliverer.pass_once()
    return time.monotonic() - started


def _waits(row: dict[str, Any], seconds: float, attempt_s: float) -> None:
    """The next attempt is ``seconds`` after the refusal arrived: after the claim (``last_attempt_at``) by that much
    plus what the attempt took (up to the whole pass, on a loaded machine)."""
    wait = (row["next_attempt_at"] - row["last_attempt_at"]).total_seconds()
    assert seconds - 0.05 <= wait <= seconds + attempt_s + 0.05, (wait, attempt_s)


async def test_a_validation_error_is_a_refusal_with_hubspots_words(rig: Rig) -> None:
    rig.fake.fail(400, "VALIDATION_ERROR", "Property values were not valid: hs_call_title is too long")
    await rig.queue(ended_call())
    [row] = await rig.deliver_until("failed")
    assert row["attempts"] == 1  # not retried: the same record would be refused again
    assert "HubSpot 400 VALIDATION_ERROR: Property values were not valid" in str(row["last_error"])
    assert "correlation id" in str(row["last_error"])
    assert rig.fake.calls == {}


async def test_server_errors_are_retried_and_a_create_they_answered_is_looked_for_first(rig: Rig) -> None:
    rig.fake.fail(503, "INTERNAL_ERROR", "Service unavailable", count=2)
    await rig.queue(ended_call())
    [row] = await rig.deliver_until("delivered")
    assert len(rig.fake.calls) == 1 and row["external_id"] == next(iter(rig.fake.calls))
    seen = [(r.path.rsplit("/", 1)[-1], r.status) for r in rig.fake.requests]
    # a 503 to a create may hide a call that was made: search (until search has caught up), then create
    assert seen[:2] == [("calls", 503), ("search", 503)]
    assert seen[-1] == ("calls", 201) and ("search", 200) in seen[2:-1]


@pytest.mark.parametrize("rig", ["pat-na1-wrong-token-0123456789"], indirect=True)
async def test_a_bad_token_is_retried_and_never_appears_in_an_error(rig: Rig) -> None:
    await rig.queue(ended_call())
    await rig.deliverer.pass_once()
    [row] = await outbox(rig.db_url)
    assert row["state"] == "pending" and "401 INVALID_AUTHENTICATION" in str(row["last_error"])
    assert "wrong-token" not in str(row["last_error"]) and TOKEN not in str(row["last_error"])


def test_properties_are_strings_with_hubspots_values() -> None:
    record = ended_call().record()
    props = properties(record, ID_PROPERTY)
    assert all(isinstance(v, str) for v in props.values())
    assert props["hs_timestamp"] == "2026-11-23T10:00:00.000Z"
    assert props["hs_call_from_number"] == "+15550100" and props["hs_call_title"] == "Inbound call from +15550100 (Ann)"
    assert "hs_call_recording_url" not in props  # none, and HubSpot plays only HTTPS recordings
    insecure = record.model_copy(update={"recording_url": "file:///var/rec/a.wav"})
    assert "hs_call_recording_url" not in properties(insecure, ID_PROPERTY)
    secure = record.model_copy(update={"recording_url": "https://rec.example.com/a.wav"})
    assert properties(secure, ID_PROPERTY)["hs_call_recording_url"] == "https://rec.example.com/a.wav"
    missed = record.model_copy(update={"outcome": "missed"})
    assert properties(missed, ID_PROPERTY)["hs_call_status"] == "NO_ANSWER"


async def _answered(fake: FakeHubSpot, method: str, status: int) -> bool:
    return any(r.method == method and r.status == status for r in fake.requests)
