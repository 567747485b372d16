"""The bus: NATS connection, JetStream streams and the batched event publisher."""

from hub.bus.connection import BusError, BusUnavailableError, ServerTooOldError, check_server_version, connect
from hub.bus.publisher import MSG_ID, REPLAY_HEADER, EventPublisher, PublishError
from hub.bus.streams import ensure_streams, stream_configs

__all__ = [
    "MSG_ID",
    "REPLAY_HEADER",
    "BusError",
    "BusUnavailableError",
    "EventPublisher",
    "PublishError",
    "ServerTooOldError",
    "check_server_version",
    "connect",
    "ensure_streams",
    "stream_configs",
]
