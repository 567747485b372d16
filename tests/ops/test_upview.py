"""`up`'s live view counts what reached the bus: each call's end once, though a retried publish that JetStream
dropped as a duplicate still reaches core subscribers (seen as `up` reporting more ended calls than its log held)."""

from __future__ import annotations

import pytest

from hub.bus import connect
from hub.upview import Watch
from schemas.subjects import event_subject
from tests.agents.support import CallScript
from tests.helpers import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


async def test_a_call_end_seen_twice_counts_once(nats_server: str) -> None:
    nc = await connect(nats_server, name="test-upview")
    try:
        watch = await Watch(nc).start(None)
        first, second = CallScript().ended(), CallScript().ended()
        for event in (first, first, second):  # the first end delivered twice, as a retried publish is
            await nc.publish(event_subject(event), event.model_dump_json().encode())
        await nc.flush()
        await eventually(lambda: watch.stats.events == 3, what="the three messages seen")
        assert watch.stats.calls_ended == 2
    finally:
        await nc.close()
