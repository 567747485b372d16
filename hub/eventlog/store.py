"""The event log store: batched writes, keyset reads, dead letters, retention and erasure.

Errors (translated here, once, from SQLAlchemy / asyncpg / sqlite3)::

    StoreError
    ├── StoreUnavailable   the database cannot be reached or went away: retry later, nothing was written
    ├── StoreNotMigrated   the tables are missing: run `masterlinc db upgrade`
    └── StoreRejected      the database refused the data permanently

Writes are idempotent on the event id: a redelivered or re-published event is counted as a duplicate, not an error.
On Postgres a batch is COPYed into a temporary staging table and moved with ``INSERT ... ON CONFLICT DO NOTHING`` in
one transaction (COPY is the fastest way in; the staging table lets duplicates be skipped). On SQLite (WAL mode) a
batch is one ``INSERT OR IGNORE`` executemany.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy import event as sa_event
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from hub.eventlog.tables import consumer_positions, dead_letters, events
from schemas.codec import EVENT_ADAPTER, DecodeError, event_from_dict, loads_object


class StoreError(Exception):
    """Base of event log errors."""


class StoreUnavailable(StoreError, ConnectionError):
    """The database cannot be reached; nothing was written. Retry with backoff."""


class StoreNotMigrated(StoreError):
    """The event log tables do not exist yet."""


class StoreRejected(StoreError):
    """The database refused the data permanently."""


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class LogRow:
    """One event ready to be written, parsed and validated from the message exactly as published."""

    seq: int
    event_id: uuid.UUID
    type: str
    schema_version: int
    pbx_id: str
    call_id: str | None
    subject: str
    occurred_at: datetime
    observed_at: datetime
    inferred: bool
    correlation_id: str | None
    payload: str

    @classmethod
    def from_message(cls, seq: int, subject: str, payload: bytes) -> LogRow:
        """Validate the whole event (older versions through their upcasters); raise DecodeError with the reason.

        The fast path validates the JSON bytes in pydantic-core (about 12 us for 1 KiB); only events that fail it
        (older schema versions, or invalid ones) take the slower path that upcasts or explains.
        """
        try:
            text = payload.decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(f"not UTF-8: {exc}") from None
        try:
            event = EVENT_ADAPTER.validate_json(payload)
            version: int = event.schema_version
        except ValidationError:
            document = loads_object(text)
            event = event_from_dict(document)  # upcasts an older version, or raises DecodeError with the reason
            version = int(document.get("schema_version", 1))
        return cls(
            seq=seq,
            event_id=event.event_id,
            type=event.type,
            schema_version=version,
            pbx_id=event.pbx_id,
            call_id=event.call_id,
            subject=subject,
            occurred_at=event.occurred_at,
            observed_at=event.observed_at,
            inferred=event.inferred,
            correlation_id=event.correlation_id,
            payload=text,
        )


@dataclass(frozen=True)
class InsertOutcome:
    inserted: int
    duplicates: int


@dataclass(frozen=True, kw_only=True)
class DeadLetterInput:
    source: str
    subject: str
    reason: str
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)
    stream_seq: int | None = None


@dataclass(frozen=True)
class DeadLetter:
    id: int
    source: str
    subject: str
    reason: str
    payload: bytes
    headers: dict[str, Any]
    stream_seq: int | None
    first_seen: datetime
    status: str
    retried_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class LogFilter:
    call_ids: Sequence[str] = ()
    types: Sequence[str] = ()
    pbx_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_seq: int = 0


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    event_id: uuid.UUID
    type: str
    call_id: str | None
    subject: str
    occurred_at: datetime
    payload: bytes


@dataclass(frozen=True)
class ErasureReport:
    number: str
    events_deleted: int
    by_type: dict[str, int]
    calls: list[str]
    dead_letters_deleted: int


_TRANSIENT_PG = (
    "CannotConnectNow",
    "ConnectionDoesNotExist",
    "TooManyConnections",
    "AdminShutdown",
    "InternalClientError",  # asyncpg's state after the server vanished mid-operation: retry on a new connection
    "ConnectionFailure",
)


def _translate(exc: BaseException) -> StoreError:
    text = str(exc).split("\n", 1)[0]
    if isinstance(exc, IntegrityError):
        return StoreRejected(text)
    if isinstance(exc, ProgrammingError | OperationalError) and ("does not exist" in text or "no such table" in text):
        return StoreNotMigrated(f"the event log tables are missing ({text}); run `masterlinc db upgrade`")
    if isinstance(exc, DBAPIError | InterfaceError | OSError | TimeoutError | ConnectionError):
        return StoreUnavailable(text or type(exc).__name__)
    name = type(exc).__name__
    if any(t in name for t in _TRANSIENT_PG) or "connection" in text.lower():
        return StoreUnavailable(text or name)
    return StoreRejected(text or name)


def _asyncpg_errors() -> tuple[type[BaseException], ...]:
    try:
        import asyncpg
    except ImportError:
        return ()
    return (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    sa.exc.SQLAlchemyError,
    OSError,
    TimeoutError,
    ConnectionError,
    *_asyncpg_errors(),
)

_COLUMNS = (
    "seq",
    "event_id",
    "type",
    "schema_version",
    "pbx_id",
    "call_id",
    "subject",
    "occurred_at",
    "observed_at",
    "inferred",
    "correlation_id",
    "payload",
)

NUMBER_PATHS = (
    ("data", "from_number"),
    ("data", "to_number"),
    ("data", "did"),
    ("data", "to"),
    ("data", "participant", "party_caller_id"),
    ("data", "participant", "party_did"),
    ("data", "participant", "party_dn"),
)


class EventStore:
    """Owns an async engine for the log database. Use ``await EventStore.open(url)`` and ``await store.close()``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    async def open(cls, url: str, *, check: bool = True) -> EventStore:
        engine = create_async_engine(url, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            sa_event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        store = cls(engine)
        if check:
            try:
                async with engine.connect() as conn:
                    await conn.execute(sa.select(sa.func.count()).select_from(consumer_positions))
            except _DRIVER_ERRORS as exc:
                await engine.dispose()
                raise _translate(exc) from None
        return store

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> EventStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ writes

    async def insert_batch(self, rows: Sequence[LogRow]) -> InsertOutcome:
        """Write ``rows`` in one transaction; rows whose event id (or stream seq) is already stored are skipped."""
        if not rows:
            return InsertOutcome(0, 0)
        try:
            if self.dialect == "postgresql":
                inserted = await self._insert_pg(rows)
            else:
                inserted = await self._insert_generic(rows)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from None
        return InsertOutcome(inserted, len(rows) - inserted)

    async def _insert_pg(self, rows: Sequence[LogRow]) -> int:
        """COPY straight into the table; only when that hits a duplicate (a redelivery), go through a staging table
        and ``INSERT ... ON CONFLICT DO NOTHING``. Duplicates are rare, so the common path costs one COPY."""
        records = [
            (r.seq, r.event_id, r.type, r.schema_version, r.pbx_id, r.call_id, r.subject, r.occurred_at,
             r.observed_at, r.inferred, r.correlation_id, r.payload)
            for r in rows
        ]  # fmt: skip
        import asyncpg

        async with self._engine.connect() as conn:
            raw = await conn.get_raw_connection()
            apg: Any = raw.driver_connection
            try:
                return await self._copy_pg(apg, records)
            except (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError):
                # the server went away mid-COPY: this raw connection's state is unknown, never hand it out again
                with contextlib.suppress(Exception):
                    await conn.invalidate()
                raise

    @staticmethod
    async def _copy_pg(apg: Any, records: list[tuple[Any, ...]]) -> int:
        """One COPY in a savepoint; on a duplicate, the staging-table path."""
        import asyncpg

        async with apg.transaction():
            try:
                async with apg.transaction():  # a savepoint: a duplicate undoes only this attempt
                    await apg.copy_records_to_table("events", records=records, columns=list(_COLUMNS))
                return len(records)
            except asyncpg.UniqueViolationError:
                pass
            await apg.execute(
                "CREATE TEMP TABLE IF NOT EXISTS events_stage (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            await apg.copy_records_to_table("events_stage", records=records, columns=list(_COLUMNS))
            cols = ", ".join(_COLUMNS)
            status: str = await apg.execute(
                f"INSERT INTO events ({cols}) SELECT DISTINCT ON (event_id) {cols} FROM events_stage "  # noqa: S608 - fixed column names
                "ORDER BY event_id, seq ON CONFLICT DO NOTHING"
            )
        return int(status.rsplit(" ", 1)[-1])

    async def _insert_generic(self, rows: Sequence[LogRow]) -> int:
        stmt = sa.insert(events).prefix_with("OR IGNORE")
        params = [
            {
                "seq": r.seq,
                "event_id": r.event_id,
                "type": r.type,
                "schema_version": r.schema_version,
                "pbx_id": r.pbx_id,
                "call_id": r.call_id,
                "subject": r.subject,
                "occurred_at": r.occurred_at,
                "observed_at": r.observed_at,
                "inferred": r.inferred,
                "correlation_id": r.correlation_id,
                "payload": r.payload,
            }
            for r in rows
        ]
        async with self._engine.begin() as conn:
            before = await _count(conn)
            await conn.execute(stmt, params)
            after = await _count(conn)
        return after - before

    # ------------------------------------------------------------------ reads

    def _where(self, f: LogFilter) -> list[sa.ColumnElement[bool]]:
        clauses: list[sa.ColumnElement[bool]] = [events.c.seq > f.after_seq]
        if f.call_ids:
            clauses.append(events.c.call_id.in_(list(f.call_ids)))
        if f.types:
            clauses.append(events.c.type.in_(list(f.types)))
        if f.pbx_id:
            clauses.append(events.c.pbx_id == f.pbx_id)
        if f.since:
            clauses.append(events.c.occurred_at >= f.since)
        if f.until:
            clauses.append(events.c.occurred_at <= f.until)
        return clauses

    async def iter_events(self, f: LogFilter, *, page: int = 5000) -> AsyncIterator[StoredEvent]:
        """Events in stream order, fetched in pages by keyset (``seq > last``): constant memory, no OFFSET scans."""
        if self.dialect == "postgresql":
            async for stored in self._iter_pg(f, page):
                yield stored
            return
        after = f.after_seq
        columns = (
            events.c.seq,
            events.c.event_id,
            events.c.type,
            events.c.call_id,
            events.c.subject,
            events.c.occurred_at,
            events.c.payload,
        )
        while True:
            query = (
                sa.select(*columns)
                .where(*self._where(LogFilter(**{**f.__dict__, "after_seq": after})))
                .order_by(events.c.seq)
                .limit(page)
            )
            try:
                async with self._engine.connect() as conn:
                    result = (await conn.execute(query)).all()
            except _DRIVER_ERRORS as exc:
                raise _translate(exc) from None
            for row in result:
                yield StoredEvent(
                    seq=row.seq,
                    event_id=row.event_id,
                    type=row.type,
                    call_id=row.call_id,
                    subject=row.subject,
                    occurred_at=_utc(row.occurred_at),
                    payload=row.payload.encode(),
                )
            if len(result) < page:
                return
            after = result[-1].seq

    async def _iter_pg(self, f: LogFilter, page: int) -> AsyncIterator[StoredEvent]:
        """The replay hot path on Postgres: asyncpg directly, payload as text (no JSON decoding on the way out)."""
        clauses: list[str] = ["seq > $1"]
        args: list[Any] = [f.after_seq]
        for column, value, op in (
            ("call_id", list(f.call_ids), "= ANY"),
            ("type", list(f.types), "= ANY"),
            ("pbx_id", f.pbx_id, "="),
            ("occurred_at", f.since, ">="),
            ("occurred_at", f.until, "<="),
        ):
            if value:
                args.append(value)
                clauses.append(f"{column} {op}(${len(args)})" if op == "= ANY" else f"{column} {op} ${len(args)}")
        sql = (
            "SELECT seq, event_id, type, call_id, subject, occurred_at, payload FROM events "  # noqa: S608
            f"WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT {int(page)}"
        )
        try:
            async with self._engine.connect() as conn:
                raw = await conn.get_raw_connection()
                apg: Any = raw.driver_connection
                while True:
                    rows = await apg.fetch(sql, *args)
                    for r in rows:
                        yield StoredEvent(
                            seq=r["seq"],
                            event_id=r["event_id"],
                            type=r["type"],
                            call_id=r["call_id"],
                            subject=r["subject"],
                            occurred_at=r["occurred_at"],
                            payload=r["payload"].encode(),
                        )
                    if len(rows) < page:
                        return
                    args[0] = rows[-1]["seq"]
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from None

    async def count(self, f: LogFilter) -> int:
        try:
            async with self._engine.connect() as conn:
                value = await conn.scalar(sa.select(sa.func.count()).select_from(events).where(*self._where(f)))
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from None
        return int(value or 0)

    async def call_timeline(self, call_id: str) -> list[StoredEvent]:
        return [e async for e in self.iter_events(LogFilter(call_ids=(call_id,)))]

    async def known_call(self, call_id: str) -> bool:
        try:
            async with self._engine.connect() as conn:
                found = await conn.scalar(sa.select(events.c.seq).where(events.c.call_id == call_id).limit(1))
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from None
        return found is not None

    async def max_seq(self) -> int:
        async with self._engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.coalesce(sa.func.max(events.c.seq), 0))) or 0)

    # ------------------------------------------------------------------ dead letters

    async def add_dead_letter(self, letter: DeadLetterInput) -> None:
        """Keep a message no consumer could handle, with the reason. The same (source, seq) is kept once."""
        values = {
            "source": letter.source,
            "subject": letter.subject,
            "reason": letter.reason,
            "payload": letter.payload,
            "headers": letter.headers,
            "stream_seq": letter.stream_seq,
        }
        try:
            async with self._engine.begin() as conn:
                if letter.stream_seq is not None:
                    exists = await conn.scalar(
                        sa.select(dead_letters.c.id).where(
                            dead_letters.c.source == letter.source, dead_letters.c.stream_seq == letter.stream_seq
                        )
                    )
                    if exists is not None:
                        return
                await conn.execute(sa.insert(dead_letters).values(**values))
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from None

    async def list_dead_letters(self, *, status: str | None = "open", limit: int = 50) -> list[DeadLetter]:
        query = sa.select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
        if status:
            query = query.where(dead_letters.c.status == status)
        async with self._engine.connect() as conn:
            return [_letter(r) for r in (await conn.execute(query)).all()]

    async def get_dead_letter(self, letter_id: int) -> DeadLetter | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(dead_letters).where(dead_letters.c.id == letter_id))).first()
        return _letter(row) if row else None

    async def mark_retried(self, letter_id: int) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(dead_letters)
                .where(dead_letters.c.id == letter_id)
                .values(status="retried", retried_at=datetime.now(UTC))
            )

    # ------------------------------------------------------------------ retention and privacy

    async def prune(self, older_than: timedelta, *, chunk: int = 10_000) -> int:
        """Delete events that occurred before now - ``older_than``, in bounded chunks (no table-wide lock)."""
        cutoff = datetime.now(UTC) - older_than
        total = 0
        while True:
            async with self._engine.begin() as conn:
                ids = sa.select(events.c.seq).where(events.c.occurred_at < cutoff).limit(chunk).scalar_subquery()
                result = await conn.execute(sa.delete(events).where(events.c.seq.in_(ids)))
            deleted = int(result.rowcount or 0)
            total += deleted
            if deleted < chunk:
                return total

    async def erase_number(self, number: str) -> ErasureReport:
        """Privacy request: delete every event (and dead letter) that names ``number`` as a party."""
        if not number or len(number) < 3:
            raise ValueError("give the full phone number to erase (at least 3 characters)")
        matches: list[tuple[int, str, str | None]] = []
        async for stored in self.iter_events(LogFilter()):
            doc = json.loads(stored.payload)
            if any(_path(doc, p) == number for p in NUMBER_PATHS):
                matches.append((stored.seq, stored.type, stored.call_id))
        calls = sorted({c for _, _, c in matches if c})
        # everything about those calls goes too: later events of the call may not repeat the number
        by_type: dict[str, int] = {}
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    sa.select(events.c.seq, events.c.type).where(
                        sa.or_(events.c.call_id.in_(calls), events.c.seq.in_([m[0] for m in matches]))
                    )
                )
            ).all()
            for row in rows:
                by_type[row.type] = by_type.get(row.type, 0) + 1
            seqs = [r.seq for r in rows]
            for i in range(0, len(seqs), 500):
                await conn.execute(sa.delete(events).where(events.c.seq.in_(seqs[i : i + 500])))
            letters = (await conn.execute(sa.select(dead_letters.c.id, dead_letters.c.payload))).all()
            doomed = [r.id for r in letters if number.encode() in r.payload]
            if doomed:
                await conn.execute(sa.delete(dead_letters).where(dead_letters.c.id.in_(doomed)))
        return ErasureReport(number, len(seqs), dict(sorted(by_type.items())), calls, len(doomed))

    # ------------------------------------------------------------------ consumer positions

    async def get_position(self, name: str) -> str | None:
        async with self._engine.connect() as conn:
            value = await conn.scalar(sa.select(consumer_positions.c.position).where(consumer_positions.c.name == name))
        return None if value is None else str(value)

    async def save_position(self, conn: AsyncConnection, name: str, position: str) -> None:
        """Record a consumer's position inside the caller's transaction (with its effects)."""
        updated = await conn.execute(
            sa.update(consumer_positions)
            .where(consumer_positions.c.name == name)
            .values(position=position, updated_at=datetime.now(UTC))
        )
        if not updated.rowcount:
            await conn.execute(sa.insert(consumer_positions).values(name=name, position=position))

    def begin(self) -> Any:
        """A transaction for effects + position (``async with store.begin() as conn``)."""
        return self._engine.begin()


async def _count(conn: AsyncConnection) -> int:
    return int(await conn.scalar(sa.select(sa.func.count()).select_from(events)) or 0)


def _path(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _letter(row: Any) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        source=row.source,
        subject=row.subject,
        reason=row.reason,
        payload=bytes(row.payload),
        headers=dict(row.headers or {}),
        stream_seq=row.stream_seq,
        first_seen=_utc(row.first_seen),
        status=row.status,
        retried_at=_utc(row.retried_at) if row.retried_at else None,
    )


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
