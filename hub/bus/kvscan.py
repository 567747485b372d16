"""A KV bucket's latest entries read a batch at a time, through a short-lived pull consumer.

nats-py's ``watch`` pushes every key's latest entry into the client at once, delete markers included, and they pile
up in the subscription's buffers: a mirror starting on a bucket with 25,000 markers and 500 live keys grew 6.8 MiB
(peak +15.6 MiB) and kept it, against 0.5 MiB on a bucket with the 500 keys alone (2026-12-03). A scan holds one
batch. Used by the mirrors' first load (:mod:`hub.bus.kvmirror`) and the marker compaction (:mod:`hub.bus.compaction`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

SCAN_BATCH = 256
FETCH_TIMEOUT_S = 5.0
KV_OPERATION = "KV-Operation"
MARKER_REASON = "Nats-Marker-Reason"  # nats-server 2.11+ places its own markers (TTL, max age) with this header


def kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def kv_prefix(bucket: str) -> str:
    return f"$KV.{bucket}."


def is_marker(msg: Msg) -> bool:
    """A delete or purge marker (the hub's, or one the server placed), not a value."""
    headers = msg.headers or {}
    return headers.get(KV_OPERATION) in ("DEL", "PURGE") or MARKER_REASON in headers


class KvScan:
    """``async for batch in KvScan(js, bucket).batches()``: each key's latest entry (markers included), in stream
    order. After the loop, ``complete`` says whether it reached the end (False: the bucket changed under it and a
    fetch found nothing for ``FETCH_TIMEOUT_S``) and ``last_seq`` is the highest stream sequence delivered."""

    def __init__(
        self, js: JetStreamContext, bucket: str, pattern: str = ">", *, headers_only: bool = False,
        batch: int = SCAN_BATCH,
    ) -> None:  # fmt: skip
        self._js = js
        self._bucket = bucket
        self._pattern = pattern
        self._headers_only = headers_only
        self._batch = batch
        self.complete = False
        self.last_seq = 0

    async def batches(self) -> AsyncIterator[list[Msg]]:
        stream = kv_stream(self._bucket)
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            headers_only=self._headers_only,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=30.0,  # a scan cut short (the process died) leaves no consumer behind for long
        )
        sub = await self._js.pull_subscribe(f"{kv_prefix(self._bucket)}{self._pattern}", stream=stream, config=config)
        try:
            pending = (await sub.consumer_info()).num_pending
            while pending:
                try:
                    msgs = await sub.fetch(min(self._batch, pending), timeout=FETCH_TIMEOUT_S)
                except NatsTimeoutError:
                    return
                if msgs:
                    self.last_seq = max(self.last_seq, msgs[-1].metadata.sequence.stream)
                    yield msgs
                pending = msgs[-1].metadata.num_pending if msgs else 0
            self.complete = True
        finally:
            with contextlib.suppress(Exception):
                info = await sub.consumer_info()
                await sub.unsubscribe()
                await self._js.delete_consumer(stream, info.name)
