"""Streams are created idempotently; the publisher pipelines, deduplicates on the event id and reports failures."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from hub.bus import EventPublisher, PublishError, connect, ensure_streams
from hub.config import BusConfig
from schemas import events, subjects
from schemas.codec import parse_event
from tests.factories import make_event

pytestmark = [pytest.mark.nats, pytest.mark.anyio]


@pytest.fixture
async def js(nats_server: str) -> AsyncIterator[JetStreamContext]:
    nc: Client = await connect(nats_server, name="test-bus")
    js = nc.jetstream()
    for name in (subjects.EVENTS_STREAM, subjects.COMMANDS_STREAM, subjects.DLQ_STREAM):
        with contextlib.suppress(NotFoundError):  # each test starts from no streams
            await js.delete_stream(name)
    yield js
    await nc.close()


async def test_streams_are_created_and_a_second_run_changes_nothing(js: JetStreamContext) -> None:
    config = BusConfig(duplicate_window_s=30)
    await ensure_streams(js, config)
    first = await js.stream_info(subjects.EVENTS_STREAM)
    await ensure_streams(js, config)
    second = await js.stream_info(subjects.EVENTS_STREAM)
    assert first.config.duplicate_window == 30
    assert second.created == first.created
    commands = await js.stream_info(subjects.COMMANDS_STREAM)
    assert str(commands.config.retention).lower().endswith("workqueue")


async def test_changed_limits_update_the_existing_stream(js: JetStreamContext) -> None:
    await ensure_streams(js, BusConfig(events_max_age_s=3600))
    await ensure_streams(js, BusConfig(events_max_age_s=7200))
    info = await js.stream_info(subjects.EVENTS_STREAM)
    assert info.config.max_age == 7200


async def test_publisher_deduplicates_on_the_event_id(js: JetStreamContext) -> None:
    await ensure_streams(js, BusConfig())
    publisher = EventPublisher(js)
    batch = [make_event(events.CallAnswered) for _ in range(50)]
    await publisher.publish_many(batch)
    await publisher.publish_many(batch[:10])  # the resync path publishing the same transitions again
    await publisher.flush()
    assert publisher.published == 60
    assert publisher.duplicates == 10
    info = await js.stream_info(subjects.EVENTS_STREAM)
    assert info.state.messages == 50


async def test_published_events_arrive_on_their_derived_subject(js: JetStreamContext) -> None:
    await ensure_streams(js, BusConfig())
    event = make_event(events.CallEnded, call_id="01JCALLSUBJECT")
    sub = await js.pull_subscribe(subjects.call_filter("01JCALLSUBJECT"), durable=None)
    publisher = EventPublisher(js)
    await publisher.publish(event)
    await publisher.flush()
    with anyio.fail_after(5):
        [msg] = await sub.fetch(1, timeout=5)
    assert msg.subject == "ml.evt.main.call.01JCALLSUBJECT.ended"
    assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == str(event.event_id)
    assert parse_event(msg.data) == event


async def test_publishing_without_a_stream_fails_on_flush(js: JetStreamContext) -> None:
    publisher = EventPublisher(js)  # no ensure_streams: nothing captures ml.evt.>
    await publisher.publish(make_event(events.LinkConnected))
    with pytest.raises(PublishError, match="1 event"):
        await publisher.flush(ack_wait=5)


async def test_confirm_reports_only_the_callers_own_failed_publishes(js: JetStreamContext) -> None:
    """Two units of work on one publisher (the worker's commands): each learns of its own failures only, and a
    failure once confirmed is not reported again by a flush."""
    await ensure_streams(js, BusConfig())
    publisher = EventPublisher(js)
    stored = await publisher.publish(make_event(events.CallAnswered))
    lost = await publisher.publish_raw("nothing.captures.this", b"{}", "lost-1")  # no stream: no ack comes
    with pytest.raises(PublishError, match="1 event"):
        await publisher.confirm([lost, stored], ack_wait=5)
    await publisher.confirm([stored])  # the other unit: its publish was acknowledged
    await publisher.flush(ack_wait=5)  # the failure was the first caller's, and it was told
    unconfirmed = await publisher.publish_raw("nothing.captures.this", b"{}", "lost-2")
    await publisher.confirm([])
    with pytest.raises(PublishError, match="1 event"):  # nobody confirmed it: the next flush says so
        await publisher.flush(ack_wait=5)
    assert unconfirmed.done()
