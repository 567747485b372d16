"""The log-reading commands behind the CLI: replay, events tail/show, dlq. Errors become messages, not tracebacks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import typer
from nats.js.api import ConsumerConfig, DeliverPolicy
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from hub.bus import BusUnavailableError, connect
from hub.cli_support import fail
from hub.config import Settings
from hub.eventlog.store import EventStore, StoreUnavailable
from hub.replay import ReplayArgumentError, ReplayRequest, replay
from schemas import subjects
from schemas.events import EVENT_CLASSES
from schemas.tokens import InvalidTokenError, check_token

T = TypeVar("T")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(value: str | None, what: str, now: datetime | None = None) -> datetime | None:
    """An ISO time (naive = UTC) or a duration ago (``15m``, ``2h``, ``7d``)."""
    if value is None:
        return None
    match = _DURATION.match(value.strip())
    if match:
        return (now or datetime.now(UTC)) - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither an ISO time nor a duration like 15m or 2h", param_hint=what
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (ReplayArgumentError, InvalidTokenError) as exc:
        fail(str(exc))
    except StoreUnavailable as exc:
        fail(f"the event log is unavailable: {exc}")
    except BusUnavailableError as exc:
        fail(f"{exc}; set NATS_URL to the hub's bus")


async def _with_store(settings: Settings, body: Callable[[EventStore], Awaitable[T]]) -> T:
    store = await EventStore.open(settings.effective_database_url())
    try:
        return await body(store)
    finally:
        await store.close()


def run_replay(
    settings: Settings,
    *,
    call_ids: tuple[str, ...],
    types: tuple[str, ...],
    pbx_id: str | None,
    since: str | None,
    until: str | None,
    to_original: bool,
    pace: str,
    speed: float,
    rate: float | None,
    dry_run: bool,
) -> None:
    request = ReplayRequest(
        call_ids=call_ids,
        types=types,
        pbx_id=pbx_id,
        since=parse_when(since, "--since"),
        until=parse_when(until, "--until"),
        to_original=to_original,
        pace="original" if pace == "original" else "instant",
        speed=speed,
        rate=rate,
        dry_run=dry_run,
    )
    console = Console(stderr=True)

    async def body(store: EventStore) -> None:
        nc = (
            None
            if dry_run
            else await connect(
                settings.effective_nats_url(), name="masterlinc-replay", **settings.bus.security.options()
            )
        )
        try:
            with Progress(
                TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
            ) as bar:
                task = bar.add_task("replay", total=None)
                report = await replay(
                    request, store, nc, progress=lambda sent, total: bar.update(task, completed=sent, total=total)
                )
        finally:
            if nc is not None:
                await nc.close()
        verb = "would send" if dry_run else "sent"
        typer.echo(
            f"run {report.run_id}: scanned {report.scanned}, {verb} {report.sent if not dry_run else report.scanned} "
            f"to {report.target}" + (f" in {report.seconds:.2f}s ({report.rate:,.0f}/s)" if report.sent else "")
        )

    _run(_with_store(settings, body))


def run_tail(
    settings: Settings,
    *,
    call_ids: tuple[str, ...],
    types: tuple[str, ...],
    pbx_id: str | None,
    since: str | None = None,
    until: str | None = None,
) -> None:
    """Live events; with ``--since`` from the stream's history first (JetStream keeps it), with ``--until`` up to
    that time (then exit)."""
    for event_type in types:
        if event_type not in EVENT_CLASSES:
            fail(f"unknown event type {event_type!r}; `masterlinc schema export` lists them")
    try:
        filters = _tail_filters(call_ids, types, pbx_id)
    except (InvalidTokenError, ValueError) as exc:
        fail(str(exc))
    start, end = parse_when(since, "--since"), parse_when(until, "--until")
    if start is not None and end is not None and end <= start:
        fail("--until must be after --since")
    console = Console()

    async def body() -> None:
        nc = await connect(settings.effective_nats_url(), name="masterlinc-tail", **settings.bus.security.options())
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for f in filters:
            if start is None:
                await nc.subscribe(f, cb=queue.put)
            else:  # an ordered consumer replays the stream from that time, then follows it live
                config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start)
                await nc.jetstream().subscribe(
                    f, stream=subjects.EVENTS_STREAM, cb=queue.put, ordered_consumer=True, config=config
                )
        try:
            while True:
                left = None if end is None else (end - datetime.now(UTC)).total_seconds()
                if left is not None and left <= 0 and queue.empty():
                    return
                try:
                    msg = await asyncio.wait_for(queue.get(), None if left is None else max(left, 0.05))
                except TimeoutError:
                    continue
                raw = json.loads(msg.data)
                if types and raw.get("type") not in types:
                    continue
                if end is not None and _occurred(raw) > end:
                    continue
                console.print(_line(raw), highlight=False)
        finally:
            await nc.close()

    with contextlib.suppress(KeyboardInterrupt):
        _run(body())


def _occurred(raw: dict[str, Any]) -> datetime:
    try:
        at = datetime.fromisoformat(str(raw.get("occurred_at", "")).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _tail_filters(call_ids: tuple[str, ...], types: tuple[str, ...], pbx_id: str | None) -> list[str]:
    if call_ids:
        return [subjects.call_filter(c, pbx_id) for c in call_ids]
    if types:
        return [subjects.type_filter(EVENT_CLASSES[t], pbx_id) for t in types]
    return [subjects.pbx_filter(pbx_id)] if pbx_id else [subjects.EVENTS_ALL]


def _line(raw: dict[str, Any]) -> str:
    inferred = " (inferred)" if raw.get("inferred") else ""
    data = raw.get("data") or {}
    detail = " ".join(f"{k}={v}" for k, v in data.items() if isinstance(v, str | int | float | bool) and v != "")
    return (
        f"{raw.get('occurred_at', '')}  {raw.get('type', '?'):<24} {raw.get('call_id') or '-':<26} {detail}{inferred}"
    )


def run_show(settings: Settings, call_id: str) -> None:
    try:
        check_token(call_id, "call id")
    except InvalidTokenError as exc:
        fail(str(exc))

    async def body(store: EventStore) -> list[Any]:
        if not await store.known_call(call_id):
            raise ReplayArgumentError(f"call {call_id!r} is not in the event log")
        return list(await store.call_timeline(call_id))

    rows = _run(_with_store(settings, body))
    table = Table(title=f"call {call_id}")
    for col in ("seq", "occurred at", "type", "leg", "detail"):
        table.add_column(col)
    for row in rows:
        raw = json.loads(row.payload)
        leg = raw.get("leg") or {}
        data = raw.get("data") or {}
        detail = ", ".join(f"{k}={v}" for k, v in data.items() if isinstance(v, str | int | float | bool) and v != "")
        suffix = " (inferred)" if raw.get("inferred") else ""
        table.add_row(
            str(row.seq),
            row.occurred_at.isoformat(),
            raw["type"] + suffix,
            f"{leg.get('dn', '')}/{leg.get('participant_id', '')}" if leg else "",
            detail,
        )
    Console().print(table)


def run_dlq_list(settings: Settings, status: str | None, limit: int) -> None:
    rows = _run(_with_store(settings, lambda s: s.list_dead_letters(status=status, limit=limit)))
    table = Table(title="dead letters")
    for col in ("id", "source", "subject", "first seen", "status", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r.id), r.source, r.subject, r.first_seen.isoformat(), r.status, r.reason[:80])
    Console().print(table)


def run_dlq_show(settings: Settings, letter_id: int) -> None:
    letter = _run(_with_store(settings, lambda s: s.get_dead_letter(letter_id)))
    if letter is None:
        fail(f"no dead letter {letter_id}; `masterlinc dlq list` shows the ids")
    typer.echo(f"id:       {letter.id}\nsource:   {letter.source}\nsubject:  {letter.subject}")
    typer.echo(f"status:   {letter.status}\nseen:     {letter.first_seen.isoformat()}\nreason:   {letter.reason}")
    typer.echo("payload:")
    typer.echo(letter.payload.decode(errors="replace"))


def run_dlq_retry(settings: Settings, letter_id: int) -> None:
    async def body(store: EventStore) -> str:
        letter = await store.get_dead_letter(letter_id)
        if letter is None:
            raise ReplayArgumentError(f"no dead letter {letter_id}; `masterlinc dlq list` shows the ids")
        nc = await connect(settings.effective_nats_url(), name="masterlinc-dlq", **settings.bus.security.options())
        try:
            js = nc.jetstream()
            await js.publish(letter.subject, letter.payload, headers={"Nats-Msg-Id": f"dlq-retry-{letter.id}"})
        finally:
            await nc.close()
        await store.mark_retried(letter_id)
        return letter.subject

    subject = _run(_with_store(settings, body))
    typer.echo(f"dead letter {letter_id} published again to {subject}")


def parse_age(value: str) -> timedelta:
    match = _DURATION.match(value.strip())
    if not match:
        raise typer.BadParameter(f"{value!r} is not an age; use forms like 90d, 12w, 720h", param_hint="--older-than")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def run_prune(settings: Settings, older_than: str) -> None:
    age = parse_age(older_than)
    deleted = _run(_with_store(settings, lambda s: s.prune(age)))
    typer.echo(f"pruned {deleted} event(s) that occurred more than {older_than} ago")


def run_erase(settings: Settings, number: str) -> None:
    async def body(store: EventStore) -> Any:
        try:
            return await store.erase_number(number)
        except ValueError as exc:
            raise ReplayArgumentError(str(exc)) from None

    report = _run(_with_store(settings, body))
    typer.echo(f"erased {report.events_deleted} event(s) and {report.dead_letters_deleted} dead letter(s) "
               f"about {report.number}")  # fmt: skip
    for event_type, count in report.by_type.items():
        typer.echo(f"  {event_type}: {count}")
    if report.calls:
        typer.echo(f"  calls: {', '.join(report.calls)}")
