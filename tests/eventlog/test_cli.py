"""The log commands as an operator runs them: events show, dlq list/show/retry, db prune and erase."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.bus import connect, ensure_streams
from hub.config import BusConfig
from hub.eventlog import DeadLetterInput, EventStore, LogFilter, LogRow
from hub.eventlog.migrate import upgrade
from schemas import events
from schemas.codec import dump_event
from schemas.subjects import event_subject
from tests.factories import make_event


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, dict[str, str]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}"
    upgrade(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_")}
    env["DATABASE_URL"] = url
    return url, env


def _fill(url: str) -> list[events.EventBase]:
    now = datetime.now(UTC)
    evs = [
        make_event(events.CallCreated, call_id="01JOPS", occurred_at=now - timedelta(days=100)),
        make_event(events.CallEnded, call_id="01JOPS", occurred_at=now - timedelta(days=99)),
        make_event(events.CallCreated, call_id="01JNEW", occurred_at=now),
    ]

    async def go() -> None:
        store = await EventStore.open(url)
        rows = [LogRow.from_message(i + 1, event_subject(e), dump_event(e)) for i, e in enumerate(evs)]
        await store.insert_batch(rows)
        letter = DeadLetterInput(
            source="recorder",
            subject="ml.evt.main.call.x.ended",
            reason="not JSON: boom",
            payload=b"{bad",
            stream_seq=9,
        )
        await store.add_dead_letter(letter)
        await store.close()

    asyncio.run(go())
    return evs


def test_events_show_prints_a_call_timeline(db: tuple[str, dict[str, str]]) -> None:
    url, env = db
    _fill(url)
    out = _cli(env, "events", "show", "--call", "01JOPS")
    assert out.returncode == 0, out.stderr
    assert "call.created" in out.stdout
    assert "call.ended" in out.stdout
    unknown = _cli(env, "events", "show", "--call", "01JNOPE")
    assert unknown.returncode == 2
    assert "not in the event log" in unknown.stderr


def test_prune_removes_old_events_and_erase_reports(db: tuple[str, dict[str, str]]) -> None:
    url, env = db
    _fill(url)
    bad = _cli(env, "db", "prune", "--older-than", "ninety days")
    assert bad.returncode == 2
    assert "90d" in bad.stderr
    out = _cli(env, "db", "prune", "--older-than", "30d")
    assert out.returncode == 0, out.stderr
    assert "pruned 2 event(s)" in out.stdout
    erased = _cli(env, "db", "erase", "--number", "+15550100")
    assert erased.returncode == 0, erased.stderr
    assert "erased 1 event(s)" in erased.stdout
    assert "call.created: 1" in erased.stdout

    async def count() -> int:
        store = await EventStore.open(url)
        try:
            return await store.count(LogFilter())
        finally:
            await store.close()

    assert asyncio.run(count()) == 0


@pytest.mark.nats
def test_dlq_list_show_and_retry(db: tuple[str, dict[str, str]], nats_server: str) -> None:
    url, env = db
    _fill(url)
    env["NATS_URL"] = nats_server

    async def streams() -> None:
        nc = await connect(nats_server, name="test-dlq")
        await ensure_streams(nc.jetstream(), BusConfig())
        await nc.close()

    asyncio.run(streams())
    listed = _cli(env, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert "not JSON: boom" in listed.stdout
    shown = _cli(env, "dlq", "show", "1")
    assert "{bad" in shown.stdout
    assert "ml.evt.main.call.x.ended" in shown.stdout
    retried = _cli(env, "dlq", "retry", "1")
    assert retried.returncode == 0, retried.stderr
    assert "published again to ml.evt.main.call.x.ended" in retried.stdout
    assert "not JSON" not in _cli(env, "dlq", "list").stdout  # no longer open
    missing = _cli(env, "dlq", "show", "42")
    assert missing.returncode == 2
    assert "no dead letter 42" in missing.stderr

    async def republished() -> bytes:
        nc = await connect(nats_server, name="test-dlq-check")
        js = nc.jetstream()
        msg = await js.get_last_msg("ML_EVENTS", "ml.evt.main.call.x.ended")
        await nc.close()
        return bytes(msg.data or b"")

    assert asyncio.run(republished()) == b"{bad"


@pytest.mark.nats
def test_events_tail_since_prints_the_streams_history_and_until_ends_it(nats_server: str) -> None:
    from hub.bus import EventPublisher
    from tests.helpers import fresh_bus

    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_")}
    env["NATS_URL"] = nats_server
    now = datetime.now(UTC)
    past = make_event(events.CallEnded, call_id="01JCALLTAILSINCE0000000000", occurred_at=now - timedelta(minutes=1))
    other = make_event(events.CallEnded, call_id="01JCALLTAILOTHER0000000000", occurred_at=now - timedelta(minutes=1))

    async def publish() -> None:
        nc = await connect(nats_server, name="test-tail")
        await fresh_bus(nc.jetstream())
        publisher = EventPublisher(nc.jetstream())
        await publisher.publish(past)
        await publisher.publish(other)
        await publisher.flush()
        await nc.close()

    asyncio.run(publish())
    until = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    tail = _cli(env, "events", "tail", "--since", "10m", "--until", until, "--call", "01JCALLTAILSINCE0000000000")
    assert tail.returncode == 0, tail.stderr
    assert "call.ended" in tail.stdout and "01JCALLTAILSINCE0000000000" in tail.stdout
    assert "01JCALLTAILOTHER" not in tail.stdout  # the --call filter holds on the history too
    backwards = _cli(env, "events", "tail", "--since", "1m", "--until", "2h")
    assert backwards.returncode != 0 and "--until must be after --since" in backwards.stderr
