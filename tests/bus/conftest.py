"""A JetStream context on a bus emptied of every stream and bucket, for the KV suites."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.js import JetStreamContext

from hub.bus import connect
from tests.helpers import fresh_bus


@pytest.fixture
async def js(nats_server: str, request: pytest.FixtureRequest) -> AsyncIterator[JetStreamContext]:
    nc = await connect(nats_server, name=f"test-{request.node.name}"[:64])
    js = nc.jetstream()
    await fresh_bus(js)
    yield js
    await nc.close()
