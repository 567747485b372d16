"""Send commands and queries to the PBX worker and await their results (used by the MCP facade and agents).

A command goes onto the ML_COMMANDS work queue (JetStream: it survives a worker's death) with ``Nats-Msg-Id`` = its
command id (a re-send within the duplicate window is dropped by the server) and ``Ml-Reply-To`` = a private inbox the
worker answers on. A query is a plain NATS request/reply.

When the server drops a re-send as a duplicate (an agent handling a redelivered event sends the same derived command
id again), no worker will answer this inbox: the result is read from the worker's idempotency record instead, waiting
while the first send is still in flight, and comes back marked ``duplicate``.
"""

from __future__ import annotations

import asyncio
import json

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import KeyNotFoundError, NoStreamResponseError
from nats.js.kv import KeyValue

from hub.bus.kv import IDEMPOTENCY, open_bucket
from hub.worker.idempotency import entry_key
from schemas import subjects
from schemas.codec import dump, parse_command_result, parse_query_result
from schemas.commands import CommandBase, CommandResult, QueryBase, QueryResult
from schemas.common import CommandError, ErrorCode, utcnow

REPLY_HEADER = "Ml-Reply-To"


class CommandClient:
    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._results: KeyValue | None = None

    async def send(self, command: CommandBase, *, wait: float | None = None) -> CommandResult:
        """Queue ``command`` and wait for its result until its deadline (or ``wait`` seconds)."""
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox, max_msgs=1)
        try:
            try:
                ack = await self._js.publish(
                    subjects.command_subject(command),
                    dump(command),
                    headers={"Nats-Msg-Id": command.command_id, REPLY_HEADER: inbox},
                )
            except NoStreamResponseError:
                return CommandResult(
                    command_id=command.command_id,
                    ok=False,
                    error=CommandError(
                        code=ErrorCode.PBX_UNAVAILABLE,
                        message="the command stream does not exist yet: start a worker (masterlinc worker) or the hub",
                    ),
                )
            budget = wait if wait is not None else max(0.1, (command.deadline - utcnow()).total_seconds() + 1.0)
            if ack.duplicate:
                stored = await self._stored_result(command, budget)
                return stored or _unknown(command)
            try:
                msg = await sub.next_msg(timeout=budget)
            except (TimeoutError, NatsTimeoutError):
                return _unknown(command)
            return parse_command_result(msg.data)
        finally:
            await sub.unsubscribe()

    async def _stored_result(self, command: CommandBase, budget: float) -> CommandResult | None:
        """The result the worker stored for this command's (issuer, idempotency key), once it is done."""
        if self._results is None:
            self._results = await open_bucket(self._js, IDEMPOTENCY)
        key = entry_key(command.issued_by, command.effective_idempotency_key)
        loop = asyncio.get_running_loop()
        until = loop.time() + budget
        delay = 0.005
        while loop.time() < until:
            try:
                entry = await self._results.get(key)
            except KeyNotFoundError:
                entry = None
            if entry is not None and entry.value:
                record = json.loads(entry.value)
                if record.get("state") == "done" and record.get("result"):
                    result = CommandResult.model_validate(record["result"])
                    return result.model_copy(update={"duplicate": True})
            await asyncio.sleep(min(delay, max(0.0, until - loop.time())))
            delay = min(delay * 2, 0.2)
        return None

    async def query(self, query: QueryBase, *, wait: float = 5.0) -> QueryResult:
        try:
            msg = await self._nc.request(subjects.query_subject(query), dump(query), timeout=wait)
        except NoRespondersError:
            return QueryResult(
                query_id=query.query_id,
                ok=False,
                error=CommandError(code=ErrorCode.PBX_UNAVAILABLE, message="no PBX worker is running"),
            )
        except (TimeoutError, NatsTimeoutError):
            return QueryResult(
                query_id=query.query_id,
                ok=False,
                error=CommandError(code=ErrorCode.DEADLINE_EXCEEDED, message=f"no answer within {wait}s"),
            )
        return parse_query_result(msg.data)


def _unknown(command: CommandBase) -> CommandResult:
    return CommandResult(
        command_id=command.command_id,
        ok=False,
        error=CommandError(
            code=ErrorCode.OUTCOME_UNKNOWN,
            message="no result before the deadline; the command may still run. Send it again with the "
            "same idempotency key to learn its outcome",
        ),
    )
