"""NATS KV buckets of D§9, opened or created idempotently. Names and TTLs live here, nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue


@dataclass(frozen=True)
class Bucket:
    name: str
    ttl_s: float | None
    description: str
    history: int = 1


CALL_IDS = Bucket("ML_CALLIDS", 7 * 86400, "(pbx, 3CX callid, first seen) -> hub call_id")
INGEST_STATE = Bucket("ML_INGEST", 7 * 86400, "the adapter's state of each active call (legs, emitted transitions)")
LEADERS = Bucket("ML_LEADERS", None, "one active adapter per PBX: leader leases and epochs")
CALL_LEASES = Bucket("ML_LEASES", None, "call ownership leases of agents")
AGENTS = Bucket("ML_AGENTS", 3600, "agent registry and heartbeats")
ASSIGNMENTS = Bucket("ML_ASSIGN", 86400, "which agent the coordinator assigned each inbound call, and its deadline")
INFLIGHT = Bucket("ML_INFLIGHT", 86400, "commands a worker has started on the PBX")
IDEMPOTENCY = Bucket("ML_IDEMPOTENCY", 86400, "command results by issuer and idempotency key (24 h window)")
RECORDINGS = Bucket("ML_RECORDINGS", 86400, "hub-side recordings in progress and the worker holding each")
RATE = Bucket("ML_RATE", 120, "per-PBX command rate windows shared by all workers")

ALL_BUCKETS = (
    CALL_IDS,
    INGEST_STATE,
    LEADERS,
    CALL_LEASES,
    AGENTS,
    ASSIGNMENTS,
    INFLIGHT,
    IDEMPOTENCY,
    RECORDINGS,
    RATE,
)


async def open_bucket(
    js: JetStreamContext, bucket: Bucket, *, ttl_s: float | None = None, replicas: int = 1
) -> KeyValue:
    """Open the bucket, creating it on first use. ``ttl_s`` overrides the default window (e.g. idempotency)."""
    try:
        return await js.key_value(bucket.name)
    except (BucketNotFoundError, NotFoundError):
        pass
    ttl = ttl_s if ttl_s is not None else bucket.ttl_s
    return await js.create_key_value(
        KeyValueConfig(
            bucket=bucket.name,
            description=bucket.description,
            history=bucket.history,
            ttl=ttl,
            storage=StorageType.FILE,
            replicas=replicas,
        )
    )


CREATE_ATTEMPTS = 3


async def create(kv: KeyValue, key: str, value: bytes) -> int:
    """``kv.create`` (the key's revision; KeyWrongLastSequenceError when the key holds a value) that the purge of
    the key's old delete marker (:mod:`hub.bus.compaction`) cannot fool.

    nats-py writes "no entry before"; when a marker is there it reads the marker, then writes on the marker's
    revision. A purge between those steps makes the read raise KeyNotFoundError, or the second write fail with
    KeyWrongLastSequenceError as if another writer had created the key. In both cases the key is free: try again.
    """
    for _ in range(CREATE_ATTEMPTS - 1):
        try:
            return await kv.create(key, value)
        except KeyWrongLastSequenceError:
            if await _holds_value(kv, key):
                raise
        except KeyNotFoundError:
            pass
    return await kv.create(key, value)


async def _holds_value(kv: KeyValue, key: str) -> bool:
    try:
        await kv.get(key)
    except KeyNotFoundError:  # KeyDeletedError included: only a marker, or nothing
        return False
    return True
