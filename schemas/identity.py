"""Identity (D§2): ULIDs for hub-minted ids, deterministic UUIDv5 event ids.

An adapter event id is a UUIDv5 over (pbx_id, call_id, leg, transition, ordinal of that transition on that leg), so the
live websocket path and the resync path produce the *same* id for the same transition, and JetStream dedup
(``Nats-Msg-Id``) plus the log's unique key collapse the two.
"""

from __future__ import annotations

import uuid

from ulid import ULID

# Fixed namespace for MasterLinc event ids. Changing it changes every deterministic id: never do.
EVENT_NAMESPACE = uuid.UUID("6f1c4f5e-2b1e-5d8a-9a53-3c1d0e7b6a10")


def new_ulid() -> str:
    """A new ULID as a 26-character string (sortable by creation time)."""
    return str(ULID())


def new_call_id() -> str:
    return new_ulid()


def new_command_id() -> str:
    return new_ulid()


def deterministic_event_id(*parts: object) -> uuid.UUID:
    """UUIDv5 over the parts joined with a separator that cannot appear in tokens."""
    name = "\x1f".join("" if p is None else str(p) for p in parts)
    return uuid.uuid5(EVENT_NAMESPACE, name)


def leg_event_id(pbx_id: str, call_id: str, leg_key: str, transition: str, ordinal: int = 0) -> uuid.UUID:
    """The event id of the ``ordinal``-th ``transition`` on one leg of one call."""
    return deterministic_event_id("leg", pbx_id, call_id, leg_key, transition, ordinal)


def derived_event_id(source_event_id: uuid.UUID | str, purpose: str) -> uuid.UUID:
    """An id derived from another event (e.g. an agent's effect of handling it): stable under redelivery."""
    return deterministic_event_id("derived", source_event_id, purpose)


def derived_command_id(source_event_id: uuid.UUID | str, purpose: str) -> str:
    """A command id derived from the event that triggered it, so replay and redelivery issue the same command."""
    return str(derived_event_id(source_event_id, purpose))
