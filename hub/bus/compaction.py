"""Delete markers out of the per-call KV buckets.

A KV delete leaves a marker per key, and the hub deletes one key per call in several buckets (a lease released, an
assignment done, an ingest state ended). ``ML_LEASES`` has no TTL, so its markers stayed for ever: 39,223 of them
after the 30-minute soak, each held in nats-server's memory and replayed to every mirror that starts. Each purge is
filtered to its key and bounded by the marker's own sequence, so a value written after the marker is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from hub.bus.kv import ASSIGNMENTS, CALL_LEASES, INFLIGHT, INGEST_STATE, Bucket, open_bucket
from hub.logs import get_logger

log = get_logger(__name__)

PER_CALL_BUCKETS = (CALL_LEASES, ASSIGNMENTS, INGEST_STATE, INFLIGHT)
MARKER_AGE_S = 600.0  # older than any in-flight compare-and-set on the key could be
COMPACT_EVERY_S = 300.0
PURGES_IN_FLIGHT = 32


async def compact_deletes(kv: KeyValue, bucket: Bucket, *, older_than_s: float = MARKER_AGE_S) -> int:
    """Remove the bucket's delete markers older than ``older_than_s``; the number removed."""
    markers = await old_markers(kv, older_than_s)
    await purge_markers(kv, bucket, markers)
    return len(markers)


async def old_markers(kv: KeyValue, older_than_s: float) -> list[tuple[str, int]]:
    """(key, revision) of each key whose latest entry is a delete marker older than ``older_than_s``."""
    # meta_only: nats-py's watch() takes headers_only but ignores it; without the values a round reads a few
    # hundred bytes per key instead of the whole bucket (the coordinator's RSS stepped up ~5 MiB at each round)
    watcher = await kv.watchall(meta_only=True)
    markers: list[tuple[str, int]] = []
    now = datetime.now(UTC)
    try:
        async for entry in watcher:
            if entry is None:
                break
            old = entry.created is not None and (now - entry.created).total_seconds() >= older_than_s
            if entry.operation in (KV_DEL, KV_PURGE) and old and entry.revision is not None:
                markers.append((entry.key, entry.revision))
            if entry.delta == 0:
                break
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()  # type: ignore[no-untyped-call]
    return markers


async def purge_markers(kv: KeyValue, bucket: Bucket, markers: list[tuple[str, int]]) -> None:
    """Purge each key up to its marker: ``seq`` is exclusive, so what was written after the marker stays."""
    js: JetStreamContext = kv._js
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
                removed = await compact_deletes(await open_bucket(js, bucket), bucket, older_than_s=older_than_s)
            except Exception as exc:  # the bus down or slow: the markers wait for the next round
                log.warning("delete markers not compacted", bucket=bucket.name, error=str(exc) or type(exc).__name__)
                continue
            if removed:
                log.info("delete markers compacted", bucket=bucket.name, removed=removed)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), every_s)
