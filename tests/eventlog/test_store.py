"""The event log store on SQLite and Postgres: idempotent batches, ordered filtered reads, dead letters, retention."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from hub.eventlog import DeadLetterInput, EventStore, LogFilter, LogRow, StoreNotMigrated, StoreUnavailable
from hub.natsd import free_port
from schemas import events
from schemas.codec import DecodeError, dump_event
from schemas.subjects import event_subject
from tests.factories import make_event

pytestmark = pytest.mark.anyio


def row(seq: int, event: events.EventBase) -> LogRow:
    return LogRow.from_message(seq, event_subject(event), dump_event(event))


def call_events(call_id: str, start: datetime, pbx_id: str = "main") -> list[events.EventBase]:
    kinds = (events.CallCreated, events.CallRinging, events.CallAnswered, events.CallEnded)
    return [
        make_event(k, call_id=call_id, pbx_id=pbx_id, occurred_at=start + timedelta(seconds=i))
        for i, k in enumerate(kinds)
    ]


T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


async def test_batches_store_each_event_id_once(store: EventStore) -> None:
    evs = call_events("01JA", T0)
    first = await store.insert_batch([row(i + 1, e) for i, e in enumerate(evs)])
    assert (first.inserted, first.duplicates) == (4, 0)
    # a redelivered batch (same seqs) and a re-published event (new seq, same event id)
    again = await store.insert_batch([row(1, evs[0]), row(2, evs[1]), row(9, evs[2])])
    assert (again.inserted, again.duplicates) == (0, 3)
    assert await store.count(LogFilter()) == 4


async def test_duplicates_inside_one_batch_are_stored_once(store: EventStore) -> None:
    event = make_event(events.CallAnswered)
    outcome = await store.insert_batch([row(1, event), row(2, event)])
    assert outcome.inserted == 1
    assert outcome.duplicates == 1


async def test_reads_come_back_in_stream_order_with_the_exact_payload(store: EventStore) -> None:
    evs = call_events("01JB", T0)
    await store.insert_batch([row(10 - i, e) for i, e in enumerate(evs)])  # seqs 10,9,8,7
    got = [e async for e in store.iter_events(LogFilter(), page=2)]
    assert [g.seq for g in got] == [7, 8, 9, 10]
    assert json.loads(got[0].payload) == json.loads(dump_event(evs[3]))
    assert got[0].occurred_at.tzinfo is not None


async def test_filters(store: EventStore) -> None:
    a, b = call_events("01JC", T0), call_events("01JD", T0 + timedelta(hours=1), pbx_id="other")
    await store.insert_batch([row(i + 1, e) for i, e in enumerate(a + b)])

    async def seqs(f: LogFilter) -> list[int]:
        return [e.seq async for e in store.iter_events(f)]

    assert await seqs(LogFilter(call_ids=("01JC",))) == [1, 2, 3, 4]
    assert await seqs(LogFilter(call_ids=("01JC", "01JD"))) == list(range(1, 9))
    assert await seqs(LogFilter(types=("call.ended",))) == [4, 8]
    assert await seqs(LogFilter(types=("call.ended", "call.created"))) == [1, 4, 5, 8]
    assert await seqs(LogFilter(pbx_id="other")) == [5, 6, 7, 8]
    assert await seqs(LogFilter(since=T0 + timedelta(hours=1))) == [5, 6, 7, 8]
    assert await seqs(LogFilter(until=T0 + timedelta(seconds=1))) == [1, 2]
    assert await seqs(LogFilter(after_seq=6)) == [7, 8]
    assert await store.count(LogFilter(types=("call.ended",), pbx_id="main")) == 1


async def test_timeline_and_known_calls(store: EventStore) -> None:
    await store.insert_batch([row(i + 1, e) for i, e in enumerate(call_events("01JE", T0))])
    timeline = await store.call_timeline("01JE")
    assert [t.type for t in timeline] == ["call.created", "call.ringing", "call.answered", "call.ended"]
    assert await store.known_call("01JE")
    assert not await store.known_call("01JZ")
    assert await store.max_seq() == 4


def test_an_invalid_message_is_a_decode_error_with_the_reason() -> None:
    raw = json.loads(dump_event(make_event(events.CallEnded)))
    raw["data"]["cause"] = "exploded"
    with pytest.raises(DecodeError, match="data.cause"):
        LogRow.from_message(1, "ml.evt.main.call.x.ended", json.dumps(raw).encode())
    with pytest.raises(DecodeError, match="not UTF-8"):
        LogRow.from_message(1, "s", b"\xff\xfe")


def test_an_old_version_is_accepted_and_kept_as_published() -> None:
    v1 = {
        "type": "call.ended",
        "schema_version": 1,
        "event_id": "0b7c8a3e-2c0f-5f71-9d0e-7c0b2f3c1a11",
        "pbx_id": "main",
        "call_id": "01JOLD",
        "occurred_at": "2026-01-01T10:00:00Z",
        "data": {"cause": "hangup", "duration": 3},
    }
    logged = LogRow.from_message(1, "ml.evt.main.call.01JOLD.ended", json.dumps(v1).encode())
    assert logged.schema_version == 1
    assert json.loads(logged.payload)["data"] == {"cause": "hangup", "duration": 3}


async def test_dead_letters_are_kept_once_listed_and_retried(store: EventStore) -> None:
    letter = DeadLetterInput(source="recorder", subject="ml.evt.x", reason="not JSON", payload=b"\xff", stream_seq=7)
    await store.add_dead_letter(letter)
    await store.add_dead_letter(letter)  # redelivered before the term landed
    [listed] = await store.list_dead_letters()
    assert listed.reason == "not JSON"
    assert listed.payload == b"\xff"
    await store.mark_retried(listed.id)
    assert await store.list_dead_letters() == []
    retried = await store.get_dead_letter(listed.id)
    assert retried is not None
    assert retried.status == "retried"
    assert retried.retried_at is not None


async def test_prune_deletes_only_old_events(store: EventStore) -> None:
    now = datetime.now(UTC)
    old, recent = call_events("01JOLD", now - timedelta(days=40)), call_events("01JNEW", now - timedelta(days=1))
    await store.insert_batch([row(i + 1, e) for i, e in enumerate(old + recent)])
    assert await store.prune(timedelta(days=30), chunk=3) == 4
    assert await store.count(LogFilter()) == 4
    assert not await store.known_call("01JOLD")


async def test_erasure_removes_every_event_of_the_number_s_calls_and_reports(store: EventStore) -> None:
    theirs = call_events("01JPII", T0)  # CallCreated carries from_number +15550100 (factories)
    other = [make_event(events.LinkConnected)]
    await store.insert_batch([row(i + 1, e) for i, e in enumerate(theirs + other)])
    await store.add_dead_letter(DeadLetterInput(source="r", subject="s", reason="bad", payload=b'{"n":"+15550100"}'))
    report = await store.erase_number("+15550100")
    assert report.calls == ["01JPII"]
    assert report.events_deleted == 4
    assert report.by_type == {"call.answered": 1, "call.created": 1, "call.ended": 1, "call.ringing": 1}
    assert report.dead_letters_deleted == 1
    assert await store.count(LogFilter()) == 1


async def test_consumer_positions_are_saved_with_effects(store: EventStore) -> None:
    assert await store.get_position("crm") is None
    async with store.begin() as conn:
        await store.save_position(conn, "crm", "42")
    async with store.begin() as conn:
        await store.save_position(conn, "crm", "43")
    assert await store.get_position("crm") == "43"


async def test_an_unreachable_database_is_unavailable_not_a_crash() -> None:
    with pytest.raises(StoreUnavailable):
        await EventStore.open(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nope")


async def test_a_database_without_tables_says_to_migrate(tmp_path: object) -> None:
    with pytest.raises(StoreNotMigrated, match="masterlinc db upgrade"):
        await EventStore.open(f"sqlite+aiosqlite:///{tmp_path}/empty.db")


def test_asyncpg_losing_its_state_mid_operation_counts_as_unavailable_not_rejected() -> None:
    """Seen when Postgres stops mid-COPY: the batch must be retried on a new connection, not given up."""
    import asyncpg

    from hub.eventlog.store import StoreUnavailable, _translate

    error = asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")
    assert isinstance(_translate(error), StoreUnavailable)
