"""Replay from the log: filters, sandbox vs original subjects, pacing, and clear errors for bad requests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client

from hub.bus import connect
from hub.eventlog import EventStore, LogRow
from hub.replay import ReplayArgumentError, ReplayRequest, replay
from schemas import events
from schemas.codec import dump_event
from schemas.subjects import event_subject
from tests.factories import make_event
from tests.helpers import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.nats]
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
async def nc(nats_server: str) -> AsyncIterator[Client]:
    client = await connect(nats_server, name="test-replay")
    yield client
    await client.close()


@pytest.fixture
async def filled(store: EventStore) -> EventStore:
    rows = []
    seq = 0
    for c, call_id in enumerate(("01JR1", "01JR2", "01JR3")):
        for i, kind in enumerate((events.CallCreated, events.CallAnswered, events.CallEnded)):
            seq += 1
            event = make_event(kind, call_id=call_id, occurred_at=T0 + timedelta(minutes=c, seconds=i * 0.1))
            rows.append(LogRow.from_message(seq, event_subject(event), dump_event(event)))
    await store.insert_batch(rows)
    return store


async def collect(nc: Client, subject: str) -> list[str]:
    got: list[str] = []

    async def on_msg(msg: object) -> None:
        got.append(msg.subject)  # type: ignore[attr-defined]

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    return got


async def test_replay_goes_to_the_sandbox_by_default_with_filters(nc: Client, filled: EventStore) -> None:
    request = ReplayRequest(call_ids=("01JR2",), types=("call.created", "call.ended"))
    got = await collect(nc, f"ml.sbx.{request.run_id}.>")
    original = await collect(nc, "ml.evt.>")
    report = await replay(request, filled, nc)
    assert (report.scanned, report.sent) == (2, 2)
    await wait_until(lambda: _len_is(got, 2), what="sandbox messages")
    assert got == [
        f"ml.sbx.{request.run_id}.evt.main.call.01JR2.created",
        f"ml.sbx.{request.run_id}.evt.main.call.01JR2.ended",
    ]
    assert original == []


async def _len_is(items: list[str], n: int) -> bool:
    return len(items) >= n


async def test_time_window_and_dry_run(nc: Client, filled: EventStore) -> None:
    window = ReplayRequest(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=1, seconds=1), dry_run=True)
    report = await replay(window, filled, None)
    assert report.scanned == 3
    assert report.sent == 0


async def test_original_pace_keeps_the_recorded_gaps_scaled_by_speed(nc: Client, filled: EventStore) -> None:
    # three calls one minute apart: at speed 600 the gaps are 0.1 s each
    request = ReplayRequest(types=("call.created",), pace="original", speed=600)
    started = time.perf_counter()
    report = await replay(request, filled, nc)
    elapsed = time.perf_counter() - started
    assert report.sent == 3
    assert 0.2 <= elapsed < 2.0


async def test_rate_caps_an_instant_replay(nc: Client, filled: EventStore) -> None:
    started = time.perf_counter()
    report = await replay(ReplayRequest(rate=30), filled, nc)
    assert report.sent == 9
    assert time.perf_counter() - started >= 8 / 30 - 0.01


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (ReplayRequest(types=("call.finished",)), "unknown event type 'call.finished'"),
        (ReplayRequest(types=("ended",)), "did you mean call.ended"),
        (ReplayRequest(since=T0, until=T0 - timedelta(days=1)), "is after --until"),
        (ReplayRequest(call_ids=("01JNOPE",)), "not in the event log"),
        (ReplayRequest(speed=0), "--speed must be greater than 0"),
        (ReplayRequest(call_ids=("a.b",)), "not a valid subject token"),
    ],
)
async def test_bad_requests_are_explained(filled: EventStore, request_: ReplayRequest, message: str) -> None:
    with pytest.raises((ReplayArgumentError, ValueError), match=message):
        await replay(request_, filled, None)


def test_cli_reports_bad_arguments_without_a_traceback(tmp_path: object) -> None:
    import subprocess
    import sys

    db = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    env = {"DATABASE_URL": db, "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "hub.cli", "db", "upgrade"], env=env, check=True, capture_output=True)
    out = subprocess.run(
        [sys.executable, "-m", "hub.cli", "replay", "--type", "call.nope", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "unknown event type 'call.nope'" in out.stderr
    assert "Traceback" not in out.stderr
    inverted = subprocess.run(
        [sys.executable, "-m", "hub.cli", "replay", "--since", "1h", "--until", "2h", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert inverted.returncode == 2
    assert "swap them" in inverted.stderr
