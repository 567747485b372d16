"""The facade's only way to the PBX: the bus (D§7). Commands and queries go through ``hub.sdk.CommandClient``.

The backend starts without its bus and keeps trying (D§10): until NATS answers, every tool call is answered
``pbx_unavailable`` while the tool list stays available. Once connected it also feeds the call view and the
resource-updated notifications (see :mod:`hub.mcp.live`).
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import anyio
import nats.errors
import nats.js.errors
from anyio.abc import TaskGroup
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from hub.bus import BusError, connect
from hub.logs import get_logger
from hub.mcp.live import CallView, NatsSubscriptionBus, uris_for_subject
from hub.sdk import CommandClient
from schemas import subjects
from schemas.commands import CommandBase, CommandResult, QueryBase, QueryResult
from schemas.common import CommandError, ErrorCode

log = get_logger(__name__)

QUOTA_BUCKET = "ML_MCP_QUOTA"
FEED_QUEUE = "ml-mcp-updates"
FIRST_CONNECT_WAIT_S = 3.0
NOT_CONNECTED = "the hub's bus (NATS) is not reachable, so the PBX cannot be reached; retry shortly"


class Backend:
    """Owns the NATS connection (or borrows one), the call view and the update feed.

    ``async with Backend(...)``: with ``nc`` given the backend uses it (and does not close it); with ``nats_url`` it
    connects in the background, retrying every ``retry_s`` seconds.
    """

    def __init__(
        self,
        *,
        pbx_id: str,
        nats_url: str | None = None,
        nc: Client | None = None,
        updates: NatsSubscriptionBus | None = None,
        retry_s: float = 1.0,
        command_wait_s: float | None = None,
        nats_options: dict[str, Any] | None = None,
    ) -> None:
        if (nats_url is None) == (nc is None):
            raise ValueError("give nats_url or nc")
        self.pbx_id = pbx_id
        self.calls = CallView()
        self.updates = updates or NatsSubscriptionBus(pbx_id)
        self._url = nats_url
        self._nats_options = nats_options or {}
        self._given = nc
        self._nc: Client | None = None
        self._client: CommandClient | None = None
        self._quota: KeyValue | None = None
        self._subs: list[NatsSubscription] = []
        self._retry_s = retry_s
        self._command_wait_s = command_wait_s
        self._tg: TaskGroup | None = None
        self.connected = anyio.Event()
        self._first_attempt = anyio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Backend:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        if self._given is not None:
            await self._attach(self._given)
            self._first_attempt.set()
        else:
            self._tg.start_soon(self._connect_loop)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)
        with anyio.CancelScope(shield=True):
            await self.updates.detach()
            for sub in self._subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            if self._nc is not None and self._given is None:
                with contextlib.suppress(Exception):
                    await self._nc.close()
        self._nc = self._client = None

    async def _connect_loop(self) -> None:
        assert self._url is not None
        while True:
            try:
                nc = await connect(self._url, name="masterlinc-mcp", **self._nats_options)
            except BusError as exc:
                log.warning("bus not reachable; tools answer pbx_unavailable until it is", error=str(exc))
                self._first_attempt.set()
                await anyio.sleep(self._retry_s)
                continue
            await self._attach(nc)
            self._first_attempt.set()
            return

    async def _attach(self, nc: Client) -> None:
        self._subs.append(await nc.subscribe(subjects.pbx_filter(self.pbx_id), cb=self._on_state))
        self._subs.append(await nc.subscribe(subjects.pbx_filter(self.pbx_id), queue=FEED_QUEUE, cb=self._on_feed))
        await self.updates.attach(nc)
        await nc.flush()
        self._nc = nc
        self._client = CommandClient(nc)
        self.connected.set()
        log.info("mcp facade connected to the bus", pbx_id=self.pbx_id)

    @property
    def available(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def _settled(self) -> None:
        """A call arriving while the first connection attempt runs waits for it (bounded) instead of failing."""
        if not self._first_attempt.is_set():
            with anyio.move_on_after(FIRST_CONNECT_WAIT_S):
                await self._first_attempt.wait()

    # ------------------------------------------------------------------ feed

    async def _on_state(self, msg: Msg) -> None:
        if ".call." in msg.subject:
            self.calls.apply(msg.data)

    async def _on_feed(self, msg: Msg) -> None:
        from mcp.shared.subscriptions import ResourceUpdated

        for uri in uris_for_subject(msg.subject):
            await self.updates.publish(ResourceUpdated(uri=uri))

    # ------------------------------------------------------------------ commands and queries

    async def send(self, command: CommandBase) -> CommandResult:
        await self._settled()
        if self._client is None or not self.available:
            return _failed(command.command_id, ErrorCode.PBX_UNAVAILABLE, NOT_CONNECTED)
        try:
            return await self._client.send(command, wait=self._command_wait_s)
        except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            log.warning("command not delivered", command_type=command.NAME, error=str(exc) or type(exc).__name__)
            return _failed(
                command.command_id, ErrorCode.PBX_UNAVAILABLE, f"the command could not be queued on the bus: {exc}"
            )

    async def query(self, query: QueryBase, *, wait: float = 5.0) -> QueryResult:
        await self._settled()
        if self._client is None or not self.available:
            return QueryResult(
                query_id=query.query_id,
                ok=False,
                error=CommandError(code=ErrorCode.PBX_UNAVAILABLE, message=NOT_CONNECTED),
            )
        try:
            return await self._client.query(query, wait=wait)
        except (nats.errors.Error, OSError) as exc:
            return QueryResult(
                query_id=query.query_id,
                ok=False,
                error=CommandError(code=ErrorCode.PBX_UNAVAILABLE, message=f"the query could not be sent: {exc}"),
            )

    async def call_timeline(self, call_id: str, *, limit: int = 500) -> list[dict[str, Any]] | None:
        """Every event of one call, oldest first, read from the event stream (None when the bus is down)."""
        await self._settled()
        if self._nc is None or not self.available:
            return None
        js = self._nc.jetstream()
        psub = await js.pull_subscribe(
            subjects.call_filter(call_id, self.pbx_id),
            stream=subjects.EVENTS_STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0),
        )
        events: list[dict[str, Any]] = []
        try:
            info = await psub.consumer_info()
            remaining = min(int(info.num_pending or 0), limit)
            while remaining > 0:
                try:
                    msgs = await psub.fetch(min(remaining, 256), timeout=2.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    break
                for msg in msgs:
                    with contextlib.suppress(ValueError):
                        events.append(json.loads(msg.data))
                remaining -= len(msgs)
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
        return events

    async def take_dial(self, token_id: str, quota: int) -> tuple[bool, int]:
        """Count one call placed by ``token_id`` today (UTC), shared by every replica: (allowed, used so far)."""
        kv = await self._quota_bucket()
        key = f"{token_id}.{datetime.now(UTC):%Y%m%d}"
        for _ in range(20):
            try:
                entry = await kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                entry = None
            used = int(entry.value or b"0") if entry is not None else 0
            if used >= quota:
                return False, used
            try:
                if entry is None:
                    await kv.create(key, b"1")
                else:
                    await kv.update(key, str(used + 1).encode(), last=entry.revision)
                return True, used + 1
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
                continue  # another replica counted at the same time: read again
        return False, quota

    async def _quota_bucket(self) -> KeyValue:
        if self._quota is None:
            assert self._nc is not None
            js = self._nc.jetstream()
            try:
                self._quota = await js.key_value(QUOTA_BUCKET)
            except (nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
                self._quota = await js.create_key_value(
                    KeyValueConfig(
                        bucket=QUOTA_BUCKET,
                        description="MCP tokens' dial quotas: calls placed per token per UTC day",
                        ttl=2 * 86400,
                        storage=StorageType.FILE,
                    )
                )
        return self._quota


def _failed(command_id: str, code: ErrorCode, message: str) -> CommandResult:
    return CommandResult(command_id=command_id, ok=False, error=CommandError(code=code, message=message))
