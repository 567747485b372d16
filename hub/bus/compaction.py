"""Delete markers out of the per-call KV buckets.

A KV delete leaves a marker per key, and the hub deletes one key per call in several buckets (a lease released, an
assignment done, an ingest state ended). ``ML_LEASES`` has no TTL, so its markers stayed for ever: 39,223 of them
after the 30-minute soak, each held in nats-server's memory and replayed to every mirror that starts. Each purge is
filtered to its key and bounded by the marker's own sequence, so a value written after the marker is never touched.

The scan reads each key's latest entry through a short-lived pull consumer, headers only, one batch at a time
(:mod:`hub.bus.kvscan`), and purges each batch's old markers before it asks for the next: what a round holds is one
batch, however many keys the bucket has. A KV watch pushes the whole bucket into the client at once (nats-py's
``watch`` also ignores ``headers_only``): the coordinator's RSS stepped up ~5 MiB at every round under the soak's
load and kept it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from hub.bus.kv import ASSIGNMENTS, CALL_LEASES, INFLIGHT, INGEST_STATE, Bucket, open_bucket
from hub.bus.kvscan import SCAN_BATCH, KvScan, is_marker, kv_prefix
from hub.logs import get_logger

log = get_logger(__name__)

PER_CALL_BUCKETS = (CALL_LEASES, ASSIGNMENTS, INGEST_STATE, INFLIGHT)
MARKER_AGE_S = 600.0  # older than any in-flight compare-and-set on the key could be
COMPACT_EVERY_S = 300.0
PURGES_IN_FLIGHT = 32


async def compact_deletes(js: JetStreamContext, bucket: Bucket, *, older_than_s: float = MARKER_AGE_S,
                          batch: int = SCAN_BATCH) -> int:  # fmt: skip
    """Remove the bucket's delete markers older than ``older_than_s``; the number removed."""
    removed = 0
    async for markers in marker_batches(js, bucket, older_than_s, batch=batch):
        await purge_markers(js, bucket, markers)
        removed += len(markers)
    return removed


async def marker_batches(
    js: JetStreamContext, bucket: Bucket, older_than_s: float, *, batch: int = SCAN_BATCH
) -> AsyncIterator[list[tuple[str, int]]]:
    """(key, revision) of each key whose latest entry is a delete marker older than ``older_than_s``, a batch of
    the bucket's keys at a time (a batch without old markers yields nothing)."""
    prefix = kv_prefix(bucket.name)
    async for msgs in KvScan(js, bucket.name, headers_only=True, batch=batch).batches():
        now = datetime.now(UTC)
        markers = [
            (m.subject[len(prefix) :], m.metadata.sequence.stream) for m in msgs if _old_marker(m, now, older_than_s)
        ]
        if markers:
            yield markers


def _old_marker(msg: Msg, now: datetime, older_than_s: float) -> bool:
    return is_marker(msg) and (now - msg.metadata.timestamp).total_seconds() >= older_than_s


async def purge_markers(js: JetStreamContext, bucket: Bucket, markers: list[tuple[str, int]]) -> None:
    """Purge each key up to its marker: ``seq`` is exclusive, so what was written after the marker stays."""
    stream = f"KV_{bucket.name}"
    for start in range(0, len(markers), PURGES_IN_FLIGHT):
        await asyncio.gather(*(
            js.purge_stream(stream, subject=f"$KV.{bucket.name}.{key}", seq=revision + 1)
            for key, revision in markers[start : start + PURGES_IN_FLIGHT]
        ))  # fmt: skip


async def compact_forever(js: JetStreamContext, stopping: asyncio.Event, *, every_s: float = COMPACT_EVERY_S,
                          older_than_s: float = MARKER_AGE_S) -> None:  # fmt: skip
    """Compact the per-call buckets now and then; a failure (the bus down) waits for the next round."""
    while not stopping.is_set():
        for bucket in PER_CALL_BUCKETS:
            try:
                await open_bucket(js, bucket)  # made here if no service has made it yet
                removed = await compact_deletes(js, bucket, older_than_s=older_than_s)
            except Exception as exc:  # the bus down or slow: the markers wait for the next round
                log.warning("delete markers not compacted", bucket=bucket.name, error=str(exc) or type(exc).__name__)
                continue
            if removed:
                log.info("delete markers compacted", bucket=bucket.name, removed=removed)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), every_s)
