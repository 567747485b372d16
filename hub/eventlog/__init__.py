"""The event log: every event recorded once, in stream order, in Postgres or SQLite."""

from hub.eventlog.store import (
    DeadLetter,
    DeadLetterInput,
    ErasureReport,
    EventStore,
    InsertOutcome,
    LogFilter,
    LogRow,
    StoredEvent,
    StoreError,
    StoreNotMigrated,
    StoreRejected,
    StoreUnavailable,
)

__all__ = [
    "DeadLetter",
    "DeadLetterInput",
    "ErasureReport",
    "EventStore",
    "InsertOutcome",
    "LogFilter",
    "LogRow",
    "StoreError",
    "StoreNotMigrated",
    "StoreRejected",
    "StoreUnavailable",
    "StoredEvent",
]
