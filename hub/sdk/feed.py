"""The agent feed (ML_FEED): ML_EVENTS copied by the server into call partitions.

ML_EVENTS subjects end in ``<key>.<name>`` where the key is the call id for anything about a call (D§3). ML_FEED
sources ML_EVENTS with a subject transform that prefixes ``ml.feed.<partition>``, the partition being the server's
``partition(N, key)`` hash, so one call's events always share a partition, in stream order. Each agent has one
durable consumer per partition with ``max_ack_pending=1`` (one event in flight, so in order whoever pulls it), and
its replicas split the partitions between them (:mod:`hub.sdk.partitions`). Headers survive the copy, so replayed
events (``Ml-Replay``) stay recognisable. Why this design: docs/architecture.md, "Agent SDK".
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamSource,
    SubjectTransform,
)
from nats.js.errors import BadRequestError, NotFoundError

from hub.logs import get_logger
from schemas import subjects

log = get_logger(__name__)

SOURCE_HEADER = "Nats-Stream-Source"


def feed_config(partitions: int, max_age_s: float) -> StreamConfig:
    source, destination = subjects.feed_transform(partitions)
    return StreamConfig(
        name=subjects.FEED_STREAM,
        description=f"ML_EVENTS in {partitions} call partitions for agents (partition = hash of the call id)",
        sources=[
            StreamSource(
                name=subjects.EVENTS_STREAM, subject_transforms=[SubjectTransform(src=source, dest=destination)]
            )
        ],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=max_age_s,
        discard=DiscardPolicy.OLD,
    )


def _partitions_of(config: StreamConfig) -> int | None:
    for source in config.sources or []:
        for transform in source.subject_transforms or []:
            found = subjects.feed_partitions(transform.dest)
            if found is not None:
                return found
    return None


async def ensure_feed(js: JetStreamContext, partitions: int, max_age_s: float) -> int:
    """Create the feed (or keep the existing one) and return its partition count, which wins over ``partitions``:
    every agent must hash calls the same way, so the count is fixed once the feed exists."""
    wanted = feed_config(partitions, max_age_s)
    try:
        info = await js.stream_info(subjects.FEED_STREAM)
    except NotFoundError:
        try:
            await js.add_stream(wanted)
            log.info("agent feed created", partitions=partitions)
            return partitions
        except BadRequestError as exc:
            if exc.err_code != 10058:  # created by another process in between
                raise
            info = await js.stream_info(subjects.FEED_STREAM)
    existing = _partitions_of(info.config)
    if existing is None:
        raise RuntimeError(
            f"stream {subjects.FEED_STREAM} exists but is not an agent feed (no partition transform); delete it"
        )
    if existing != partitions:
        log.warning(
            "the agent feed keeps its partition count",
            configured=partitions,
            feed=existing,
            fix="to change it, stop every agent and delete the ML_FEED stream",
        )
    if info.config.max_age != max_age_s:
        await js.update_stream(feed_config(existing, max_age_s))
    return existing


def consumer_name(agent: str, partition: int) -> str:
    return f"ml-agent-{agent}-p{partition}"


def agent_of_consumer(name: str) -> str | None:
    """The agent a feed consumer belongs to (the inverse of :func:`consumer_name`), None for any other consumer."""
    if not name.startswith("ml-agent-"):
        return None
    agent, sep, partition = name.removeprefix("ml-agent-").rpartition("-p")
    return agent if sep and agent and partition.isdigit() else None


def consumer_config(agent: str, partition: int, filter_subjects: list[str], ack_wait_s: float) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=consumer_name(agent, partition),
        description=f"agent {agent}, feed partition {partition}",
        filter_subjects=filter_subjects,
        ack_policy=AckPolicy.EXPLICIT,
        max_ack_pending=1,  # one event in flight per partition: a call's events in order, whichever replica pulls
        ack_wait=ack_wait_s,
        deliver_policy=DeliverPolicy.NEW,
        max_deliver=-1,  # failing handlers are retried in process, then dead-lettered; redelivery is for dead replicas
    )


def source_position(headers: dict[str, str] | None) -> int | None:
    """The ML_EVENTS stream sequence of a copied message (from ``Nats-Stream-Source: <stream> <seq> ...``)."""
    raw = (headers or {}).get(SOURCE_HEADER)
    if not raw:
        return None
    parts = raw.split(" ")
    if len(parts) < 2 or parts[0] != subjects.EVENTS_STREAM:
        return None
    try:
        return int(parts[1])
    except ValueError:
        return None
