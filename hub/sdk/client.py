"""Send commands and queries to the PBX worker and await their results (used by the MCP facade and agents).

A command goes onto the ML_COMMANDS work queue (JetStream: it survives a worker's death) with ``Nats-Msg-Id`` = its
command id (a re-send within the duplicate window is dropped by the server) and ``Ml-Reply-To`` = a private inbox the
worker answers on. A query is a plain NATS request/reply.
"""

from __future__ import annotations

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NoStreamResponseError

from schemas import subjects
from schemas.codec import dump, parse_command_result, parse_query_result
from schemas.commands import CommandBase, CommandResult, QueryBase, QueryResult
from schemas.common import CommandError, ErrorCode, utcnow

REPLY_HEADER = "Ml-Reply-To"


class CommandClient:
    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._js = nc.jetstream()

    async def send(self, command: CommandBase, *, wait: float | None = None) -> CommandResult:
        """Queue ``command`` and wait for its result until its deadline (or ``wait`` seconds)."""
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox, max_msgs=1)
        try:
            try:
                await self._js.publish(
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
            try:
                msg = await sub.next_msg(timeout=budget)
            except (TimeoutError, NatsTimeoutError):
                return CommandResult(
                    command_id=command.command_id,
                    ok=False,
                    error=CommandError(
                        code=ErrorCode.OUTCOME_UNKNOWN,
                        message="no result before the deadline; the command may still run. Send it again with the "
                        "same idempotency key to learn its outcome",
                    ),
                )
            return parse_command_result(msg.data)
        finally:
            await sub.unsubscribe()

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
