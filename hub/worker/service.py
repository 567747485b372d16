"""The PBX worker: executes commands from the ML_COMMANDS work queue safely (D§7, D§8) and answers queries.

For each command, in order:
1. parse it (a malformed command is answered ``invalid_argument`` and terminated);
2. publish ``command.accepted`` with the whole command (audit);
3. refuse it if its deadline has passed (``deadline_exceeded``);
4. claim its idempotency key (the in-flight marker): a repeat gets the stored result, another payload under the same
   key is an ``idempotency_conflict``, a command abandoned by a dead worker is reconciled, never run twice;
5. check the call lease (only the owner, or an issuer with the override scope, controls a leased call);
6. check the dial policy for calls placed;
7. take a slot of the PBX's shared rate limit before the deadline (``rate_limited``);
7b. check that the target leg still belongs to the command's call (D§5; participant ids are reused);
8. call the PBX through the gateway; store the result; publish ``command.succeeded`` / ``command.failed``; reply to
   the issuer's inbox (header ``Ml-Reply-To``); ack.
Several workers share the durable consumer; a command survives a worker's death (redelivered after ack_wait). When
the bus fails mid-command (a NATS restart), the message is left for redelivery and the worker goes on; a known
result is stored with retries first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, PubAck
from prometheus_client import Counter, Histogram

from hub.bus import EventPublisher, PublishError
from hub.bus.kv import IDEMPOTENCY, RATE, open_bucket
from hub.logs import bind, get_logger
from hub.worker.gateway import CommandFailure, PbxGateway
from hub.worker.idempotency import Claim, ClaimOutcome, IdempotencyStore
from hub.worker.policy import DialPolicy
from hub.worker.ratelimit import SharedRateLimiter
from schemas import events as ev
from schemas import subjects
from schemas.codec import DecodeError, dump, parse_command, parse_query
from schemas.commands import CommandBase, CommandResult, MakeCall, QueryResult
from schemas.common import CommandError, ErrorCode, utcnow
from schemas.identity import deterministic_event_id

log = get_logger(__name__)

REPLY_HEADER = "Ml-Reply-To"
COMMANDS = Counter("ml_worker_commands_total", "Commands handled, by type and outcome", ["type", "outcome"])
LATENCY = Histogram(
    "ml_worker_command_seconds", "Command handling time", ["type"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2, 10)
)

_SENT: ContextVar[list[asyncio.Future[PubAck]] | None] = ContextVar("worker_delivery_publishes", default=None)
"""The acks of the events one command delivery published. The worker handles a fetched batch at once on one
publisher; each delivery confirms its own events before it replies and acks (a shared flush told one command of
another's failure, and the other of none)."""
BUS_ERRORS = (nats.errors.Error, TimeoutError, ConnectionError, PublishError)  # PublishError: an event unacknowledged
"""What the bus raises while it is away (a NATS restart): a command is left for redelivery, the worker goes on."""
STORE_ATTEMPTS = 6  # storing a known result through a NATS restart (~1-3 s here): 0.25 s doubling, up to ~8 s

LeaseCheck = Callable[[CommandBase], Awaitable[bool]]
LegCheck = Callable[[CommandBase], Awaitable[None]]  # raises CommandFailure when the leg is not the call's any more


async def allow_all(command: CommandBase) -> bool:
    return True


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    name: str = "worker"
    durable: str = "ml-worker"
    batch: int = 32
    rate_per_second: int = 20
    ack_wait_s: float = 30.0
    max_deliver: int = 20
    takeover_grace_s: float = 5.0  # after a command's deadline, its in-flight marker may be taken over
    fault_pause_after_call_s: float = 0.0  # fault injection for the crash tests: pause between PBX call and ack


class Worker:
    def __init__(
        self,
        nc: Client,
        gateway: PbxGateway,
        *,
        config: WorkerConfig | None = None,
        policy: DialPolicy | None = None,
        lease_check: LeaseCheck = allow_all,
        leg_check: LegCheck | None = None,
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._gateway = gateway
        self._config = config or WorkerConfig()
        self._policy = policy or DialPolicy()
        self._lease_check = lease_check
        self._leg_check = leg_check
        self._publisher = EventPublisher(self._js)
        self._idem: IdempotencyStore | None = None
        self._limiters: dict[str, SharedRateLimiter] = {}
        self._rate_kv: Any = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self._idem = IdempotencyStore(await open_bucket(self._js, IDEMPOTENCY), grace_s=self._config.takeover_grace_s)
        self._rate_kv = await open_bucket(self._js, RATE)

    def _limiter(self, pbx_id: str) -> SharedRateLimiter:
        if pbx_id not in self._limiters:
            self._limiters[pbx_id] = SharedRateLimiter(self._rate_kv, pbx_id, self._config.rate_per_second)
        return self._limiters[pbx_id]

    async def run(self, stopping: asyncio.Event, pbx_id: str | None = None) -> None:
        """Consume commands (of one PBX, or all) and serve queries until ``stopping`` is set."""
        await self.start()
        psub = await self._js.pull_subscribe(
            subjects.commands_filter(pbx_id),
            durable=self._config.durable if pbx_id is None else f"{self._config.durable}-{pbx_id}",
            stream=subjects.COMMANDS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, ack_wait=self._config.ack_wait_s, max_deliver=self._config.max_deliver
            ),
        )
        qsub = await self._nc.subscribe(subjects.queries_filter(pbx_id), queue="ml-workers", cb=self._on_query)
        await self._nc.flush()
        self.ready.set()
        try:
            while not stopping.is_set():
                try:
                    msgs = await psub.fetch(self._config.batch, timeout=0.5)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue
                except BUS_ERRORS as exc:  # reconnecting: the next fetch tries again
                    log.warning("fetching commands failed", error=str(exc) or type(exc).__name__)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), 0.5)
                    continue
                await asyncio.gather(*(self.handle(msg) for msg in msgs))
        finally:
            await qsub.unsubscribe()

    # ------------------------------------------------------------------ commands

    async def handle(self, msg: Msg) -> None:
        started = time.perf_counter()
        _SENT.set([])  # this delivery's publishes (handle runs as its own task: the variable is its own)
        reply_to = (msg.headers or {}).get(REPLY_HEADER)
        try:
            command = parse_command(msg.data)
        except DecodeError as exc:
            await self._reply(
                reply_to,
                CommandResult(command_id="unknown", ok=False, error=_err(ErrorCode.INVALID_ARGUMENT, exc.reason)),
            )
            await msg.term()
            return
        bind(pbx_id=command.pbx_id, call_id=command.call_id,
             correlation_id=command.correlation_id or command.command_id)  # fmt: skip
        try:
            result = await self._execute(command, msg)
            if result is None:  # another worker holds it: let the message come back later
                await msg.nak(delay=1.0)
                return
            await self._reply(reply_to, result)
            await msg.ack()
        except BUS_ERRORS as exc:
            # the bus went away mid-command (a NATS restart): the message comes back, and the claim decides what
            # happens then (the stored result, or the in-flight marker: reconciled, never a second PBX call); this
            # took the whole worker down before, for the three minutes until something restarted it
            log.warning("the bus failed while handling a command; it is redelivered", command_type=command.NAME,
                        error=str(exc) or type(exc).__name__)  # fmt: skip
            COMMANDS.labels(command.NAME, "bus_failed").inc()
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)
            return
        outcome = "ok" if result.ok else (result.error.code if result.error else "failed")
        COMMANDS.labels(command.NAME, str(outcome)).inc()
        LATENCY.labels(command.NAME).observe(time.perf_counter() - started)

    async def _execute(self, command: CommandBase, msg: Msg) -> CommandResult | None:
        assert self._idem is not None, "start() first"
        await self._event(
            command, ev.CommandAccepted, ev.CommandAcceptedData(command=command.model_dump(mode="json", by_alias=True))
        )
        claim = await self._idem.claim(command, self._config.name)
        if claim.outcome is ClaimOutcome.DONE and claim.result is not None:
            # the outcome event again, with its id: a NATS restart may have lost it after the result was stored
            # (the stream's duplicate window and the log's unique event id keep one copy)
            await self._outcome_event(command, claim.result)
            return claim.result.model_copy(update={"duplicate": True})
        if claim.outcome is ClaimOutcome.CONFLICT:
            return await self._finish(
                command,
                None,
                CommandFailure(
                    ErrorCode.IDEMPOTENCY_CONFLICT,
                    "this idempotency key was already used with a different command; use a new key",
                ),
            )
        if claim.outcome is ClaimOutcome.IN_PROGRESS:
            with contextlib.suppress(Exception):
                await msg.in_progress()
            return None
        if claim.outcome is ClaimOutcome.ABANDONED:
            return await self._reconcile(command, claim)
        if utcnow() > command.deadline:  # checked after the claim: a late repeat still gets its stored result
            failure = CommandFailure(
                ErrorCode.DEADLINE_EXCEEDED, "the command's deadline passed before a worker took it"
            )
            return await self._finish(command, claim, failure)
        try:
            await self._preflight(command)
            data = await self._gateway.execute(command)
            if self._config.fault_pause_after_call_s:  # the crash test kills us inside this window
                print(f"called {command.command_id}", flush=True)
                await asyncio.sleep(self._config.fault_pause_after_call_s)
        except CommandFailure as failure:
            return await self._finish(command, claim, failure)
        except Exception as exc:  # a gateway bug must not crash the worker or leak a traceback to the issuer
            log.exception("gateway error", command_type=command.NAME)
            return await self._finish(
                command, claim, CommandFailure(ErrorCode.PBX_UNAVAILABLE, f"PBX call failed: {exc}")
            )
        return await self._finish(command, claim, None, data)

    async def _preflight(self, command: CommandBase) -> None:
        if command.call_id is not None and not await self._lease_check(command):
            raise CommandFailure(ErrorCode.FORBIDDEN, f"call {command.call_id} is owned by another agent")
        if isinstance(command, MakeCall):
            decision = self._policy.check(command.args.to, command.issued_by)
            if not decision.allowed:
                raise CommandFailure(ErrorCode.POLICY_DENIED, decision.reason)
        if not await self._limiter(command.pbx_id).acquire(command.deadline.timestamp()):
            raise CommandFailure(ErrorCode.RATE_LIMITED, "the PBX's command rate limit is reached; retry shortly")
        if self._leg_check is not None:
            await self._leg_check(command)

    async def _reconcile(self, command: CommandBase, claim: Claim) -> CommandResult:
        try:
            data = await self._gateway.reconcile(command)
        except Exception:  # reconciliation is best effort; unknown is the honest answer
            data = None
        if data is None:
            failure = CommandFailure(
                ErrorCode.OUTCOME_UNKNOWN,
                "a worker stopped while carrying out this command and the PBX state does not show whether it took "
                "effect; check the call before retrying with a new idempotency key",
            )
            return await self._finish(command, claim, failure)
        return await self._finish(command, claim, None, data)

    async def _finish(
        self,
        command: CommandBase,
        claim: Claim | None,
        failure: CommandFailure | None,
        data: dict[str, Any] | None = None,
    ) -> CommandResult:
        if failure is None:
            result = CommandResult(command_id=command.command_id, ok=True, result=data or {})
        else:
            result = CommandResult(command_id=command.command_id, ok=False, error=failure.as_error())
        await self._outcome_event(command, result)
        if claim is not None:
            await self._store(claim, result)
        return result

    async def _outcome_event(self, command: CommandBase, result: CommandResult) -> None:
        """``command.succeeded`` or ``command.failed`` for ``result`` (its id is the command's: publishing it again
        makes no second event)."""
        if result.ok or result.error is None:
            succeeded = ev.CommandSucceededData(command_id=command.command_id, command_type=command.NAME,
                                                result=result.result or {})  # fmt: skip
            await self._event(command, ev.CommandSucceeded, succeeded)
            return
        error = result.error
        failed = ev.CommandFailedData(command_id=command.command_id, command_type=command.NAME, code=error.code.value,
                                      message=error.message, pbx_reason=error.pbx_reason)  # fmt: skip
        await self._event(command, ev.CommandFailed, failed)

    async def _store(self, claim: Claim, result: CommandResult) -> None:
        """Store a known outcome, retrying while the bus reconnects: lost, a redelivery could only answer
        ``outcome_unknown`` once the claim expires."""
        assert self._idem is not None, "start() first"
        delay = 0.25
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                await self._idem.complete(claim, result)
                return
            except BUS_ERRORS:
                if attempt == STORE_ATTEMPTS:
                    raise
                log.warning("storing a command's result failed; retrying", attempt=attempt)
                await asyncio.sleep(delay)
                delay *= 2

    async def _event(self, command: CommandBase, cls: type[ev.EventBase], data: Any) -> None:
        event = cls.model_validate(
            {
                "event_id": deterministic_event_id("command", command.command_id, cls.NAME),
                "pbx_id": command.pbx_id,
                "call_id": command.call_id,
                "leg": command.leg,
                "occurred_at": utcnow(),
                "correlation_id": command.correlation_id or command.command_id,
                "issued_by": command.issued_by,
                "data": data,
            }
        )
        future = await self._publisher.publish(event)
        sent = _SENT.get()
        if sent is not None:
            sent.append(future)

    async def _reply(self, reply_to: str | None, result: CommandResult) -> None:
        """Once this delivery's events are acknowledged: an issuer told "done" finds them in the log."""
        sent = _SENT.get()
        if sent:
            await self._publisher.confirm(sent)
            sent.clear()
        if reply_to:
            await self._nc.publish(reply_to, dump(result))

    # ------------------------------------------------------------------ queries

    async def _on_query(self, msg: Msg) -> None:
        try:
            query = parse_query(msg.data)
        except DecodeError as exc:
            await msg.respond(
                dump(QueryResult(query_id="unknown", ok=False, error=_err(ErrorCode.INVALID_ARGUMENT, exc.reason)))
            )
            return
        try:
            items, total = await self._gateway.query(query)
            result = QueryResult(query_id=query.query_id, ok=True, items=items, total=total)
        except CommandFailure as failure:
            result = QueryResult(query_id=query.query_id, ok=False, error=failure.as_error())
        except Exception as exc:
            log.exception("query failed", query_type=query.NAME)
            result = QueryResult(query_id=query.query_id, ok=False, error=_err(ErrorCode.PBX_UNAVAILABLE, str(exc)))
        await msg.respond(dump(result))


def _err(code: ErrorCode, message: str) -> CommandError:
    return CommandError(code=code, message=message)
