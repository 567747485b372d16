"""The JetStream streams of D§3, created or updated idempotently at start."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from hub.config import BusConfig
from hub.logs import get_logger
from schemas import subjects

log = get_logger(__name__)


def stream_configs(config: BusConfig) -> list[StreamConfig]:
    max_bytes = config.events_max_bytes if config.events_max_bytes > 0 else -1
    return [
        StreamConfig(
            name=subjects.EVENTS_STREAM,
            description="MasterLinc events (typed, versioned); the recorder files them in the event log",
            subjects=[subjects.EVENTS_ALL],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=config.events_max_age_s,
            max_bytes=max_bytes,
            duplicate_window=config.duplicate_window_s,
            num_replicas=config.replicas,
            discard=DiscardPolicy.OLD,
        ),
        StreamConfig(
            name=subjects.COMMANDS_STREAM,
            description="Commands for the PBX workers (work queue: each command goes to one worker)",
            subjects=[subjects.COMMANDS_ALL],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_age=24 * 3600,
            duplicate_window=config.duplicate_window_s,
            num_replicas=config.replicas,
        ),
        StreamConfig(
            name=subjects.DLQ_STREAM,
            description="Dead letters: messages a consumer could not handle, with the reason in a header",
            subjects=[subjects.DLQ_ALL],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=30 * 86400,
            num_replicas=config.replicas,
        ),
    ]


async def ensure_streams(js: JetStreamContext, config: BusConfig) -> None:
    """Create each stream, or update it to the configured limits when it exists. Safe to run from every replica."""
    for cfg in stream_configs(config):
        try:
            existing = await js.stream_info(cfg.name or "")
        except NotFoundError:
            try:
                await js.add_stream(cfg)
                log.info("stream created", stream=cfg.name)
                continue
            except BadRequestError as exc:  # another replica created it in between
                if exc.err_code != 10058:  # stream name already in use
                    raise
                existing = await js.stream_info(cfg.name or "")
        current = existing.config
        if (
            current.max_age != cfg.max_age
            or current.duplicate_window != cfg.duplicate_window
            or (current.max_bytes or -1) != (cfg.max_bytes or -1)
            or current.subjects != cfg.subjects
        ):
            await js.update_stream(cfg)
            log.info("stream updated", stream=cfg.name)
